// Block ciphers, through OpenSSL's EVP interface (libcrypto): the one place
// qimg reaches it, so that formats and secrets share it.
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace qimg {

// AES-256-CBC decryption without padding removal: `key` 32 bytes, `iv` 16,
// `data` a multiple of 16 bytes (checked by the caller in its own words).
Result<std::string> aes256_cbc_decrypt(std::string_view key, std::string_view iv, std::string_view data);

}  // namespace qimg
