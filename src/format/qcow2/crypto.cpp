// qcow2 encryption at open and create time, and the data cipher (see crypto.h).
#include "format/qcow2/crypto.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "crypto/qcow_aes.h"
#include "crypto/secret.h"
#include "format/qcow2/qcow2.h"
#include "util/keyval.h"

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

// qcow2_crypto_hdr_read_func(): `len` bytes at `off` inside the extension.
Result<void> read_extension(const CryptoHeaderExtension &ext, BlockNode &file, uint64_t off, void *buf,
                            size_t len) {
    if (off > ext.length || len > ext.length - off)
        return make_error(EINVAL, "Request for data outside of extension header");
    auto r = read_padded(file, ext.offset + off, buf, len);
    if (!r) return Err(r.error().prepended("Could not read encryption header: "));
    return ok();
}

Result<crypto::LuksHeader> read_luks_header(const CryptoHeaderExtension &ext, BlockNode &file) {
    std::vector<uint8_t> buf(crypto::kLuksHeaderSize);
    QIMG_TRY(read_extension(ext, file, 0, buf.data(), buf.size()));
    return crypto::parse_luks_header(buf);
}

Result<void> check_sectors(uint64_t host, uint64_t guest, size_t len) {
    if ((host | guest | len) % crypto::kCipherSectorSize)
        return make_error(EIO, "qcow2: encrypted I/O must cover whole 512-byte sectors");
    return ok();
}

}  // namespace

Result<void> Encryption::encrypt(uint64_t host, uint64_t guest, uint8_t *buf, size_t len) const {
    QIMG_TRY(check_sectors(host, guest, len));
    if (!cipher) return make_error(EPERM, "Cannot write an image opened without its key");
    return cipher->encrypt(iv_sector(host, guest), buf, len);
}

Result<void> Encryption::decrypt(uint64_t host, uint64_t guest, uint8_t *buf, size_t len) const {
    QIMG_TRY(check_sectors(host, guest, len));
    if (!cipher) return make_error(EPERM, "Cannot read an image opened without its key");
    return cipher->decrypt(iv_sector(host, guest), buf, len);
}

Result<Encryption> open_encryption(const Header &h, BlockNode &file, OptionMap &options, bool no_io,
                                   const SecretStore &secrets) {
    QIMG_ASSIGN(std::optional<std::string> key_secret, take_options(h, options));
    Encryption e;
    e.method = h.crypt_method;
    e.secrets = &secrets;
    if (h.crypt_method == kCryptNone) return e;
    if (h.crypt_method == kCryptAes) {
        // qcrypto_block_qcow_open(): the key is the passphrase, not checked.
        if (no_io) return e;
        QIMG_ASSIGN(std::string pass, passphrase(key_secret, secrets));
        QIMG_ASSIGN(e.cipher, crypto::qcow_aes_cipher(pass));
        return e;
    }
    if (!h.crypto_header) {
        if (no_io) return e;
        return make_error(EINVAL, "Missing CRYPTO header for crypt method 2");
    }
    // qcrypto_block_luks_open(): the passphrase first, then the header.
    std::string pass;
    if (!no_io) {
        QIMG_ASSIGN(pass, passphrase(key_secret, secrets));
    }
    QIMG_ASSIGN(e.luks, read_luks_header(*h.crypto_header, file));
    if (no_io) return e;
    const CryptoHeaderExtension ext = *h.crypto_header;
    auto reader = [&](uint64_t off, void *buf, size_t len) { return read_extension(ext, file, off, buf, len); };
    QIMG_ASSIGN(std::string master_key, crypto::luks_unlock(*e.luks, pass, reader));
    auto c = crypto::SectorCipher::make(crypto::luks_cipher_spec(*e.luks), master_key);
    if (!c) {
        std::fill(master_key.begin(), master_key.end(), '\0');
        return Err(c.error());
    }
    e.cipher = *c;
    e.master_key = std::move(master_key);
    return e;
}

// qcow2_crypto_hdr_write_func(): `len` bytes at `off` inside the extension.
static Result<void> write_extension(const CryptoHeaderExtension &ext, BlockNode &file, uint64_t off, const void *buf,
                                    size_t len) {
    if (off > ext.length || len > ext.length - off)
        return make_error(EINVAL, "Request for data outside of extension header");
    auto r = file.write(ext.offset + off, buf, len);
    if (!r) return Err(r.error().prepended("Could not write encryption header: "));
    return ok();
}

Result<void> amend_encryption(Encryption &e, const CryptoHeaderExtension &ext, BlockNode &file,
                              const std::map<std::string, std::string> &o, bool force) {
    QIMG_ASSIGN(crypto::LuksAmendParams p, crypto::luks_amend_params(o, "encrypt.", force));
    if (!e.luks || e.master_key.empty() || !e.secrets) return make_error(EPERM, "Parameter 'encrypt.key-secret' is required for cipher");
    crypto::LuksVolumeIo vol{
        *e.luks,
        e.master_key,
        [&](uint64_t off, void *buf, size_t len) { return read_extension(ext, file, off, buf, len); },
        [&](uint64_t off, const void *buf, size_t len) { return write_extension(ext, file, off, buf, len); },
        [&] { return file.flush(); },
        [&](std::string_view id) { return e.secrets->lookup_utf8(id); },
    };
    return crypto::luks_amend_keyslots(vol, p);
}

Result<EncryptionCreate> encryption_create_options(const std::map<std::string, std::string> &o,
                                                   const SecretStore &secrets) {
    EncryptionCreate c;
    auto get = [&](const char *k) -> std::optional<std::string> {
        auto it = o.find(k);
        return it == o.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
    const auto legacy = get("encryption"), format = get("encrypt.format");
    if (legacy && format)
        return make_error(EINVAL, "'encrypt.format' and its alias 'encryption' can't be used at the same time");
    if (legacy) {
        QIMG_ASSIGN(bool on, parse_bool_opt("encryption", *legacy));
        if (on) c.method = kCryptAes;
    }
    if (format) {
        if (*format == "aes") c.method = kCryptAes;
        else if (*format == "luks") c.method = kCryptLuks;
        else return make_error(EINVAL, "Parameter 'format' does not accept value '" + *format + "'");
    }
    if (c.method == kCryptNone) {
        // qcow2_co_create_opts passes encrypt.* on only with a format.
        for (const auto &[k, v] : o)
            if (k.rfind("encrypt.", 0) == 0 && k != "encrypt.format")
                return make_error(EINVAL, "Parameter 'encrypt' is unexpected");
        return c;
    }
    if (c.method == kCryptAes) {
        // QCryptoBlockOptionsQCow: only key-secret.
        for (const auto &[k, v] : o)
            if (k.rfind("encrypt.", 0) == 0 && k != "encrypt.format" && k != "encrypt.key-secret")
                return make_error(EINVAL, "Parameter '" + k + "' is unexpected");
    } else {
        QIMG_ASSIGN(c.luks, crypto::luks_create_params(o, "encrypt."));
    }
    const auto key_secret = get("encrypt.key-secret");
    if (!key_secret) return make_error(EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    QIMG_ASSIGN(c.passphrase, secrets.lookup_utf8(*key_secret));
    return c;
}

Result<std::vector<uint8_t>> luks_header_area(const EncryptionCreate &c) {
    QIMG_ASSIGN(crypto::LuksVolume v, crypto::luks_format(c.luks, c.passphrase));
    std::fill(v.master_key.begin(), v.master_key.end(), '\0');
    std::vector<uint8_t> area(v.header.payload_offset(), 0);
    std::memcpy(area.data(), v.header_bytes.data(), v.header_bytes.size());
    const uint64_t slot0 = uint64_t{v.header.key_slots[0].key_offset_sector} * crypto::kLuksSectorSize;
    if (slot0 > area.size() || v.slot0_material.size() > area.size() - slot0)
        return make_error(EINVAL, "LUKS key material lies outside of its header area");
    std::memcpy(area.data() + slot0, v.slot0_material.data(), v.slot0_material.size());
    return area;
}

nlohmann::ordered_json encryption_info_json(const Encryption &e) {
    if (e.method == kCryptAes) return {{"format", "aes"}};
    if (!e.luks) return nullptr;
    nlohmann::ordered_json j = crypto::luks_info_json(*e.luks);
    j["format"] = "luks";
    return j;
}

// qcow2_set_up_encryption(): the LUKS header area in clusters of its own,
// zero-filled as qcow2_crypto_hdr_init_func does and written (refcounts
// first) before the header that names it; then the header's crypt method.
Result<void> Qcow2Node::set_up_encryption(const EncryptionCreate &c) {
    std::lock_guard g(mu_);
    if (c.method == kCryptLuks) {
        QIMG_ASSIGN(std::vector<uint8_t> area, luks_header_area(c));
        const uint64_t clusters = (area.size() + cluster_size_ - 1) / cluster_size_;
        QIMG_ASSIGN(uint64_t off, refcounts_->alloc_clusters(clusters));
        std::vector<uint8_t> padded(clusters * cluster_size_, 0);
        std::copy(area.begin(), area.end(), padded.begin());
        std::fill(area.begin(), area.end(), 0);
        QIMG_TRY(refcounts_->write_back());
        QIMG_TRY(file_->flush());
        QIMG_TRY(file_->write(off, padded.data(), padded.size()));
        QIMG_TRY(file_->flush());
        header_.crypto_header = CryptoHeaderExtension{off, area.size()};
    }
    header_.crypt_method = c.method;
    auto r = write_header_locked();
    if (!r) return Err(r.error().prepended("Could not write encryption header: "));
    return ok();
}

}  // namespace qimg::qcow2
