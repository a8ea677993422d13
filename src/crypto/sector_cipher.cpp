// See sector_cipher.h.
#include "crypto/sector_cipher.h"

#include <openssl/evp.h>
#include <openssl/provider.h>

#include <array>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace qimg::crypto {
namespace {

struct CipherAlg {
    const char *name;     // QAPI name
    const char *openssl;  // EVP name stem ("AES-128"), nullptr: no OpenSSL implementation
    uint32_t key_len;
    uint32_t block_len;
    bool legacy;  // in OpenSSL 3's legacy provider
};
constexpr CipherAlg kAlgs[] = {
    {"aes-128", "AES-128", 16, 16, false},   {"aes-192", "AES-192", 24, 16, false},
    {"aes-256", "AES-256", 32, 16, false},   {"cast5-128", "CAST5", 16, 8, true},
    {"serpent-128", nullptr, 16, 16, false}, {"serpent-192", nullptr, 24, 16, false},
    {"serpent-256", nullptr, 32, 16, false}, {"twofish-128", nullptr, 16, 16, false},
    {"twofish-192", nullptr, 24, 16, false}, {"twofish-256", nullptr, 32, 16, false},
};

const CipherAlg *find_alg(std::string_view name) {
    for (const CipherAlg &a : kAlgs)
        if (name == a.name) return &a;
    return nullptr;
}

struct HashName {
    const char *qapi, *openssl;
    uint32_t len;
};
constexpr HashName kHashNames[] = {{"md5", "MD5", 16},       {"sha1", "SHA1", 20},     {"sha224", "SHA224", 28},
                                   {"sha256", "SHA256", 32}, {"sha384", "SHA384", 48}, {"sha512", "SHA512", 64},
                                   {"ripemd160", "RIPEMD160", 20}};

// CAST5 lives in OpenSSL 3's legacy provider: loaded into a library context
// of its own (with the default provider beside it) so that the process-wide
// default context is left as it is.
OSSL_LIB_CTX *legacy_ctx() {
    static OSSL_LIB_CTX *ctx = [] {
        OSSL_LIB_CTX *c = OSSL_LIB_CTX_new();
        if (c && (!OSSL_PROVIDER_load(c, "default") || !OSSL_PROVIDER_load(c, "legacy"))) {
            OSSL_LIB_CTX_free(c);
            return static_cast<OSSL_LIB_CTX *>(nullptr);
        }
        return c;
    }();
    return ctx;
}

using CipherPtr = std::unique_ptr<EVP_CIPHER, decltype(&EVP_CIPHER_free)>;
using CtxPtr = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

Result<CipherPtr> fetch(const CipherAlg &a, const char *mode) {
    std::string name = std::string(a.openssl) + "-" + mode;
    EVP_CIPHER *c = EVP_CIPHER_fetch(a.legacy ? legacy_ctx() : nullptr, name.c_str(), nullptr);
    if (!c) return make_error(ENOTSUP, fmt::format("Cipher {} is not available in this OpenSSL", name));
    return CipherPtr(c, EVP_CIPHER_free);
}

Result<CtxPtr> new_ctx(const EVP_CIPHER *c, const uint8_t *key, bool enc) {
    CtxPtr ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
    if (!ctx) return make_error(ENOMEM, "Cannot allocate a cipher context");
    if (EVP_CipherInit_ex(ctx.get(), c, nullptr, key, nullptr, enc ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1)
        return make_error(EINVAL, "Cannot set up the cipher");
    return ctx;
}

Result<void> update(EVP_CIPHER_CTX *ctx, uint8_t *data, size_t len) {
    while (len) {
        const int n = int(std::min<size_t>(len, 1u << 30));
        int out = 0;
        if (EVP_CipherUpdate(ctx, data, &out, data, n) != 1 || out != n)
            return make_error(EIO, "Cipher operation failed");
        data += n;
        len -= size_t(n);
    }
    return ok();
}

// Multiplication by x in GF(2^128) of an XTS tweak (IEEE 1619 byte order).
void xts_next_tweak(uint8_t *t) {
    const uint8_t carry = t[15] >> 7;
    for (int i = 15; i > 0; i--) t[i] = uint8_t((t[i] << 1) | (t[i - 1] >> 7));
    t[0] = uint8_t((t[0] << 1) ^ (carry ? 0x87 : 0));
}

// How the chain of one sector is computed.
enum class Engine { Native, Ecb, ComposedXts, ComposedCtr };

}  // namespace

struct SectorCipher::Impl {
    const CipherAlg *alg = nullptr;
    Engine engine = Engine::Native;
    CipherPtr cipher{nullptr, EVP_CIPHER_free};  // native mode, or ECB for composed ones
    std::vector<uint8_t> key;                    // for the native/ECB cipher
    std::vector<uint8_t> key2;                   // composed XTS: the tweak key
    uint32_t niv = 0;
    enum class IvGen { Plain, Plain64, Essiv } ivgen = IvGen::Plain64;
    CipherPtr essiv_cipher{nullptr, EVP_CIPHER_free};  // ECB
    std::vector<uint8_t> essiv_key;
    uint32_t essiv_block = 0;

    ~Impl() {
        OPENSSL_cleanse(key.data(), key.size());
        OPENSSL_cleanse(key2.data(), key2.size());
        OPENSSL_cleanse(essiv_key.data(), essiv_key.size());
    }
};

uint32_t cipher_key_len(std::string_view cipher_alg) {
    const CipherAlg *a = find_alg(cipher_alg);
    return a ? a->key_len : 0;
}

uint32_t cipher_block_len(std::string_view cipher_alg) {
    const CipherAlg *a = find_alg(cipher_alg);
    return a ? a->block_len : 0;
}

uint32_t hash_digest_len_of(std::string_view hash_alg) {
    for (const HashName &h : kHashNames)
        if (hash_alg == h.qapi) return h.len;
    return 0;
}

const char *openssl_hash_name(std::string_view hash_alg) {
    for (const HashName &h : kHashNames)
        if (hash_alg == h.qapi) return h.openssl;
    return nullptr;
}

Result<std::string> hash_bytes(std::string_view hash_alg, std::string_view data) {
    const char *name = openssl_hash_name(hash_alg);
    if (!name) return make_error(EINVAL, fmt::format("Hash algorithm '{}' not supported", hash_alg));
    std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> md(EVP_MD_fetch(nullptr, name, nullptr), EVP_MD_free);
    if (!md) return make_error(ENOTSUP, fmt::format("Hash {} is not available in this OpenSSL", name));
    std::string out(size_t(EVP_MD_get_size(md.get())), '\0');
    unsigned int n = 0;
    if (EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char *>(out.data()), &n, md.get(),
                   nullptr) != 1)
        return make_error(EIO, "Hash operation failed");
    out.resize(n);
    return out;
}

SectorCipher::SectorCipher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SectorCipher::~SectorCipher() = default;

Result<std::shared_ptr<const SectorCipher>> SectorCipher::make(const SectorCipherSpec &spec, std::string_view key) {
    auto impl = std::make_unique<Impl>();
    const CipherAlg *a = find_alg(spec.cipher_alg);
    if (!a) return make_error(EINVAL, fmt::format("Unknown cipher algorithm '{}'", spec.cipher_alg));
    if (!a->openssl)
        return make_error(ENOTSUP, fmt::format("Cipher algorithm '{}' is not supported by qimg "
                                               "(no OpenSSL implementation)", spec.cipher_alg));
    impl->alg = a;
    const auto *k = reinterpret_cast<const uint8_t *>(key.data());
    const bool xts = spec.mode == "xts";
    if (key.size() != (xts ? 2 * a->key_len : a->key_len))
        return make_error(EINVAL, fmt::format("Cipher key length {} is wrong for {} in mode {}", key.size(),
                                              spec.cipher_alg, spec.mode));
    if (spec.mode == "ecb") {
        impl->engine = Engine::Ecb;
        QIMG_ASSIGN(impl->cipher, fetch(*a, "ECB"));
        impl->niv = 0;
    } else if (spec.mode == "cbc") {
        QIMG_ASSIGN(impl->cipher, fetch(*a, "CBC"));
        impl->niv = a->block_len;
    } else if (spec.mode == "xts") {
        if (a->block_len != 16) return make_error(EINVAL, "Unsupported cipher mode xts");
        impl->niv = 16;
        // OpenSSL has XTS for AES-128 and AES-256 only, and refuses a key
        // whose halves are equal (which IEEE 1619 allows; only a crafted
        // volume has one): those run the composed XTS.
        const bool same_halves = std::memcmp(k, k + a->key_len, a->key_len) == 0;
        if (a->key_len == 24 || same_halves) {
            impl->engine = Engine::ComposedXts;
            QIMG_ASSIGN(impl->cipher, fetch(*a, "ECB"));
        } else {
            QIMG_ASSIGN(impl->cipher, fetch(*a, "XTS"));
        }
    } else if (spec.mode == "ctr") {
        impl->niv = a->block_len;
        if (a->block_len != 16) {  // OpenSSL has no CAST5-CTR
            impl->engine = Engine::ComposedCtr;
            QIMG_ASSIGN(impl->cipher, fetch(*a, "ECB"));
        } else {
            QIMG_ASSIGN(impl->cipher, fetch(*a, "CTR"));
        }
    } else {
        return make_error(EINVAL, fmt::format("Cipher mode '{}' not supported", spec.mode));
    }
    if (impl->engine == Engine::ComposedXts) {
        impl->key.assign(k, k + a->key_len);
        impl->key2.assign(k + a->key_len, k + 2 * a->key_len);
    } else {
        impl->key.assign(k, k + key.size());
    }

    if (spec.ivgen_alg == "plain") {
        impl->ivgen = Impl::IvGen::Plain;
    } else if (spec.ivgen_alg == "plain64") {
        impl->ivgen = Impl::IvGen::Plain64;
    } else if (spec.ivgen_alg == "essiv") {
        impl->ivgen = Impl::IvGen::Essiv;
        const CipherAlg *e = find_alg(spec.ivgen_cipher_alg);
        if (!e || !spec.ivgen_hash_alg) return make_error(EINVAL, "ESSIV needs a cipher and a hash");
        if (!e->openssl)
            return make_error(ENOTSUP, fmt::format("Cipher algorithm '{}' is not supported by qimg "
                                                   "(no OpenSSL implementation)", spec.ivgen_cipher_alg));
        // The IV key is hash(whole key), cut to the IV cipher's key size.
        QIMG_ASSIGN(std::string salt, hash_bytes(*spec.ivgen_hash_alg, key));
        if (salt.size() < e->key_len)
            return make_error(EINVAL, fmt::format("ESSIV hash {} is too short for {}", *spec.ivgen_hash_alg,
                                                  spec.ivgen_cipher_alg));
        impl->essiv_key.assign(salt.begin(), salt.begin() + e->key_len);
        OPENSSL_cleanse(salt.data(), salt.size());
        QIMG_ASSIGN(impl->essiv_cipher, fetch(*e, "ECB"));
        impl->essiv_block = e->block_len;
    } else {
        return make_error(EINVAL, fmt::format("IV generator '{}' not supported", spec.ivgen_alg));
    }
    return std::shared_ptr<const SectorCipher>(new SectorCipher(std::move(impl)));
}

Result<void> SectorCipher::encrypt(uint64_t sector, uint8_t *data, size_t len) const {
    return run(sector, data, len, true);
}

Result<void> SectorCipher::decrypt(uint64_t sector, uint8_t *data, size_t len) const {
    return run(sector, data, len, false);
}

Result<void> SectorCipher::run(uint64_t sector, uint8_t *data, size_t len, bool enc) const {
    const Impl &m = *impl_;
    const uint32_t block = m.alg->block_len;
    if (len % block != 0) return make_error(EINVAL, "Cipher data is not a multiple of the block size");
    if (m.engine == Engine::Ecb) {
        QIMG_ASSIGN(CtxPtr ctx, new_ctx(m.cipher.get(), m.key.data(), enc));
        return update(ctx.get(), data, len);
    }
    // Composed modes run the block cipher forwards for CTR whatever the
    // direction, and for XTS with the tweak key always forwards.
    const bool fwd = m.engine == Engine::ComposedCtr ? true : enc;
    QIMG_ASSIGN(CtxPtr ctx, new_ctx(m.cipher.get(), m.key.data(), fwd));
    CtxPtr tweak_ctx(nullptr, EVP_CIPHER_CTX_free);
    if (m.engine == Engine::ComposedXts) {
        QIMG_ASSIGN(tweak_ctx, new_ctx(m.cipher.get(), m.key2.data(), true));
    }
    CtxPtr essiv_ctx(nullptr, EVP_CIPHER_CTX_free);
    if (m.ivgen == Impl::IvGen::Essiv) {
        QIMG_ASSIGN(essiv_ctx, new_ctx(m.essiv_cipher.get(), m.essiv_key.data(), true));
    }

    std::array<uint8_t, 16> iv{};
    std::array<uint8_t, 16> buf{};
    for (size_t done = 0; done < len; done += kCipherSectorSize, sector++) {
        const size_t n = std::min<size_t>(kCipherSectorSize, len - done);
        uint8_t *p = data + done;
        iv.fill(0);
        switch (m.ivgen) {
        case Impl::IvGen::Plain:
            for (int i = 0; i < 4; i++) iv[size_t(i)] = uint8_t(sector >> (8 * i));
            break;
        case Impl::IvGen::Plain64:
            for (int i = 0; i < 8; i++) iv[size_t(i)] = uint8_t(sector >> (8 * i));
            break;
        case Impl::IvGen::Essiv: {
            std::array<uint8_t, 16> in{};
            for (int i = 0; i < 8; i++) in[size_t(i)] = uint8_t(sector >> (8 * i));
            QIMG_TRY(update(essiv_ctx.get(), in.data(), m.essiv_block));
            std::memcpy(iv.data(), in.data(), std::min(m.essiv_block, m.niv));
            break;
        }
        }
        if (m.engine == Engine::Native) {
            if (EVP_CipherInit_ex(ctx.get(), nullptr, nullptr, nullptr, iv.data(), enc ? 1 : 0) != 1)
                return make_error(EIO, "Cipher operation failed");
            QIMG_TRY(update(ctx.get(), p, n));
        } else if (m.engine == Engine::ComposedXts) {
            QIMG_TRY(update(tweak_ctx.get(), iv.data(), 16));  // T = E_K2(IV)
            for (size_t off = 0; off < n; off += 16) {
                for (size_t i = 0; i < 16; i++) p[off + i] ^= iv[i];
                QIMG_TRY(update(ctx.get(), p + off, 16));
                for (size_t i = 0; i < 16; i++) p[off + i] ^= iv[i];
                xts_next_tweak(iv.data());
            }
        } else {  // ComposedCtr: keystream E_K(counter), counter big-endian
            for (size_t off = 0; off < n; off += block) {
                std::memcpy(buf.data(), iv.data(), block);
                QIMG_TRY(update(ctx.get(), buf.data(), block));
                for (size_t i = 0; i < block; i++) p[off + i] ^= buf[i];
                for (size_t i = block; i-- > 0;)
                    if (++iv[i] != 0) break;
            }
        }
    }
    return ok();
}

}  // namespace qimg::crypto
