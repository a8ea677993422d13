// RBD names and options (rbd_name.h): QEMU 7.2's qemu_rbd_parse_filename
// and what its QAPI visitor makes of BlockdevOptionsRbd, in its order and
// words.
#include "protocol/rbd/rbd_name.h"

#include <algorithm>
#include <charconv>
#include <set>

#include "util/qjson.h"
#include "util/option_map.h"

namespace qimg::rbd {
namespace {

// qemu_rbd_strchr: the first `delim` in `s` not escaped by '\'.
size_t find_unescaped(std::string_view s, char delim) {
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == delim) return i;
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
    }
    return std::string_view::npos;
}

// qemu_rbd_next_tok: the text before the first unescaped `delim`; `rest`
// becomes what follows it, or nullopt when there is none.
std::string_view next_token(std::string_view src, char delim, std::optional<std::string_view> &rest) {
    size_t at = find_unescaped(src, delim);
    if (at == std::string_view::npos) {
        rest.reset();
        return src;
    }
    rest = src.substr(at + 1);
    return src.substr(0, at);
}

Error missing(const std::string &name) { return make_error(EINVAL, "Parameter '" + name + "' is missing"); }

// A list option flattened as "<name>.N...": the element indices, checked
// as qdict_crumple does ("List indices are not contiguous, saw N elements
// but M largest index"). nullopt when the option is not given as a list.
Result<std::optional<size_t>> list_length(const OptionMap &opts, const std::string &name) {
    const std::string prefix = name + ".";
    std::set<size_t> indices;
    bool any = false;
    for (auto it = opts.lower_bound(prefix); it != opts.end() && it->first.starts_with(prefix); ++it) {
        any = true;
        std::string_view rest = std::string_view(it->first).substr(prefix.size());
        rest = rest.substr(0, rest.find('.'));
        size_t idx = 0;
        auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), idx);
        if (ec != std::errc() || p != rest.data() + rest.size())
            return make_error(EINVAL, "Invalid parameter type for '" + name + "', expected: array");
        indices.insert(idx);
    }
    if (!any) return std::optional<size_t>();
    size_t largest = *indices.rbegin();
    if (largest + 1 != indices.size())
        return make_error(EINVAL, "List indices are not contiguous, saw " + std::to_string(indices.size()) +
                                      " elements but " + std::to_string(largest) + " largest index");
    return std::optional<size_t>(indices.size());
}

// QAPI's visit_check_struct: the first member left over, in QDict order
// (of the crumpled dictionary: "a.b" counts as "a").
Result<void> check_no_leftover(const OptionMap &opts, const std::string &prefix) {
    if (opts.empty()) return ok();
    nlohmann::ordered_json keys = nlohmann::ordered_json::object();
    for (const auto &[k, v] : opts) keys[k.substr(0, k.find('.'))] = 0;
    return make_error(EINVAL, "Parameter '" + prefix + qdict_order(keys).front() + "' is unexpected");
}

Result<void> take_servers(OptionMap &opts, Location &loc) {
    if (auto it = opts.find("server"); it != opts.end()) {
        // json: "server": [] flattens to "[]"; anything else is not a list.
        if (it->second != "[]") return make_error(EINVAL, "Invalid parameter type for 'server', expected: array");
        opts.erase(it);
        return ok();
    }
    QIMG_ASSIGN(std::optional<size_t> n, list_length(opts, "server"));
    for (size_t i = 0; n && i < *n; ++i) {
        const std::string p = "server." + std::to_string(i);
        OptionMap elem = extract_prefix(opts, p);
        if (auto it = opts.find(p); it != opts.end())
            return make_error(EINVAL, "Invalid parameter type for '" + p + "', expected: object");
        Server s;
        auto host = take_option(elem, "host");
        if (!host) return Err(missing(p + ".host"));
        auto port = take_option(elem, "port");
        if (!port) return Err(missing(p + ".port"));
        QIMG_TRY(check_no_leftover(elem, p + "."));
        loc.server.push_back({*host, *port});
    }
    return ok();
}

Result<void> take_auth(OptionMap &opts, Location &loc) {
    const std::string name = "auth-client-required";
    if (auto it = opts.find(name); it != opts.end()) {
        if (it->second != "[]") return make_error(EINVAL, "Invalid parameter type for '" + name + "', expected: array");
        opts.erase(it);
        loc.auth_client_required.emplace();
        return ok();
    }
    QIMG_ASSIGN(std::optional<size_t> n, list_length(opts, name));
    if (!n) return ok();
    loc.auth_client_required.emplace();
    for (size_t i = 0; i < *n; ++i) {
        const std::string key = name + "." + std::to_string(i);
        auto v = take_option(opts, key);
        if (!v) return make_error(EINVAL, "Invalid parameter type for '" + key + "', expected: string");
        // The list's elements have no name in QEMU's message.
        if (*v != "cephx" && *v != "none")
            return make_error(EINVAL, "Parameter 'null' does not accept value '" + *v + "'");
        loc.auth_client_required->push_back(*v);
    }
    return ok();
}

// QEMU 7.2's QCryptoCipherAlgorithm, in its order.
constexpr const char *kCipherAlgs[] = {"aes-128",     "aes-192",     "aes-256",     "des",
                                       "3des",        "cast5-128",   "serpent-128", "serpent-192",
                                       "serpent-256", "twofish-128", "twofish-192", "twofish-256"};

// RbdEncryptionOptions: a union on "format" (luks, luks2) whose branches
// need a key-secret.
Result<void> take_encrypt(OptionMap &opts, Location &loc) {
    if (auto it = opts.find("encrypt"); it != opts.end())
        return make_error(EINVAL, "Invalid parameter type for 'encrypt', expected: object");
    OptionMap e = extract_prefix(opts, "encrypt");
    if (e.empty()) return ok();
    auto format = take_option(e, "format");
    if (!format) return Err(missing("encrypt.format"));
    if (*format != "luks" && *format != "luks2")
        return make_error(EINVAL, "Parameter 'format' does not accept value '" + *format + "'");
    auto secret = take_option(e, "key-secret");
    if (!secret) return Err(missing("encrypt.key-secret"));
    QIMG_TRY(check_no_leftover(e, "encrypt."));
    loc.encrypt_format = *format;
    loc.encrypt_key_secret = *secret;
    return ok();
}

}  // namespace

std::string unescape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        out += s[i];
    }
    return out;
}

Result<void> parse_filename(std::string_view filename, OptionMap &opts, KeyPairs &keypairs) {
    if (!filename.starts_with("rbd:")) return make_error(EINVAL, "File name must start with 'rbd:'");
    std::optional<std::string_view> p;
    std::string_view pool = next_token(filename.substr(4), '/', p);
    if (!p) return make_error(EINVAL, "Pool name is required");
    opts["pool"] = unescape(pool);

    // As QEMU: an '@' anywhere in the rest (the options too) ends the image name.
    std::string_view image_name;
    if (find_unescaped(*p, '@') != std::string_view::npos) {
        image_name = next_token(*p, '@', p);
        opts["snapshot"] = unescape(next_token(*p, ':', p));
    } else {
        image_name = next_token(*p, ':', p);
    }
    if (find_unescaped(image_name, '/') != std::string_view::npos) {
        std::optional<std::string_view> rest;
        opts["namespace"] = unescape(next_token(image_name, '/', rest));
        image_name = *rest;
    } else {
        opts["namespace"] = "";
    }
    opts["image"] = unescape(image_name);

    while (p) {
        std::string_view name = next_token(*p, '=', p);
        if (!p) return make_error(EINVAL, "conf option " + std::string(name) + " has no value");
        std::string key = unescape(name);
        std::string value = unescape(next_token(*p, ':', p));
        if (key == "conf") {
            opts["conf"] = value;
        } else if (key == "id") {
            opts["user"] = value;
        } else {
            keypairs.emplace_back(std::move(key), std::move(value));
        }
    }
    return ok();
}

Result<Location> take_location(OptionMap &opts) {
    Location loc;
    loc.password_secret = take_option(opts, "password-secret");
    // qdict_crumple's checks come before any member is visited.
    QIMG_TRY(list_length(opts, "server"));
    QIMG_TRY(list_length(opts, "auth-client-required"));
    auto pool = take_option(opts, "pool");
    if (!pool) return Err(missing("pool"));
    loc.pool = *pool;
    loc.ns = take_option(opts, "namespace");
    auto image = take_option(opts, "image");
    if (!image) return Err(missing("image"));
    loc.image = *image;
    loc.conf = take_option(opts, "conf");
    loc.snapshot = take_option(opts, "snapshot");
    QIMG_TRY(take_encrypt(opts, loc));
    loc.user = take_option(opts, "user");
    QIMG_TRY(take_auth(opts, loc));
    loc.key_secret = take_option(opts, "key-secret");
    QIMG_TRY(take_servers(opts, loc));
    QIMG_TRY(check_no_leftover(opts, ""));
    return loc;
}

Result<std::optional<EncryptCreate>> encrypt_create_options(const std::map<std::string, std::string> &opts) {
    auto get = [&](const char *k) -> const std::string * {
        auto it = opts.find(std::string("encrypt.") + k);
        return it == opts.end() ? nullptr : &it->second;
    };
    const std::string *format = get("format"), *secret = get("key-secret"), *alg = get("cipher-alg");
    if (!format && !secret && !alg) return std::optional<EncryptCreate>();
    // The sub-dictionary is visited on its own: names without "encrypt.".
    if (!format) return Err(missing("format"));
    if (*format != "luks" && *format != "luks2")
        return make_error(EINVAL, "Parameter 'format' does not accept value '" + *format + "'");
    if (!secret) return Err(missing("key-secret"));
    EncryptCreate c{*format, *secret, -1};
    if (alg) {
        auto it = std::find_if(std::begin(kCipherAlgs), std::end(kCipherAlgs),
                               [&](const char *a) { return *alg == a; });
        if (it == std::end(kCipherAlgs))
            return make_error(EINVAL, "Parameter 'cipher-alg' does not accept value '" + *alg + "'");
        c.cipher_alg = static_cast<int>(it - std::begin(kCipherAlgs));
    }
    return std::optional<EncryptCreate>(std::move(c));
}

std::string mon_host(const std::vector<Server> &servers) {
    std::string out;
    for (const Server &s : servers) {
        if (!out.empty()) out += ';';
        if (s.host.find(':') != std::string::npos) {
            out += "[" + s.host + "]:" + s.port;
        } else {
            out += s.host + ":" + s.port;
        }
    }
    return out;
}

nlohmann::ordered_json string_name_options(const OptionMap &parsed) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    j["driver"] = "rbd";
    // QEMU's strong runtime options that a parsed name can set.
    for (const char *k : {"pool", "namespace", "image", "conf", "snapshot", "user"}) {
        if (auto it = parsed.find(k); it != parsed.end()) j[k] = it->second;
    }
    return j;
}

std::string string_name(std::string_view filename) {
    OptionMap o;
    KeyPairs kp;
    if (!parse_filename(filename, o, kp)) return {};
    return "json:" + to_qemu_json(string_name_options(o), false);
}

}  // namespace qimg::rbd
