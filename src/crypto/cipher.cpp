// See cipher.h.
#include "crypto/cipher.h"

#include <openssl/evp.h>

#include <memory>

namespace qimg {

Result<std::string> aes256_cbc_decrypt(std::string_view key, std::string_view iv, std::string_view data) {
    if (key.size() != 32 || iv.size() != 16 || data.size() % 16 != 0)
        return make_error(EINVAL, "AES-256-CBC needs a 32-byte key, a 16-byte IV and whole blocks");
    std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
    if (!ctx) return make_error(ENOMEM, "Cannot allocate a cipher context");
    const auto *k = reinterpret_cast<const unsigned char *>(key.data());
    const auto *v = reinterpret_cast<const unsigned char *>(iv.data());
    if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, k, v) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1)
        return make_error(EINVAL, "Cannot set up AES-256-CBC");
    std::string out(data.size(), '\0');
    int len = 0, tail = 0;
    auto *o = reinterpret_cast<unsigned char *>(out.data());
    if (EVP_DecryptUpdate(ctx.get(), o, &len, reinterpret_cast<const unsigned char *>(data.data()),
                          int(data.size())) != 1 ||
        EVP_DecryptFinal_ex(ctx.get(), o + len, &tail) != 1)
        return make_error(EINVAL, "AES-256-CBC decryption failed");
    out.resize(size_t(len + tail));
    return out;
}

}  // namespace qimg
