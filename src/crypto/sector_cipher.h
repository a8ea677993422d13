// Sector encryption as LUKS (and qcow2's encryption) applies it: a block
// cipher in a chaining mode, restarted at every 512-byte sector with an IV
// the IV generator derives from the sector number. The cipher primitives are
// OpenSSL's (libcrypto EVP); only the XTS tweak chaining for key sizes
// OpenSSL has no XTS cipher for (aes-192) and CTR for block ciphers OpenSSL
// has no CTR mode for (cast5) are composed here from its ECB primitive.
//
// Concurrency: a SectorCipher is immutable after make(); encrypt/decrypt
// take their own OpenSSL contexts per call, so any number of threads may
// use one object at once (the engine's workers do).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "util/result.h"

namespace qimg::crypto {

inline constexpr uint32_t kCipherSectorSize = 512;

// The key length in bytes of a QAPI cipher algorithm ("aes-256": 32), or 0.
uint32_t cipher_key_len(std::string_view cipher_alg);
// Its block length (16 for AES, 8 for CAST5), or 0.
uint32_t cipher_block_len(std::string_view cipher_alg);
// The digest length of a QAPI hash name ("sha256": 32), or 0.
uint32_t hash_digest_len_of(std::string_view hash_alg);

// hash(data) with a QAPI hash name.
Result<std::string> hash_bytes(std::string_view hash_alg, std::string_view data);

struct SectorCipherSpec {
    std::string cipher_alg;        // "aes-256"
    std::string mode;              // ecb, cbc, xts, ctr
    std::string ivgen_alg;         // plain, plain64, essiv
    std::string ivgen_cipher_alg;  // ESSIV's cipher (else ignored)
    std::optional<std::string> ivgen_hash_alg;  // ESSIV's hash
};

class SectorCipher {
public:
    // `key` is the whole key (both halves for XTS: 2 * cipher_key_len).
    // Unsupported algorithms get "Cipher algorithm '<alg>' is not supported
    // by qimg (no OpenSSL implementation)"; a wrong key size an error too.
    static Result<std::shared_ptr<const SectorCipher>> make(const SectorCipherSpec &spec, std::string_view key);
    ~SectorCipher();

    // `len` bytes at `data`, in place, the first byte being the start of
    // sector `sector`; each 512-byte sector is its own chain with its own
    // IV. `len` must be a multiple of the cipher's block size; a last
    // partial sector is processed with its IV as a shorter chain.
    Result<void> encrypt(uint64_t sector, uint8_t *data, size_t len) const;
    Result<void> decrypt(uint64_t sector, uint8_t *data, size_t len) const;

    struct Impl;

private:
    explicit SectorCipher(std::unique_ptr<Impl> impl);
    Result<void> run(uint64_t sector, uint8_t *data, size_t len, bool enc) const;
    std::unique_ptr<Impl> impl_;
};

}  // namespace qimg::crypto
