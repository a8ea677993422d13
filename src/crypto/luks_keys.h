// LUKS1 key management over an already parsed header (luks_header.h): the
// PBKDF2 key derivation and its calibration, the anti-forensic splitter,
// unlocking a key slot with a passphrase, storing the master key into a
// slot, and formatting a new volume. All through OpenSSL (PKCS5_PBKDF2_HMAC,
// RAND_bytes, EVP digests) and SectorCipher. No container format knowledge:
// key material is read through a callback.
//
// Iteration counts read from a header are bounded (kLuksMaxIterations): a
// hostile header could otherwise make every unlock attempt run for hours
// (2^32-1 PBKDF2 rounds per slot, 8 slots). The cap is far above what any
// creator writes for its default time (QEMU and cryptsetup aim at about one
// or two seconds: a few million rounds on current CPUs) and allows an
// iter-time of minutes; a slot over it is refused with a clear error
// instead of tried.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/luks_header.h"
#include "crypto/sector_cipher.h"
#include "util/result.h"

namespace qimg::crypto {

inline constexpr uint32_t kLuksMaxIterations = 1u << 28;
inline constexpr uint32_t kLuksMinSlotIterations = 1000;       // as QEMU and cryptsetup
inline constexpr uint32_t kLuksMinMasterKeyIterations = 1000;  // as QEMU
inline constexpr uint32_t kLuksDigestLen = 20;
inline constexpr uint64_t kLuksDefaultIterTimeMs = 2000;

// PBKDF2-HMAC-<hash> of `pass` with `salt`, `out_len` bytes.
Result<std::string> pbkdf2(std::string_view hash_alg, std::string_view pass, std::span<const uint8_t> salt,
                           uint32_t iterations, size_t out_len);

// Calibration (issue 16 item 5): PBKDF2 rounds per second for `out_len`
// bytes of output, measured with the monotonic clock over runs that double
// until one takes at least `window_ms` (never a division by a zero time).
Result<uint64_t> pbkdf2_iters_per_second(std::string_view hash_alg, size_t out_len, uint64_t window_ms = 100);
// The count for `iter_time_ms` at `per_second` rounds per second, divided by
// `divisor` (LUKS: 8 for the master key digest); errors as QEMU ("PBKDF
// iterations N too large to scale", "PBKDF iterations N larger than M").
Result<uint32_t> scale_iterations(uint64_t per_second, uint64_t iter_time_ms, uint64_t divisor, uint32_t minimum);

// The anti-forensic splitter: `key` spread over `stripes` blocks of its
// size (random blocks, each folded into the next by the hash's diffuse
// function), and its inverse.
Result<std::string> af_split(std::string_view hash_alg, std::string_view key, uint32_t stripes);
Result<std::string> af_merge(std::string_view hash_alg, std::string_view material, size_t key_len, uint32_t stripes);

// The sector cipher of the payload (and of key material) keyed by `key`.
SectorCipherSpec luks_cipher_spec(const LuksHeader &h);

// Reads `len` bytes of the volume at byte `offset`.
using LuksReadFn = std::function<Result<void>(uint64_t offset, void *buf, size_t len)>;

// qcrypto_block_luks_find_key(): tries each active slot in order; the
// master key of the first that opens, or "Invalid password, cannot unlock
// any keyslot".
Result<std::string> luks_unlock(const LuksHeader &h, std::string_view passphrase, const LuksReadFn &read);

// The options of a new volume (QCryptoBlockCreateOptionsLUKS), QAPI names.
struct LuksCreateParams {
    std::string cipher_alg = "aes-256";
    std::string cipher_mode = "xts";
    std::string ivgen_alg = "plain64";
    std::optional<std::string> ivgen_hash_alg;  // default sha256 with essiv
    std::string hash_alg = "sha256";
    uint64_t iter_time_ms = kLuksDefaultIterTimeMs;
};

// The create options (QCryptoBlockCreateOptionsLUKS) from `-o` values, each
// named `prefix` + its QAPI name ("encrypt." in qcow2), checked as qemu-img
// parses them: "Parameter 'cipher-alg' does not accept value 'x'" (QAPI
// enum names without the prefix), "Parameter '<prefix>iter-time' expects a
// number", "Algorithm 'des' not supported".
Result<LuksCreateParams> luks_create_params(const std::map<std::string, std::string> &o, std::string_view prefix);

struct LuksVolume {
    LuksHeader header;                // parsed-form, slot 0 active
    std::vector<uint8_t> header_bytes;  // kLuksHeaderSize
    std::string master_key;
    std::vector<uint8_t> slot0_material;  // to write at slot 0's key offset
};

// qcrypto_block_luks_create(): a new header in QEMU's layout (key material
// areas from 4 KiB, payload after the 8th), a random master key and
// salts, the iteration counts calibrated for iter_time, slot 0 holding the
// master key under `passphrase`. Validation messages as QEMU.
Result<LuksVolume> luks_format(const LuksCreateParams &p, std::string_view passphrase);

// qcrypto_block_luks_store_key(): fills slot `slot` of `h` (salt,
// iterations, active) and returns its encrypted split key material.
Result<std::vector<uint8_t>> luks_store_key(LuksHeader &h, size_t slot, std::string_view passphrase,
                                            std::string_view master_key, uint64_t iter_time_ms,
                                            uint64_t per_second_one_block);

// Writes `len` bytes of the volume at byte `offset`; flushes the volume.
using LuksWriteFn = std::function<Result<void>(uint64_t offset, const void *buf, size_t len)>;
using LuksFlushFn = std::function<Result<void>()>;
// A secret's passphrase by its id (SecretStore::lookup_utf8), called only
// when QEMU would look the secret up, so a missing secret fails in the
// same place.
using LuksSecretFn = std::function<Result<std::string>(std::string_view id)>;

// QCryptoBlockAmendOptionsLUKS: the keyslot changes `qemu-img amend` asks for.
struct LuksAmendParams {
    bool activate = true;               // state=active (add) or inactive (erase)
    std::optional<int32_t> keyslot;     // as QEMU's int: a Number option truncated
    std::optional<std::string> old_secret;  // secret ids
    std::optional<std::string> new_secret;
    std::optional<uint64_t> iter_time_ms;
    bool force = false;
};

// QCryptoBlockAmendOptionsLUKS from `-o` options (state, keyslot,
// old-secret, new-secret, iter-time) named with `prefix` ("" for a luks
// file, "encrypt." inside qcow2), with QEMU's messages, which name the
// members without the prefix.
Result<LuksAmendParams> luks_amend_params(const std::map<std::string, std::string> &o, std::string_view prefix,
                                          bool force);

// The volume a keyslot change works on: its header (updated in place on
// success and as each write lands), its unlocked master key and its I/O.
// Offsets are relative to the LUKS header (0 for a luks file; inside the
// crypto header cluster for qcow2).
struct LuksVolumeIo {
    LuksHeader &header;
    std::string_view master_key;
    LuksReadFn read;
    LuksWriteFn write;
    LuksFlushFn flush;
    LuksSecretFn secret;
};

// qcrypto_block_luks_amend_options(): adds a keyslot holding the master key
// under new-secret, or erases the slots named by keyslot and/or old-secret,
// with QEMU's checks and messages. Crash-safe ordering, so that a kill at
// any write leaves every passphrase that is meant to survive working:
//   add:   key material, flush, then the header that activates the slot;
//   erase: random data over the key material, flush, then the header that
//          clears the slot, flush (one slot at a time). A kill in between
//          leaves the slot marked active over garbage, which no passphrase
//          opens: the erased passphrase is already gone, the others are
//          untouched.
Result<void> luks_amend_keyslots(LuksVolumeIo &vol, const LuksAmendParams &p);

}  // namespace qimg::crypto
