// The curl protocols' options and response headers (see curl_options.h).
#include "protocol/curl/curl_options.h"

#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include "util/keyval.h"
#include "util/option_map.h"

namespace qimg::curl {
namespace {

bool iequals_prefix(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    return true;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

// The value of header `name` (lower case, with its ':'), or nullopt.
std::optional<std::string_view> header_value(std::string_view line, std::string_view name) {
    if (!iequals_prefix(line, name)) return std::nullopt;
    return trim(line.substr(name.size()));
}

std::optional<uint64_t> to_u64(std::string_view s) {
    uint64_t v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

}  // namespace

Result<CurlOptions> take_curl_options(OptionMap &opts, std::string_view protocol, const SecretStore &secrets) {
    CurlOptions o;
    // The typed values first, as qemu_opts_absorb_qdict() checks them.
    if (auto v = take_option(opts, "readahead")) {
        QIMG_ASSIGN(o.readahead, parse_size_opt("readahead", *v));
    }
    if (auto v = take_option(opts, "timeout")) {
        QIMG_ASSIGN(o.timeout, parse_number_opt("timeout", *v));
    }
    if (auto v = take_option(opts, "sslverify")) {
        QIMG_ASSIGN(o.sslverify, parse_bool_opt("sslverify", *v));
    }
    auto cookie = take_option(opts, "cookie");
    auto cookie_secret = take_option(opts, "cookie-secret");
    auto url = take_option(opts, "url");
    auto filename = take_option(opts, "filename");
    o.username = take_option(opts, "username");
    auto password_secret = take_option(opts, "password-secret");
    o.proxy_username = take_option(opts, "proxy-username");
    auto proxy_password_secret = take_option(opts, "proxy-password-secret");

    // Then curl_open's own checks, in its order. QEMU prints the size as a
    // signed size_t (%zd).
    if (o.readahead % 512 != 0)
        return make_error(EINVAL, fmt::format("HTTP_READAHEAD_SIZE {} is not a multiple of 512",
                                              static_cast<int64_t>(o.readahead)));
    if (o.timeout > kMaxTimeout) return make_error(EINVAL, "timeout parameter is too large or negative");
    if (cookie && cookie_secret) return make_error(EINVAL, "curl driver cannot handle both cookie and cookie secret");
    if (cookie_secret) {
        QIMG_ASSIGN(std::string c, secrets.lookup_utf8(*cookie_secret));
        o.cookie = std::move(c);
    } else {
        o.cookie = std::move(cookie);
    }
    // A name given as a string is the URL (QEMU's curl_parse_filename); the
    // opener passes an empty one when there is none.
    if (!url && filename && !filename->empty()) url = std::move(filename);
    if (!url) return make_error(EINVAL, "curl block driver requires an 'url' option");
    const std::string prefix = std::string(protocol) + "://";
    if (url->rfind(prefix, 0) != 0)
        return make_error(EINVAL, fmt::format("{} curl driver cannot handle the URL '{}' (does not start with '{}')",
                                              protocol, *url, prefix));
    o.url = std::move(*url);
    if (password_secret) {
        QIMG_ASSIGN(std::string p, secrets.lookup_utf8(*password_secret));
        o.password = std::move(p);
    }
    if (proxy_password_secret) {
        QIMG_ASSIGN(std::string p, secrets.lookup_utf8(*proxy_password_secret));
        o.proxy_password = std::move(p);
    }
    return o;
}

std::string curl_plain_name(const nlohmann::ordered_json &full) {
    for (const char *key : {"cookie", "cookie-secret", "username", "password-secret", "proxy-username",
                            "proxy-password-secret"})
        if (full.contains(key)) return {};
    if (auto it = full.find("sslverify"); it != full.end()) {
        // A JSON boolean from json:, a string from --image-opts.
        bool verify = true;
        if (it->is_boolean()) {
            verify = it->get<bool>();
        } else if (it->is_string()) {
            auto b = parse_bool_opt("sslverify", it->get<std::string>());
            verify = !b || *b;
        }
        if (!verify) return {};
    }
    for (const char *key : {"url", "filename"}) {
        auto it = full.find(key);
        if (it != full.end() && it->is_string()) return it->get<std::string>();
    }
    return {};
}

bool is_accept_ranges_bytes(std::string_view line) {
    auto v = header_value(line, "accept-ranges:");
    return v && *v == "bytes";
}

std::optional<ContentRange> parse_content_range(std::string_view line) {
    auto v = header_value(line, "content-range:");
    if (!v || !iequals_prefix(*v, "bytes ")) return std::nullopt;
    std::string_view spec = trim(v->substr(6));
    size_t dash = spec.find('-'), slash = spec.find('/');
    if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) return std::nullopt;
    auto first = to_u64(spec.substr(0, dash));
    auto last = to_u64(spec.substr(dash + 1, slash - dash - 1));
    std::string_view total = spec.substr(slash + 1);
    if (!first || !last || *last < *first || (total != "*" && !to_u64(total))) return std::nullopt;
    return ContentRange{*first, *last};
}

std::optional<long> parse_status_line(std::string_view line) {
    if (!line.starts_with("HTTP/")) return std::nullopt;
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos || line.size() < sp + 4) return std::nullopt;
    auto code = to_u64(line.substr(sp + 1, 3));
    if (!code) return std::nullopt;
    return static_cast<long>(*code);
}

}  // namespace qimg::curl
