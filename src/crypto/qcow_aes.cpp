// The legacy qcow AES cipher (see qcow_aes.h).
#include "crypto/qcow_aes.h"

#include <algorithm>
#include <string>

namespace qimg::crypto {

std::string qcow_aes_key(std::string_view passphrase) {
    // QEMU takes strlen() of the secret: bytes after a NUL do not count.
    passphrase = passphrase.substr(0, std::min(passphrase.find('\0'), passphrase.size()));
    std::string key(kQcowAesKeyLen, '\0');
    std::copy_n(passphrase.begin(), std::min(passphrase.size(), kQcowAesKeyLen), key.begin());
    return key;
}

Result<std::shared_ptr<const SectorCipher>> qcow_aes_cipher(std::string_view passphrase) {
    SectorCipherSpec spec;
    spec.cipher_alg = "aes-128";
    spec.mode = "cbc";
    spec.ivgen_alg = "plain64";
    std::string key = qcow_aes_key(passphrase);
    auto c = SectorCipher::make(spec, key);
    std::fill(key.begin(), key.end(), '\0');
    return c;
}

}  // namespace qimg::crypto
