// Secret objects: loading, validation and lookup by id (see secret.h).
// Control flow follows crypto/secret_common.c and qom/object_interfaces.c so
// that the first error reported is the one QEMU reports.
#include "crypto/secret.h"
#include "crypto/cipher.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

namespace qimg {

namespace {

// util/base64.c qbase64_decode() validation, then GLib's lenient decoder
// (g_base64_decode: characters outside the alphabet are skipped, '=' marks
// padding, an incomplete final group is dropped).
Result<std::string> base64_decode(std::string_view in, bool check_nul) {
    if (check_nul && in.find('\0') != std::string_view::npos) {
        return make_error(EINVAL, "Base64 data contains embedded NUL characters");
    }
    static constexpr std::string_view kValid =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n";
    if (in.find_first_not_of(kValid) != std::string_view::npos) {
        return make_error(EINVAL, "Base64 data contains invalid characters");
    }
    auto rank = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        if (c == '=') return 0;
        return -1;
    };
    std::string out;
    uint32_t v = 0;
    int n = 0;
    char last[2] = {0, 0};
    for (char c : in) {
        const int r = rank(c);
        if (r < 0) continue;
        last[1] = last[0];
        last[0] = c;
        v = (v << 6) | static_cast<uint32_t>(r);
        if (++n == 4) {
            out.push_back(static_cast<char>(v >> 16));
            if (last[1] != '=') out.push_back(static_cast<char>(v >> 8));
            if (last[0] != '=') out.push_back(static_cast<char>(v));
            n = 0;
            v = 0;
        }
    }
    return out;
}

// g_file_get_contents() and its messages (as GLib words them).
Result<std::string> read_whole_file(const std::string &path) {
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) {
        const int err = errno;
        return make_error(err, fmt::format("Failed to open file \u201c{}\u201d: {}", path, std::strerror(err)));
    }
    std::string data;
    char buf[65536];
    for (;;) {
        const size_t n = std::fread(buf, 1, sizeof buf, f);
        data.append(buf, n);
        if (n < sizeof buf) {
            if (std::ferror(f)) {
                const int err = errno;
                std::fclose(f);
                return make_error(err, fmt::format("Error reading file \u201c{}\u201d: {}", path, std::strerror(err)));
            }
            break;
        }
    }
    std::fclose(f);
    return data;
}

// g_utf8_validate() over a length: well-formed UTF-8 (no overlong forms, no
// surrogates, nothing above U+10FFFF) and no NUL byte.
bool valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == 0) return false;
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) n = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) n = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) n = 3, cp = c & 0x07, min = 0x10000;
        else return false;
        if (s.size() - i <= n) return false;
        for (size_t k = 1; k <= n; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += n + 1;
    }
    return true;
}

const std::string *prop(const ObjectSpec &spec, const char *name) {
    auto it = spec.props.find(name);
    return it == spec.props.end() ? nullptr : &it->second;
}

// qcrypto_secret_load_data() of the "secret" type: data= or file=.
Result<std::string> load_input(const ObjectSpec &spec) {
    const std::string *data = prop(spec, "data");
    const std::string *file = prop(spec, "file");
    if (file && data) return make_error(EINVAL, "'file' and 'data' are mutually exclusive");
    if (data) return *data;
    if (!file) return make_error(EINVAL, "Either 'file' or 'data' must be provided");
    auto contents = read_whole_file(*file);
    if (!contents) return Err(contents.error().prepended(fmt::format("Unable to read {}: ", *file)));
    return contents;
}

}  // namespace

Result<std::string> SecretStore::load(const ObjectSpec &spec) const {
    QIMG_ASSIGN(std::string input, load_input(spec));
    const bool base64 = prop(spec, "format") && *prop(spec, "format") == "base64";
    // File contents may hold NUL bytes; data= cannot (QEMU passes the length
    // of either, and only a NUL inside it is an error).
    const bool check_nul = prop(spec, "file") != nullptr;
    const std::string *keyid = prop(spec, "keyid");
    if (!keyid) {
        if (base64) return base64_decode(input, check_nul);
        return input;
    }
    // qcrypto_secret_decrypt(): an AES-256-CBC key of 32 bytes and a
    // base64 IV of 16.
    QIMG_ASSIGN(std::string key, lookup(*keyid));
    if (key.size() != 32) return make_error(EINVAL, "Key should be 32 bytes in length");
    const std::string *iv_text = prop(spec, "iv");
    if (!iv_text) return make_error(EINVAL, "IV is required to decrypt secret");
    QIMG_ASSIGN(std::string iv, base64_decode(*iv_text, false));
    if (iv.size() != 16) return make_error(EINVAL, fmt::format("IV should be 16 bytes in length not {}", iv.size()));
    auto ciphertext = base64 ? base64_decode(input, check_nul) : Result<std::string>(std::move(input));
    if (!ciphertext) return Err(ciphertext.error());
    if (ciphertext->size() % 16 != 0)
        return make_error(EINVAL, fmt::format("Length {} must be a multiple of block size 16", ciphertext->size()));
    QIMG_ASSIGN(std::string plain, aes256_cbc_decrypt(key, iv, *ciphertext));
    // The last byte says how much padding to drop; like QEMU, nothing else
    // of the padding is checked (an empty input has no last byte: 0).
    const unsigned pad = plain.empty() ? 0 : static_cast<unsigned char>(plain.back());
    if (plain.empty() || pad > 16 || pad > plain.size())
        return make_error(EINVAL, fmt::format("Incorrect number of padding bytes ({}) found on decrypted data", pad));
    plain.resize(plain.size() - pad);
    return plain;
}

Result<void> SecretStore::add(const ObjectSpec &spec) {
    if (objects_.count(spec.id))
        return make_error(EEXIST,
                          fmt::format("attempt to add duplicate property '{}' to object (type 'container')", spec.id));
    // secret_keyring is a secret type too, but it reads the kernel keyring,
    // which qimg does not: its id stays reserved as a non-secret.
    const bool is_secret = spec.qom_type == "secret";
    auto [it, inserted] = objects_.emplace(spec.id, Entry{is_secret, std::nullopt});
    if (!is_secret) return ok();
    auto data = load(spec);
    if (!data) {
        objects_.erase(it);
        return Err(data.error());
    }
    it->second.data = std::move(*data);
    return ok();
}

Result<std::string> SecretStore::lookup(std::string_view id) const {
    auto it = objects_.find(id);
    if (it == objects_.end()) return make_error(ENOENT, fmt::format("No secret with id '{}'", id));
    if (!it->second.is_secret) return make_error(EINVAL, fmt::format("Object with id '{}' is not a secret", id));
    if (!it->second.data) return make_error(EINVAL, fmt::format("Secret with id '{}' has no data", id));
    return *it->second.data;
}

Result<std::string> SecretStore::lookup_utf8(std::string_view id) const {
    QIMG_ASSIGN(std::string data, lookup(id));
    if (!valid_utf8(data)) return make_error(EINVAL, fmt::format("Data from secret {} is not valid UTF-8", id));
    return data;
}

SecretStore &SecretStore::global() {
    static SecretStore store;
    return store;
}

Result<std::string> secret_value(const ObjectSpec &spec) { return SecretStore{}.load(spec); }

}  // namespace qimg
