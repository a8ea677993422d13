// QemuOpts lists, keyval (--object) and secrets; see keyval.h. Control flow
// follows util/qemu-option.c, util/keyval.c and qom/object_interfaces.c so
// that the first error reported is the one QEMU reports.
#include "util/keyval.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include <fmt/format.h>

#include "util/qjson.h"
#include "util/size.h"

namespace qimg {

namespace {

std::string_view until_nul(std::string_view s) {
    const size_t nul = s.find('\0');
    return nul == std::string_view::npos ? s : s.substr(0, nul);
}

bool is_alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// get_opt_value(): a value up to the next single ',', ",," meaning ','.
// Returns the position of the terminating ',' (or s.size()).
size_t scan_opt_value(std::string_view s, size_t pos, std::string &value) {
    for (;;) {
        const size_t comma = s.find(',', pos);
        if (comma == std::string_view::npos) {
            value.append(s.substr(pos));
            return s.size();
        }
        value.append(s.substr(pos, comma - pos));
        if (comma + 1 < s.size() && s[comma + 1] == ',') {
            value.push_back(',');
            pos = comma + 2;
            continue;
        }
        return comma;
    }
}

struct OptElement {
    std::string name, value;
    bool is_flag = false;
    bool is_help = false;
    std::string flag_prefix;  // "no" for "nofoo"
};

// get_opt_name_value(): one element starting at `pos`; advances `pos`.
OptElement next_opt_element(std::string_view s, size_t &pos, std::string_view implied_key) {
    OptElement e;
    const size_t len = std::min(s.find_first_of("=,", pos), s.size()) - pos;
    if (pos + len >= s.size() || s[pos + len] != '=') {
        if (!implied_key.empty()) {
            e.name = implied_key;
            pos = scan_opt_value(s, pos, e.value);
        } else {
            e.is_flag = true;
            e.name = s.substr(pos, len);
            pos += len;
            if (e.name.starts_with("no")) {
                e.name.erase(0, 2);
                e.value = "off";
                e.flag_prefix = "no";
            } else {
                e.value = "on";
                e.is_help = is_help_option(e.name);
            }
        }
    } else {
        e.name = s.substr(pos, len);
        pos = scan_opt_value(s, pos + len + 1, e.value);
    }
    if (pos < s.size()) ++pos;  // the ',' separator
    return e;
}

std::string flag_warning(const OptElement &e) {
    std::string w = fmt::format("short-form boolean option '{}{}' deprecated\n", e.flag_prefix, e.name);
    if (e.name == "delay") {
        w += fmt::format("Please use nodelay={} instead", e.flag_prefix.empty() ? "off" : "on");
    } else {
        w += fmt::format("Please use {}={} instead", e.name, e.value);
    }
    return w;
}

}  // namespace

// ---------------------------------------------------------------- QemuOpts

bool id_wellformed(std::string_view id) {
    if (id.empty() || !is_alpha(id[0])) return false;
    return std::all_of(id.begin() + 1, id.end(),
                       [](char c) { return is_alnum(c) || c == '-' || c == '.' || c == '_'; });
}

Result<OptList> parse_opts(std::string_view s, std::string_view implied_key,
                           std::vector<std::string> *flag_warnings) {
    s = until_nul(s);
    OptList out;
    size_t pos = 0;
    while (pos < s.size()) {
        OptElement e = next_opt_element(s, pos, implied_key);
        implied_key = {};
        if (e.is_flag && !e.is_help && flag_warnings) flag_warnings->push_back(flag_warning(e));
        out.emplace_back(std::move(e.name), std::move(e.value));
    }
    return out;
}

std::vector<OptItem> parse_opt_items(std::string_view s) {
    s = until_nul(s);
    std::vector<OptItem> out;
    size_t pos = 0;
    while (pos < s.size()) {
        OptElement e = next_opt_element(s, pos, {});
        OptItem item;
        if (e.is_flag && !e.is_help) item.flag_warning = flag_warning(e);
        item.name = std::move(e.name);
        item.value = std::move(e.value);
        item.is_help = e.is_help;
        out.push_back(std::move(item));
    }
    return out;
}

bool is_help_option(std::string_view s) { return s == "help" || s == "?"; }

bool has_help_option(std::string_view opts) {
    opts = until_nul(opts);
    size_t pos = 0;
    while (pos < opts.size()) {
        if (next_opt_element(opts, pos, {}).is_help) return true;
    }
    return false;
}

bool is_valid_option_list(std::string_view s) {
    if (s.empty() || s.front() == ',') return false;
    const size_t last = s.find_last_not_of(',');
    const size_t trailing = s.size() - (last + 1);
    return trailing % 2 == 0;
}

Result<std::string> accumulate_options(std::string prev, std::string_view next) {
    if (!is_valid_option_list(next)) return make_error(EINVAL, fmt::format("Invalid option list: {}", next));
    if (prev.empty()) return std::string(next);
    prev += ',';
    prev += next;
    return prev;
}

Result<bool> parse_bool_opt(std::string_view name, std::string_view value) {
    if (value == "on" || value == "yes" || value == "true" || value == "y") return true;
    if (value == "off" || value == "no" || value == "false" || value == "n") return false;
    return make_error(EINVAL, fmt::format("Parameter '{}' expects 'on' or 'off'", name));
}

Result<uint64_t> parse_size_opt(std::string_view name, std::string_view value, std::string *warning) {
    auto r = parse_size(value, 'B', warning);
    if (r) return *r;
    if (r.error().code == ERANGE) {
        return make_error(ERANGE, fmt::format("Value '{}' is out of range for parameter '{}'", value, name));
    }
    return make_error(EINVAL, fmt::format("Parameter '{}' expects a non-negative number below 2^64\n"
                                          "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                                          "tera-, peta-\nand exabytes, respectively.",
                                          name));
}

Result<uint64_t> parse_number_opt(std::string_view name, std::string_view value) {
    // qemu_strtou64(value, NULL, 0): trailing characters beat ERANGE.
    const std::string buf(value);
    char *ep = nullptr;
    errno = 0;
    const uint64_t n = std::strtoull(buf.c_str(), &ep, 0);
    const int err = errno;
    if (ep == buf.c_str() || ep != buf.c_str() + buf.size()) {
        return make_error(EINVAL, fmt::format("Parameter '{}' expects a number", name));
    }
    if (err == ERANGE) return make_error(ERANGE, fmt::format("Value '{}' is too large for parameter '{}'", value, name));
    if (err) return make_error(EINVAL, fmt::format("Parameter '{}' expects a number", name));
    return n;
}

// ------------------------------------------------------------------ keyval

namespace {

using Json = nlohmann::ordered_json;

constexpr size_t kMaxKeyFragment = 127;

// qapi-util.c parse_qapi_name(s, false): length of the QAPI name at the
// start of `s`, or 0.
size_t qapi_name_length(std::string_view s) {
    size_t p = 0;
    auto at = [&](size_t i) { return i < s.size() ? s[i] : '\0'; };
    if (at(p) == '_') {  // downstream "__RFQDN_" prefix
        ++p;
        if (at(p) != '_') return 0;
        ++p;
        while (is_alnum(at(p)) || at(p) == '-' || at(p) == '.') ++p;
        if (at(p) != '_') return 0;
        ++p;
    }
    if (!is_alpha(at(p))) return 0;
    ++p;
    while (is_alnum(at(p)) || at(p) == '-' || at(p) == '_') ++p;
    return p;
}

// keyval.c key_to_index(): leading decimal digits as a list index capped at
// INT_MAX, -1 if `s` does not start with a digit. `digits` gets their count.
long key_to_index(std::string_view s, size_t *digits) {
    if (s.empty() || !is_digit(s[0])) return -1;
    size_t n = 0;
    long value = 0;
    while (n < s.size() && is_digit(s[n])) {
        if (value <= INT_MAX) value = value * 10 + (s[n] - '0');
        ++n;
    }
    *digits = n;
    return std::min<long>(value, INT_MAX);
}

// A key that key_to_index() accepts completely.
bool is_index_key(std::string_view s, long *index) {
    size_t digits = 0;
    const long i = key_to_index(s, &digits);
    if (i < 0 || digits != s.size()) return false;
    *index = i;
    return true;
}

// keyval_parse_put(): `value` null means "must be an object".
Result<Json *> keyval_put(Json &cur, const std::string &key_in_cur, const Json *value, std::string_view key_so_far) {
    auto it = cur.find(key_in_cur);
    if (it != cur.end()) {
        const bool want_string = value != nullptr;
        if (it->is_string() != want_string) {
            return make_error(EINVAL, fmt::format("Parameters '{}.*' used inconsistently", key_so_far));
        }
        if (!value) return &*it;
        *it = *value;
        return &*it;
    }
    Json &slot = cur[key_in_cur];
    slot = value ? *value : Json::object();
    return &slot;
}

// keyval_parse_one(): returns the position after the element.
Result<size_t> keyval_parse_one(Json &root, std::string_view params, size_t start, std::string_view implied_key,
                                bool *help) {
    std::string_view rest = params.substr(start);
    size_t len = std::min(rest.find_first_of("=,"), rest.size());
    std::string_view key = rest;
    size_t val_end = std::string_view::npos;
    bool implied = false;
    if (len && (len >= rest.size() || rest[len] != '=')) {
        const std::string_view word = rest.substr(0, len);
        if (word == "?" || word == "help") {
            *help = true;
            size_t next = start + len;
            if (next < params.size()) ++next;
            return next;
        }
        if (!implied_key.empty()) {
            key = implied_key;
            val_end = len;
            len = implied_key.size();
            implied = true;
        }
    }
    const size_t key_end = len;  // offsets into `key`

    Json *cur = &root;
    std::string key_in_cur;
    size_t s = 0;
    for (;;) {
        size_t flen = 0;
        size_t digits = 0;
        if (s != 0 && key_to_index(key.substr(s), &digits) >= 0) {
            flen = digits;
        } else {
            flen = qapi_name_length(key.substr(s));
        }
        if (!flen || (s + flen < key_end && key[s + flen] != '.')) {
            return make_error(EINVAL, fmt::format("Invalid parameter '{}'", key.substr(0, key_end)));
        }
        if (flen > kMaxKeyFragment) {
            const bool fragment = s != 0 || s + flen != key_end;
            return make_error(EINVAL, fmt::format("Parameter{} '{}' is too long", fragment ? " fragment" : "",
                                                  key.substr(s, flen)));
        }
        if (s != 0) {
            QIMG_ASSIGN(cur, keyval_put(*cur, key_in_cur, nullptr, key.substr(0, s - 1)));
        }
        key_in_cur = std::string(key.substr(s, flen));
        s += flen;
        if (s >= key.size() || key[s] != '.') break;
        ++s;
    }

    Json value;
    size_t next;
    if (implied) {
        value = std::string(rest.substr(0, val_end));
        next = start + val_end;
        if (next < params.size()) ++next;
    } else {
        if (s >= key.size() || key[s] != '=') {
            return make_error(EINVAL, fmt::format("Expected '=' after parameter '{}'", key.substr(0, s)));
        }
        std::string v;
        size_t p = s + 1;
        for (;;) {
            if (p >= rest.size()) break;
            if (rest[p] == ',') {
                ++p;
                if (p >= rest.size() || rest[p] != ',') break;
            }
            v.push_back(rest[p++]);
        }
        value = std::move(v);
        next = start + p;
    }
    QIMG_TRY(keyval_put(*cur, key_in_cur, &value, key.substr(0, key_end)));
    return next;
}

// keyval_listify(): objects whose keys are all indexes become arrays.
Result<void> keyval_listify(Json &cur, const std::string &key_of_cur) {
    bool has_index = false, has_member = false;
    for (const std::string &k : qdict_order(cur)) {
        long index = 0;
        if (is_index_key(k, &index)) {
            has_index = true;
        } else {
            has_member = true;
        }
        Json &child = cur[k];
        if (child.is_object()) QIMG_TRY(keyval_listify(child, key_of_cur + k + "."));
    }
    if (has_index && has_member) {
        return make_error(EINVAL, fmt::format("Parameters '{}*' used inconsistently", key_of_cur));
    }
    if (!has_index) return ok();

    const size_t nelt = cur.size() + 1;
    std::vector<const Json *> elt(nelt, nullptr);
    long max_index = -1;
    for (auto it = cur.begin(); it != cur.end(); ++it) {
        long index = 0;
        is_index_key(it.key(), &index);
        max_index = std::max(max_index, index);
        if (static_cast<size_t>(index) < nelt - 1) elt[index] = &*it;
    }
    Json list = Json::array();
    const long count = std::min<long>(static_cast<long>(nelt), max_index + 1);
    for (long i = 0; i < count; ++i) {
        if (!elt[i]) return make_error(EINVAL, fmt::format("Parameter '{}{}' missing", key_of_cur, i));
        list.push_back(*elt[i]);
    }
    cur = std::move(list);
    return ok();
}

}  // namespace

Result<nlohmann::ordered_json> keyval_parse(std::string_view s, std::string_view implied_key, bool *help) {
    s = until_nul(s);
    Json root = Json::object();
    bool help_wanted = false;
    size_t pos = 0;
    while (pos < s.size()) {
        QIMG_ASSIGN(pos, keyval_parse_one(root, s, pos, implied_key, &help_wanted));
        implied_key = {};
    }
    if (help) {
        *help = help_wanted;
    } else if (help_wanted) {
        return make_error(EINVAL, "Help is not available for this option");
    }
    QIMG_TRY(keyval_listify(root, ""));
    return root;
}

// ------------------------------------------------------------------ --object

namespace {

// qapi/qom.json ObjectType (QEMU 7.2, Linux build).
constexpr std::array kObjectTypes = {
    "authz-list", "authz-listfile", "authz-pam", "authz-simple", "can-bus", "can-host-socketcan", "colo-compare",
    "cryptodev-backend", "cryptodev-backend-builtin", "cryptodev-backend-lkcf", "cryptodev-vhost-user",
    "dbus-vmstate", "filter-buffer", "filter-dump", "filter-mirror", "filter-redirector", "filter-replay",
    "filter-rewriter", "input-barrier", "input-linux", "iothread", "main-loop", "memory-backend-epc",
    "memory-backend-file", "memory-backend-memfd", "memory-backend-ram", "pef-guest", "pr-manager-helper", "qtest",
    "rng-builtin", "rng-egd", "rng-random", "secret", "secret_keyring", "sev-guest", "thread-context",
    "throttle-group", "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", "tls-cipher-suites", "x-remote-object",
    "x-vfio-user-server"};
// The user-creatable types linked into qemu-img ("--object help").
constexpr std::array kQemuImgObjectTypes = {
    "authz-list", "authz-list-file", "authz-simple", "main-loop", "pr-manager-helper", "secret", "secret_keyring",
    "thread-context", "throttle-group", "tls-cipher-suites", "tls-creds-anon", "tls-creds-psk", "tls-creds-x509"};

template <size_t N>
bool contains(const std::array<const char *, N> &a, std::string_view s) {
    return std::find(a.begin(), a.end(), s) != a.end();
}


// The QObject input visitor over the parsed argument: in keyval mode every
// scalar is a string to be converted, in JSON mode types must match.
struct MemberVisitor {
    Json &obj;
    bool keyval;

    bool has(const char *name) const { return obj.contains(name); }

    Result<std::string> str(const char *name) {
        const Json &v = obj[name];
        if (v.is_string()) return v.get<std::string>();
        if (keyval && (v.is_object() || v.is_array())) {
            return make_error(EINVAL, fmt::format("Parameters '{}.*' are unexpected", name));
        }
        return make_error(EINVAL, fmt::format("Invalid parameter type for '{}', expected: string", name));
    }
    Result<bool> boolean(const char *name) {
        const Json &v = obj[name];
        if (!keyval) {
            if (v.is_boolean()) return v.get<bool>();
            return make_error(EINVAL, fmt::format("Invalid parameter type for '{}', expected: boolean", name));
        }
        QIMG_ASSIGN(std::string s, str(name));
        return parse_bool_opt(name, s);
    }
    // Visits (consumes) a member: the check for unexpected ones ignores it.
    void consume(const char *name) { obj.erase(name); }
};

std::string scalar_to_string(const Json &v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "on" : "off";
    if (v.is_null()) return "null";
    return to_qemu_json(v, false);
}

void flatten_props(const Json &v, const std::string &prefix, std::map<std::string, std::string> &out) {
    if (v.is_object() && !v.empty()) {
        for (auto it = v.begin(); it != v.end(); ++it) flatten_props(*it, prefix + "." + it.key(), out);
    } else if (v.is_array() && !v.empty()) {
        for (size_t i = 0; i < v.size(); ++i) flatten_props(v[i], prefix + "." + std::to_string(i), out);
    } else {
        out[prefix] = scalar_to_string(v);
    }
}

// visit_type_SecretProperties_members(): base members first, then own.
Result<void> visit_secret_members(MemberVisitor &v, ObjectSpec &spec, bool *loaded_set) {
    if (v.has("loaded")) {
        QIMG_TRY(v.boolean("loaded"));
        *loaded_set = true;
        v.consume("loaded");
    }
    if (v.has("format")) {
        QIMG_ASSIGN(std::string format, v.str("format"));
        if (format != "raw" && format != "base64") {
            return make_error(EINVAL, fmt::format("Parameter 'format' does not accept value '{}'", format));
        }
        spec.props["format"] = format;
        v.consume("format");
    }
    for (const char *name : {"keyid", "iv", "data", "file"}) {
        if (!v.has(name)) continue;
        QIMG_ASSIGN(spec.props[name], v.str(name));
        v.consume(name);
    }
    return ok();
}

// ThrottleLimits (qapi/block-core.json), in schema order; the x- members
// of ThrottleGroupProperties are the same names with "x-" in front.
constexpr std::array kThrottleLimitNames = {
    "iops-total", "iops-total-max", "iops-total-max-length", "iops-read", "iops-read-max", "iops-read-max-length",
    "iops-write", "iops-write-max", "iops-write-max-length", "bps-total", "bps-total-max", "bps-total-max-length",
    "bps-read", "bps-read-max", "bps-read-max-length", "bps-write", "bps-write-max", "bps-write-max-length",
    "iops-size"};

// visit_type_int64: qemu_strtoi64(base 0, the whole string) in keyval mode,
// a JSON integer that fits otherwise. `full` names it in messages.
Result<int64_t> visit_int64(const Json &v, bool keyval, const std::string &full) {
    if (keyval && v.is_string()) {
        const std::string s = v.get<std::string>();
        errno = 0;
        char *end = nullptr;
        const long long n = std::strtoll(s.c_str(), &end, 0);
        if (s.empty() || errno != 0 || end == s.c_str() || *end != '\0')
            return make_error(EINVAL, fmt::format("Parameter '{}' expects integer", full));
        return int64_t(n);
    }
    if (keyval && (v.is_object() || v.is_array()))
        return make_error(EINVAL, fmt::format("Parameters '{}.*' are unexpected", full));
    if (!keyval && v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)))
        return v.get<int64_t>();
    return make_error(EINVAL, fmt::format("Invalid parameter type for '{}', expected: integer", full));
}

// visit_type_ThrottleGroupProperties_members(): "limits" (a ThrottleLimits
// object, its own unexpected members checked at its end), then the x-
// members. Values are kept in decimal: "limits" (present), "limits.<name>",
// "x-<name>".
Result<void> visit_throttle_group_members(MemberVisitor &v, ObjectSpec &spec) {
    if (v.has("limits")) {
        Json limits = v.obj["limits"];
        if (!limits.is_object())
            return make_error(EINVAL, "Invalid parameter type for 'limits', expected: object");
        spec.props["limits"] = "";
        for (const char *name : kThrottleLimitNames) {
            auto it = limits.find(name);
            if (it == limits.end()) continue;
            const std::string full = std::string("limits.") + name;
            QIMG_ASSIGN(int64_t n, visit_int64(*it, v.keyval, full));
            spec.props[full] = std::to_string(n);
            limits.erase(it);
        }
        if (!limits.empty())
            return make_error(EINVAL, fmt::format("Parameter 'limits.{}' is unexpected", qdict_order(limits).front()));
        v.consume("limits");
    }
    for (const char *name : kThrottleLimitNames) {
        const std::string x = std::string("x-") + name;
        if (!v.has(x.c_str())) continue;
        QIMG_ASSIGN(int64_t n, visit_int64(v.obj[x], v.keyval, x));
        spec.props[x] = std::to_string(n);
        v.consume(x.c_str());
    }
    return ok();
}

Result<ObjectSpec> build_object(Json obj, bool keyval) {
    ObjectSpec spec;
    MemberVisitor v{obj, keyval};
    if (!v.has("qom-type")) return make_error(EINVAL, "Parameter 'qom-type' is missing");
    QIMG_ASSIGN(spec.qom_type, v.str("qom-type"));
    if (!contains(kObjectTypes, spec.qom_type)) {
        return make_error(EINVAL, fmt::format("Parameter 'qom-type' does not accept value '{}'", spec.qom_type));
    }
    v.consume("qom-type");
    if (!v.has("id")) return make_error(EINVAL, "Parameter 'id' is missing");
    QIMG_ASSIGN(spec.id, v.str("id"));
    v.consume("id");

    bool loaded_set = false;
    if (spec.qom_type == "secret" || spec.qom_type == "throttle-group") {
        if (spec.qom_type == "secret") QIMG_TRY(visit_secret_members(v, spec, &loaded_set));
        else QIMG_TRY(visit_throttle_group_members(v, spec));
        if (!obj.empty()) {
            return make_error(EINVAL, fmt::format("Parameter '{}' is unexpected", qdict_order(obj).front()));
        }
    } else {
        // Members of other types are not validated; keep them as strings.
        for (auto it = obj.begin(); it != obj.end(); ++it) flatten_props(*it, it.key(), spec.props);
    }

    // user_creatable_add_type()
    if (!id_wellformed(spec.id)) {
        return make_error(EINVAL, "Parameter 'id' expects an identifier\n"
                                  "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
    }
    if (spec.qom_type == "authz-listfile") spec.qom_type = "authz-list-file";  // enum name vs. QOM type name
    if (!contains(kQemuImgObjectTypes, spec.qom_type)) {
        return make_error(EINVAL, fmt::format("invalid object type: {}", spec.qom_type));
    }
    if (spec.qom_type == "secret") {
        if (loaded_set) return make_error(EINVAL, "Property 'secret.loaded' is not writable");
        const bool has_file = spec.props.count("file") != 0;
        const bool has_data = spec.props.count("data") != 0;
        if (has_file && has_data) return make_error(EINVAL, "'file' and 'data' are mutually exclusive");
        if (!has_file && !has_data) return make_error(EINVAL, "Either 'file' or 'data' must be provided");
    }
    return spec;
}

}  // namespace

Result<ObjectSpec> parse_object(std::string_view arg) {
    arg = until_nul(arg);
    if (!arg.empty() && arg.front() == '{') {
        QIMG_ASSIGN(Json obj, parse_qemu_json(arg));
        if (!obj.is_object()) return make_error(EINVAL, "Invalid parameter type for 'null', expected: object");
        return build_object(std::move(obj), false);
    }
    bool help = false;
    QIMG_ASSIGN(Json obj, keyval_parse(arg, "qom-type", &help));
    if (help) {
        ObjectSpec spec;
        spec.help = true;
        if (auto it = obj.find("qom-type"); it != obj.end() && it->is_string()) spec.qom_type = *it;
        return spec;
    }
    return build_object(std::move(obj), true);
}

std::string object_help(const ObjectSpec &spec) {
    if (spec.qom_type == "secret") {
        return "secret options:\n"
               "  data=<string>\n"
               "  file=<string>\n"
               "  format=<QCryptoSecretFormat>\n"
               "  iv=<string>\n"
               "  keyid=<string>\n";
    }
    if (spec.qom_type == "throttle-group") {
        // QEMU sorts the property list by name ("-max" after "-max-length").
        std::vector<std::string> names = {"limits=<ThrottleLimits>"};
        for (const char *n : kThrottleLimitNames) names.push_back(fmt::format("x-{}=<int>", n));
        std::sort(names.begin(), names.end());
        std::string out = "throttle-group options:\n";
        for (const std::string &n : names) out += "  " + n + "\n";
        return out;
    }
    std::string out = "List of user creatable objects:\n";
    for (const char *t : kQemuImgObjectTypes) out += fmt::format("  {}\n", t);
    return out;
}

}  // namespace qimg
