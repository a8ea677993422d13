// See digest.h.
#include "crypto/digest.h"

#include <openssl/evp.h>

namespace qimg::crypto {

Result<std::array<uint8_t, 16>> md5(std::span<const uint8_t> data) {
    std::array<uint8_t, 16> out{};
    unsigned len = 0;
    if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_md5(), nullptr) != 1 || len != out.size())
        return make_error(ENOMEM, "Cannot compute an MD5 digest");
    return out;
}

}  // namespace qimg::crypto
