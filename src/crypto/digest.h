// Message digests through OpenSSL's EVP interface (libcrypto), for the
// checksums formats carry (parallels' Format Extension: MD5). No format
// knowledge here.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "util/result.h"

namespace qimg::crypto {

// The MD5 digest of `data`.
Result<std::array<uint8_t, 16>> md5(std::span<const uint8_t> data);

}  // namespace qimg::crypto
