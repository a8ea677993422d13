// The LUKS1 partition header (cryptsetup's LUKS1 on-disk format: "phdr" and
// its 8 key slots) as QEMU's crypto/block-luks.c reads it: parsing, every
// field validated with QEMU's messages, the algorithm names resolved, and
// the QCryptoBlockInfoLUKS record `qemu-img info` shows. Shared by the
// formats that carry such a header (qcow2's encrypt.format=luks, and the
// standalone luks format); no container format knowledge here. Key
// derivation and the cipher itself are not part of this layer yet.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace qimg::crypto {

// LUKS1: "partition header" layout (all big-endian).
inline constexpr size_t kLuksHeaderSize = 592;  // phdr (208 bytes) + 8 key slots of 48
inline constexpr size_t kLuksMagicLen = 6;
inline constexpr uint16_t kLuksVersion = 1;
inline constexpr uint32_t kLuksSectorSize = 512;
inline constexpr uint32_t kLuksNumKeySlots = 8;
inline constexpr uint32_t kLuksStripes = 4000;
inline constexpr uint32_t kLuksKeySlotEnabled = 0x00AC71F3;
inline constexpr uint32_t kLuksKeySlotDisabled = 0x0000DEAD;
// Where key material may start: QEMU (and cryptsetup) keep the first 4 KiB
// for the header; key material areas are rounded to this size.
inline constexpr uint32_t kLuksKeySlotOffset = 4096;

struct LuksKeySlot {
    uint32_t active = 0;  // kLuksKeySlotEnabled or kLuksKeySlotDisabled
    uint32_t iterations = 0;
    std::array<uint8_t, 32> salt{};
    uint32_t key_offset_sector = 0;
    uint32_t stripes = 0;

    bool enabled() const { return active == kLuksKeySlotEnabled; }
};

struct LuksHeader {
    // On-disk fields.
    uint16_t version = 0;
    std::string cipher_name;  // "aes"
    std::string cipher_mode;  // "xts-plain64", "cbc-essiv:sha256"
    std::string hash_spec;    // "sha256"
    uint32_t payload_offset_sector = 0;
    uint32_t master_key_len = 0;  // bytes (both XTS halves)
    std::array<uint8_t, 20> mk_digest{};
    std::array<uint8_t, 32> mk_digest_salt{};
    uint32_t mk_digest_iterations = 0;
    std::string uuid;  // up to 40 bytes, as stored up to its NUL
    std::array<LuksKeySlot, kLuksNumKeySlots> key_slots;

    // The algorithms, by their QAPI names (QCryptoCipherAlgorithm,
    // QCryptoCipherMode, QCryptoIVGenAlgorithm, QCryptoHashAlgorithm).
    std::string cipher_alg;                     // "aes-256"
    std::string mode;                           // "xts"
    std::string ivgen_alg;                      // "plain64"
    std::optional<std::string> ivgen_hash_alg;  // given after ':' in cipher_mode
    std::string ivgen_cipher_alg;               // ESSIV's cipher; else cipher_alg
    std::string hash_alg;                       // PBKDF2 and AF hash

    uint64_t payload_offset() const { return uint64_t{payload_offset_sector} * kLuksSectorSize; }
    // The sectors one key slot's split key material takes (cryptsetup's
    // layout: master_key_len * stripes bytes, rounded up to sectors and then
    // to the 4 KiB header alignment).
    uint64_t key_material_sectors(uint32_t stripes) const;
};

// qcrypto_block_luks_has_format(): the magic and version 1.
bool is_luks_header(std::span<const uint8_t> bytes);

// Parses and validates the first kLuksHeaderSize bytes of `bytes` (fewer is
// "LUKS header truncated"). Checks in QEMU's order and words
// (qcrypto_block_luks_check_header, _parse_header): "Volume is not in LUKS
// format", "LUKS version N is not supported", NUL-terminated names, the
// payload after the header, a non-zero master key iteration count, every key
// slot's stripes (4000), state, iteration count and key material inside
// [4 KiB, payload) without overlapping another slot, then the cipher
// mode string, cipher name and key size, hash and IV generator names.
Result<LuksHeader> parse_luks_header(std::span<const uint8_t> bytes);

// The inverse of parse_luks_header(): the kLuksHeaderSize bytes of `h`'s
// on-disk fields (the resolved algorithm names are not used).
std::vector<uint8_t> serialize_luks_header(const LuksHeader &h);

// QCryptoBlockInfoLUKS as `qemu-img info` prints it (QAPI member names; the
// printers put them in QEMU's order).
nlohmann::ordered_json luks_info_json(const LuksHeader &h);

}  // namespace qimg::crypto
