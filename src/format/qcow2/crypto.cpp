// qcow2 encryption at open time (see crypto.h).
#include "format/qcow2/crypto.h"

#include <vector>

#include "crypto/secret.h"

namespace qimg::qcow2 {
namespace {

constexpr const char *kKeySecret = "key-secret";

// qcow2_update_options_prepare(): the encrypt.format option must name the
// header's method; the remaining members must be the method's
// (QCryptoBlockOpenOptions: only key-secret).
Result<std::optional<std::string>> take_options(const Header &h, OptionMap &options) {
    OptionMap enc;
    for (auto it = options.begin(); it != options.end();) {
        if (it->first.rfind("encrypt.", 0) == 0) {
            enc[it->first.substr(8)] = it->second;
            it = options.erase(it);
        } else {
            ++it;
        }
    }
    std::optional<std::string> format;
    if (auto f = enc.find("format"); f != enc.end()) {
        format = f->second;
        enc.erase(f);
    }
    if (h.crypt_method == kCryptNone) {
        if (format)
            return make_error(EINVAL, "No encryption in image header, but options specified format '" + *format + "'");
        return std::optional<std::string>();
    }
    const char *method = h.crypt_method == kCryptAes ? "aes" : "luks";
    if (format && *format != method)
        return make_error(EINVAL, std::string("Header reported '") + method +
                                      "' encryption format but options specify '" + *format + "'");
    std::optional<std::string> key_secret;
    for (const auto &[k, v] : enc) {
        if (k == kKeySecret) {
            key_secret = v;
            continue;
        }
        // A dotted member ("foo.bar") is reported by its first component.
        return make_error(EINVAL, "Parameter '" + k.substr(0, k.find('.')) + "' is unexpected");
    }
    return key_secret;
}

// qcrypto_block_*_open() without QCRYPTO_BLOCK_OPEN_NO_IO: the passphrase.
Result<std::string> passphrase(const std::optional<std::string> &key_secret, const SecretStore &secrets) {
    if (!key_secret) return make_error(EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    return secrets.lookup_utf8(*key_secret);
}

Error no_decryption(const char *what) {
    return make_error(ENOTSUP, std::string("qcow2: ") + what +
                                   "-encrypted images can only be opened by 'qemu-img info' (qimg cannot "
                                   "decrypt them yet)");
}

// qcow2_crypto_hdr_read_func() reads of the LUKS header.
Result<crypto::LuksHeader> read_luks_header(const CryptoHeaderExtension &ext, BlockNode &file) {
    if (ext.length < crypto::kLuksHeaderSize)
        return make_error(EINVAL, "Request for data outside of extension header");
    std::vector<uint8_t> buf(crypto::kLuksHeaderSize);
    auto r = read_padded(file, ext.offset, buf.data(), buf.size());
    if (!r) return Err(r.error().prepended("Could not read encryption header: "));
    return crypto::parse_luks_header(buf);
}

}  // namespace

Result<Encryption> open_encryption(const Header &h, BlockNode &file, OptionMap &options, bool no_io,
                                   const SecretStore &secrets) {
    QIMG_ASSIGN(std::optional<std::string> key_secret, take_options(h, options));
    Encryption e;
    e.method = h.crypt_method;
    if (h.crypt_method == kCryptNone) return e;
    if (h.crypt_method == kCryptAes) {
        // qcrypto_block_qcow_open(): the key is derived from the passphrase
        // without any check, so only its lookup can fail.
        if (no_io) return e;
        QIMG_TRY(passphrase(key_secret, secrets));
        return no_decryption("AES");
    }
    if (!h.crypto_header) {
        if (no_io) return e;
        return make_error(EINVAL, "Missing CRYPTO header for crypt method 2");
    }
    // qcrypto_block_luks_open(): the passphrase first, then the header.
    if (!no_io) QIMG_TRY(passphrase(key_secret, secrets));
    QIMG_ASSIGN(e.luks, read_luks_header(*h.crypto_header, file));
    if (!no_io) return no_decryption("LUKS");
    return e;
}

nlohmann::ordered_json encryption_info_json(const Encryption &e) {
    if (e.method == kCryptAes) return {{"format", "aes"}};
    if (!e.luks) return nullptr;
    nlohmann::ordered_json j = crypto::luks_info_json(*e.luks);
    j["format"] = "luks";
    return j;
}

}  // namespace qimg::qcow2
