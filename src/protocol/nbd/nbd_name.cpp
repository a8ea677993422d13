// NBD filenames and options (nbd_name.h), with the behaviour of QEMU 7.2's
// block/nbd.c, util/uri.c and inet_parse() as seen from qemu-img.
#include "protocol/nbd/nbd_name.h"

#include <cstring>
#include <string_view>
#include <vector>

#include "util/keyval.h"
#include "util/option_map.h"

namespace qimg::nbd {
namespace {

constexpr std::string_view kInvalidUrl = "No valid URL specified";

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_unreserved(char c) { return is_alpha(c) || is_digit(c) || std::strchr("-._~", c) != nullptr; }
bool is_sub_delim(char c) { return c != '\0' && std::strchr("!$&'()*+,;=", c) != nullptr; }

// RFC 3986 characters of one URI part: unreserved, sub-delims, the part's
// `extra` characters and well-formed %XX escapes. Returns where they stop.
size_t scan(std::string_view s, size_t i, const char *extra) {
    while (i < s.size()) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= s.size() || !is_hex(s[i + 1]) || !is_hex(s[i + 2])) return i;
            i += 3;
            continue;
        }
        if (is_unreserved(c) || is_sub_delim(c) || (c != '\0' && std::strchr(extra, c))) {
            ++i;
            continue;
        }
        return i;
    }
    return i;
}

int hex_value(char c) {
    if (is_digit(c)) return c - '0';
    return (c | 0x20) - 'a' + 10;
}

// uri_string_unescape(); a decoded NUL ends the C string QEMU works on.
std::string unescape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && is_hex(s[i + 1]) && is_hex(s[i + 2])) {
            out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out += s[i];
        }
    }
    if (size_t nul = out.find('\0'); nul != std::string::npos) out.resize(nul);
    return out;
}

struct Uri {
    std::string scheme;
    std::optional<std::string> server;  // unescaped; nullopt: no (or an empty) host
    unsigned port = 0;
    std::string path;                   // unescaped
    std::optional<std::string> query;   // raw
};

// The absolute-URI subset of RFC 3986 that nbd names use, as strict as
// QEMU's uri_parse(): nullopt where it fails.
std::optional<Uri> parse_uri(std::string_view s) {
    Uri u;
    size_t i = 0;
    if (s.empty() || !is_alpha(s[0])) return std::nullopt;
    while (i < s.size() && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')) ++i;
    if (i >= s.size() || s[i] != ':') return std::nullopt;
    u.scheme = std::string(s.substr(0, i));
    ++i;
    if (s.substr(i, 2) == "//") {
        i += 2;
        // userinfo "@", if any.
        size_t ui = scan(s, i, ":");
        if (ui < s.size() && s[ui] == '@') i = ui + 1;
        size_t host_start = i;
        if (i < s.size() && s[i] == '[') {
            size_t close = s.find(']', i);
            if (close == std::string_view::npos) return std::nullopt;
            i = close + 1;
        } else {
            i = scan(s, i, "");
        }
        if (i > host_start) u.server = unescape(s.substr(host_start, i - host_start));
        if (i < s.size() && s[i] == ':') {
            ++i;
            if (i >= s.size() || !is_digit(s[i])) return std::nullopt;
            unsigned port = 0;
            while (i < s.size() && is_digit(s[i])) {
                port = port * 10 + static_cast<unsigned>(s[i] - '0');
                if (port > 65535) return std::nullopt;
                ++i;
            }
            u.port = port;
        }
        if (i < s.size() && s[i] != '/' && s[i] != '?' && s[i] != '#') return std::nullopt;
    }
    size_t path_start = i;
    i = scan(s, i, ":@/");
    u.path = unescape(s.substr(path_start, i - path_start));
    if (i < s.size() && s[i] == '?') {
        size_t q = ++i;
        i = scan(s, i, ":@/?");
        u.query = std::string(s.substr(q, i - q));
    }
    if (i < s.size() && s[i] == '#') i = scan(s, i + 1, ":@/?");
    if (i != s.size()) return std::nullopt;
    return u;
}

struct QueryParam {
    std::string name;
    std::optional<std::string> value;  // nullopt: "name" without '='
};

// QEMU's query_params_parse(): '&'-separated, or ';' where no '&' follows;
// empty sections and "=value" are skipped.
std::vector<QueryParam> parse_query(std::string_view q) {
    std::vector<QueryParam> out;
    size_t i = 0;
    while (i < q.size()) {
        size_t end = q.find('&', i);
        if (end == std::string_view::npos) end = q.find(';', i);
        if (end == std::string_view::npos) end = q.size();
        std::string_view part = q.substr(i, end - i);
        size_t eq = part.find('=');
        if (!part.empty() && eq != 0) {
            if (eq == std::string_view::npos) out.push_back({unescape(part), std::nullopt});
            else out.push_back({unescape(part.substr(0, eq)), unescape(part.substr(eq + 1))});
        }
        i = end < q.size() ? end + 1 : end;
    }
    return out;
}

// nbd_parse_uri().
Result<void> parse_nbd_uri(const std::string &filename, OptionMap &opts) {
    auto uri = parse_uri(filename);
    if (!uri) return make_error(EINVAL, std::string(kInvalidUrl));
    bool is_unix;
    if (uri->scheme == "nbd" || uri->scheme == "nbd+tcp") is_unix = false;
    else if (uri->scheme == "nbd+unix") is_unix = true;
    else return make_error(EINVAL, std::string(kInvalidUrl));
    OptionMap out;
    std::string_view p = uri->path;
    if (!p.empty() && p[0] == '/') p.remove_prefix(1);
    if (!p.empty()) out["export"] = std::string(p);
    std::vector<QueryParam> qp = parse_query(uri->query.value_or(""));
    if (qp.size() > 1 || (is_unix && qp.empty()) || (!is_unix && !qp.empty()))
        return make_error(EINVAL, std::string(kInvalidUrl));
    if (is_unix) {
        // QEMU dereferences a missing value ("?socket" crashes it).
        if (uri->server || uri->port || qp[0].name != "socket" || !qp[0].value)
            return make_error(EINVAL, std::string(kInvalidUrl));
        out["server.type"] = "unix";
        out["server.path"] = *qp[0].value;
    } else {
        if (!uri->server) return make_error(EINVAL, std::string(kInvalidUrl));
        std::string host = *uri->server;
        if (!host.empty() && host[0] == '[') host = host.substr(1, host.size() >= 2 ? host.size() - 2 : 0);
        out["server.type"] = "inet";
        out["server.host"] = host;
        out["server.port"] = std::to_string(uri->port ? uri->port : 10809u);
    }
    for (auto &[k, v] : out) opts[k] = v;
    return ok();
}

// inet_parse() of "host:port[,options]" (sscanf with %64[^:] and %32[^,]).
Result<void> parse_inet(const std::string &str, OptionMap &opts) {
    std::string host, port;
    size_t i = 0;
    auto take_port = [&](size_t from) {
        size_t j = from;
        while (j < str.size() && str[j] != ',' && j - from < 32) ++j;
        port = str.substr(from, j - from);
        return !port.empty();
    };
    if (!str.empty() && str[0] == ':') {
        if (!take_port(1)) return make_error(EINVAL, "error parsing port in address '" + str + "'");
    } else if (!str.empty() && str[0] == '[') {
        size_t close = 1;
        while (close < str.size() && str[close] != ']' && close - 1 < 64) ++close;
        host = str.substr(1, close - 1);
        i = close;
        if (host.empty() || i + 1 >= str.size() || str[i] != ']' || str[i + 1] != ':' || !take_port(i + 2))
            return make_error(EINVAL, "error parsing IPv6 address '" + str + "'");
    } else {
        while (i < str.size() && str[i] != ':' && i < 64) ++i;
        host = str.substr(0, i);
        if (host.empty() || i >= str.size() || str[i] != ':' || !take_port(i + 1))
            return make_error(EINVAL, "error parsing address '" + str + "'");
    }
    // The ",to=", ",ipv4", ",ipv6" and ",keep-alive" options that may
    // follow the port are not taken over (qimg connects to the address).
    opts["server.type"] = "inet";
    opts["server.host"] = host;
    opts["server.port"] = port;
    return ok();
}

Result<std::optional<bool>> take_bool(OptionMap &opts, const std::string &key, const std::string &name) {
    auto v = take_option(opts, key);
    if (!v) return std::optional<bool>();
    // QAPI's bool visitor on a string from a flat dict.
    if (*v == "on" || *v == "yes" || *v == "true") return std::optional<bool>(true);
    if (*v == "off" || *v == "no" || *v == "false") return std::optional<bool>(false);
    return make_error(EINVAL, "Parameter '" + name + "' expects 'on' or 'off'");
}

// nbd_process_legacy_socket_options(): host/port/path into server.*.
Result<void> legacy_socket_options(OptionMap &opts) {
    auto path = take_option(opts, "path");
    auto host = take_option(opts, "host");
    auto port = take_option(opts, "port");
    if (!path && !host && !port) return ok();
    for (const auto &kv : opts)
        if (kv.first.starts_with("server."))
            return make_error(EINVAL, "Cannot use 'server' and path/host/port at the same time");
    if (path && host) return make_error(EINVAL, "path and host may not be used at the same time");
    if (path) {
        if (port) return make_error(EINVAL, "port may not be used without host");
        opts["server.type"] = "unix";
        opts["server.path"] = *path;
    } else if (host) {
        opts["server.type"] = "inet";
        opts["server.host"] = *host;
        opts["server.port"] = port ? *port : kDefaultPort;
    }
    return ok();
}

// nbd_config(): the "server." options as a SocketAddress, with the QAPI
// visitor's messages (members in declaration order, then unexpected ones).
Result<ServerAddress> take_server(OptionMap &opts) {
    OptionMap addr = extract_prefix(opts, "server");
    if (addr.empty()) return make_error(EINVAL, "NBD server address missing");
    ServerAddress a;
    auto type = take_option(addr, "type");
    if (!type) return make_error(EINVAL, "Parameter 'type' is missing");
    auto missing = [](const char *p) { return make_error(EINVAL, std::string("Parameter '") + p + "' is missing"); };
    if (*type == "inet") {
        a.type = ServerAddress::Type::Inet;
        auto host = take_option(addr, "host");
        if (!host) return missing("host");
        auto port = take_option(addr, "port");
        if (!port) return missing("port");
        a.host = *host;
        a.port = *port;
        (void)take_option(addr, "numeric");
        a.to_set = take_option(addr, "to").has_value();
        QIMG_ASSIGN(std::optional<bool> v4, take_bool(addr, "ipv4", "ipv4"));
        QIMG_ASSIGN(std::optional<bool> v6, take_bool(addr, "ipv6", "ipv6"));
        a.ipv4_set = v4.has_value();
        a.ipv6_set = v6.has_value();
        a.ipv4 = v4.value_or(false);
        a.ipv6 = v6.value_or(false);
        (void)take_option(addr, "keep-alive");
        (void)take_option(addr, "mptcp");
    } else if (*type == "unix") {
        a.type = ServerAddress::Type::Unix;
        auto path = take_option(addr, "path");
        if (!path) return missing("path");
        a.path = *path;
        QIMG_ASSIGN(std::optional<bool> abstract, take_bool(addr, "abstract", "abstract"));
        QIMG_ASSIGN(std::optional<bool> tight, take_bool(addr, "tight", "tight"));
        a.abstract = abstract.value_or(false);
        a.tight = tight.value_or(true);
    } else if (*type == "vsock" || *type == "fd") {
        return make_error(ENOTSUP, "NBD server addresses of type '" + *type + "' are not supported by qimg");
    } else {
        return make_error(EINVAL, "Parameter 'type' does not accept value '" + *type + "'");
    }
    if (!addr.empty()) return make_error(EINVAL, "Parameter '" + addr.begin()->first + "' is unexpected");
    return a;
}

}  // namespace

Result<void> parse_filename(const std::string &filename, OptionMap &opts) {
    if (opts.count("host") || opts.count("port") || opts.count("path"))
        return make_error(EINVAL, "host/port/path and a file name may not be specified at the same time");
    if (filename.find("://") != std::string::npos) return parse_nbd_uri(filename, opts);
    std::string file = filename;
    constexpr std::string_view kExportOpt = ":exportname=";
    if (size_t e = file.find(kExportOpt); e != std::string::npos) {
        // An empty export name ends the parse: no address at all.
        if (e + kExportOpt.size() == file.size()) return ok();
        opts["export"] = file.substr(e + kExportOpt.size());
        file.resize(e);
    }
    if (!file.starts_with("nbd:")) return make_error(EINVAL, "File name string for NBD must start with 'nbd:'");
    std::string host_spec = file.substr(4);
    if (host_spec.empty()) return ok();
    if (host_spec.starts_with("unix:")) {
        opts["server.type"] = "unix";
        opts["server.path"] = host_spec.substr(5);
        return ok();
    }
    return parse_inet(host_spec, opts);
}

Result<Config> take_config(OptionMap &opts) {
    Config c;
    // The runtime options QEMU absorbs first (the numbers checked there).
    for (const char *key : {"reconnect-delay", "open-timeout"}) {
        if (auto it = opts.find(key); it != opts.end()) {
            QIMG_ASSIGN(uint64_t v, parse_number_opt(key, it->second));
            (std::strcmp(key, "open-timeout") == 0 ? c.open_timeout : c.reconnect_delay) = v;
            opts.erase(it);
        }
    }
    c.export_name = take_option(opts, "export");
    c.tls_creds = take_option(opts, "tls-creds");
    c.tls_hostname = take_option(opts, "tls-hostname");
    c.x_dirty_bitmap = take_option(opts, "x-dirty-bitmap");
    QIMG_TRY(legacy_socket_options(opts));
    QIMG_ASSIGN(c.server, take_server(opts));
    if (c.export_name && c.export_name->size() > kMaxStringSize)
        return make_error(EINVAL, "export name too long to send to server");
    if (c.x_dirty_bitmap && c.x_dirty_bitmap->size() > kMaxStringSize)
        return make_error(EINVAL, "x-dirty-bitmap query too long to send to server");
    return c;
}

std::string canonical_name(const ServerAddress &a, const std::optional<std::string> &export_name) {
    std::string name;
    if (a.type == ServerAddress::Type::Unix) {
        name = export_name ? "nbd+unix:///" + *export_name + "?socket=" + a.path : "nbd+unix://?socket=" + a.path;
    } else {
        if (a.ipv4_set || a.ipv6_set || a.to_set) return {};
        name = "nbd://" + a.host + ":" + a.port;
        if (export_name) name += "/" + *export_name;
    }
    // QEMU's exact_filename holds PATH_MAX bytes; a longer name is none.
    if (name.size() >= 4096) return {};
    return name;
}

std::string canonical_name_of(OptionMap opts) {
    if (auto f = opts.find("filename"); f != opts.end()) {
        std::string name = f->second;
        opts.erase(f);
        if (!parse_filename(name, opts)) return {};
    }
    auto c = take_config(opts);
    return c ? canonical_name(c->server, c->export_name) : std::string();
}

}  // namespace qimg::nbd
