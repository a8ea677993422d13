// blkdebug's config parser and rule engine (see rules.h). Written from
// QEMU's documented behaviour (docs/devel/blkdebug.txt, the -readconfig
// file format) and its observable messages.
#include "filter/blkdebug/rules.h"

#include <algorithm>
#include <array>
#include <set>

#include <nlohmann/json.hpp>

#include "util/keyval.h"
#include "util/qjson.h"

namespace qimg::blkdebug {
namespace {

enum class Type { String, Number, Bool };
struct KeyDesc {
    std::string_view name;
    Type type;
};
constexpr std::array<KeyDesc, 7> kInjectKeys = {{{"event", Type::String}, {"state", Type::Number},
                                                 {"errno", Type::Number}, {"sector", Type::Number},
                                                 {"once", Type::Bool}, {"immediately", Type::Bool},
                                                 {"iotype", Type::String}}};
constexpr std::array<KeyDesc, 3> kSetStateKeys = {
    {{"event", Type::String}, {"state", Type::Number}, {"new_state", Type::Number}}};
constexpr std::array<std::string_view, 2> kGroups = {"inject-error", "set-state"};
constexpr std::array<std::string_view, 6> kIoTypes = {"read",    "write", "write-zeroes",
                                                      "discard", "flush", "block-status"};

const KeyDesc *find_key(std::string_view group, std::string_view key) {
    auto find = [&](const auto &keys) -> const KeyDesc * {
        for (const KeyDesc &k : keys)
            if (k.name == key) return &k;
        return nullptr;
    };
    return group == "inject-error" ? find(kInjectKeys) : find(kSetStateKeys);
}

Result<void> check_value(const KeyDesc &k, std::string_view value) {
    if (k.type == Type::Number) QIMG_TRY(parse_number_opt(k.name, value));
    if (k.type == Type::Bool) QIMG_TRY(parse_bool_opt(k.name, value));
    return ok();
}

// QEMU checks a section's keys in its QDict's order: the first bad one in
// that order is the one reported.
std::vector<std::string> checking_order(const std::vector<std::pair<std::string, std::string>> &keys) {
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    for (const auto &[k, v] : keys) obj[k] = v;
    return qdict_order(obj);
}

// QemuOpts of a config file section: unknown keys are "Invalid parameter".
Result<void> check_file_section(const Section &s) {
    if (std::find(kGroups.begin(), kGroups.end(), s.group) == kGroups.end())
        return make_error(EINVAL, "There is no option group '" + s.group + "'");
    for (const std::string &key : checking_order(s.keys)) {
        if (key == "id") continue;  // the "[group \"id\"]" name
        const KeyDesc *d = find_key(s.group, key);
        if (!d) return make_error(EINVAL, "Invalid parameter '" + key + "'");
        auto it = std::find_if(s.keys.rbegin(), s.keys.rend(), [&](const auto &kv) { return kv.first == key; });
        QIMG_TRY(check_value(*d, it->second));
    }
    return ok();
}

// A later value of a key replaces the earlier one (a QDict keeps one).
void put(Section &s, std::string key, std::string value) {
    for (auto &kv : s.keys)
        if (kv.first == key) {
            kv.second = std::move(value);
            return;
        }
    s.keys.emplace_back(std::move(key), std::move(value));
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// `key = "value"` as QEMU reads it with sscanf(" %63s = \"%1023[^\"]\""):
// any line with a first word is a key (at most 63 characters); its value is
// what follows `= "` up to the next quote (the closing quote is not
// required), or empty when the line does not have that shape. A line with
// no word is a parse error.
bool parse_key_line(std::string_view line, std::string &key, std::string &value) {
    size_t i = 0;
    while (i < line.size() && is_space(line[i])) ++i;
    size_t start = i;
    while (i < line.size() && !is_space(line[i]) && i - start < 63) ++i;
    if (i == start) return false;
    key.assign(line.substr(start, i - start));
    value.clear();
    auto skip = [&] {
        while (i < line.size() && is_space(line[i])) ++i;
    };
    skip();
    if (i >= line.size() || line[i] != '=') return true;
    ++i;
    skip();
    if (i >= line.size() || line[i] != '"') return true;
    ++i;
    size_t vstart = i;
    while (i < line.size() && line[i] != '"' && i - vstart < 1023) ++i;
    value.assign(line.substr(vstart, i - vstart));
    return true;
}

// "[group]" or "[group \"id\"]" as QEMU's sscanf patterns read them.
bool parse_header(std::string_view line, std::string &group, std::string &id) {
    // "[%63s \"%63[^\"]\"]": a word, blanks, a quoted id.
    size_t i = 1, start = 1;
    while (i < line.size() && !is_space(line[i]) && i - start < 63) ++i;
    if (i > start) {
        size_t j = i;
        while (j < line.size() && is_space(line[j])) ++j;
        if (j < line.size() && line[j] == '"') {
            size_t idstart = ++j;
            while (j < line.size() && line[j] != '"' && j - idstart < 63) ++j;
            if (j > idstart) {
                group.assign(line.substr(start, i - start));
                id.assign(line.substr(idstart, j - idstart));
                return true;
            }
        }
    }
    // "[%63[^]]]": everything up to the closing bracket.
    i = 1;
    while (i < line.size() && line[i] != ']' && line[i] != '\n' && i - 1 < 63) ++i;
    if (i == 1) return false;
    group.assign(line.substr(1, i - 1));
    id.clear();
    return true;
}

Result<int64_t> number(const Section &s, std::string_view key, int64_t dflt) {
    for (const auto &[k, v] : s.keys)
        if (k == key) {
            QIMG_ASSIGN(uint64_t n, parse_number_opt(key, v));
            return static_cast<int64_t>(n);  // QEMU stores it in a signed int: "-1" is -1
        }
    return dflt;
}

Result<bool> boolean(const Section &s, std::string_view key) {
    for (const auto &[k, v] : s.keys)
        if (k == key) return parse_bool_opt(key, v);
    return false;
}

const std::string *text(const Section &s, std::string_view key) {
    for (const auto &kv : s.keys)
        if (kv.first == key) return &kv.second;
    return nullptr;
}

Result<Rule> make_rule(const Section &s) {
    Rule r;
    r.action = s.group == "inject-error" ? Rule::Action::InjectError : Rule::Action::SetState;
    const std::string *ev = text(s, "event");
    if (!ev) return make_error(EINVAL, "Missing event name for rule");
    auto e = parse_blkdebug_event(*ev);
    if (!e) return make_error(EINVAL, "invalid parameter value: " + *ev);
    r.event = *e;
    QIMG_ASSIGN(r.state, number(s, "state", 0));
    if (r.action == Rule::Action::SetState) {
        QIMG_ASSIGN(r.new_state, number(s, "new_state", 0));
        return r;
    }
    QIMG_ASSIGN(int64_t err, number(s, "errno", EIO));
    r.error = static_cast<int>(err);
    QIMG_ASSIGN(r.once, boolean(s, "once"));
    QIMG_ASSIGN(r.immediately, boolean(s, "immediately"));
    QIMG_ASSIGN(int64_t sector, number(s, "sector", -1));
    r.offset = sector == -1 ? -1 : static_cast<int64_t>(static_cast<uint64_t>(sector) * 512);
    if (const std::string *io = text(s, "iotype")) {
        auto it = std::find(kIoTypes.begin(), kIoTypes.end(), *io);
        if (it == kIoTypes.end()) return make_error(EINVAL, "invalid parameter value: " + *io);
        r.iotype_mask = 1u << (it - kIoTypes.begin());
    } else {
        // Every kind but block status, as QEMU's default.
        r.iotype_mask = (1u << int(IoType::Read)) | (1u << int(IoType::Write)) |
                        (1u << int(IoType::WriteZeroes)) | (1u << int(IoType::Discard)) |
                        (1u << int(IoType::Flush));
    }
    return r;
}

// The "<group>.*" options, as QEMU's config_parse_qdict_section reads them:
// either one section of plain keys, or sections "0.KEY", "1.KEY", ...
Result<void> group_from_options(OptionMap &opts, std::string_view group, std::vector<Section> &out) {
    OptionMap sub = extract_prefix(opts, group);
    if (sub.empty()) return ok();
    const std::string g(group);
    auto first_in_qdict_order = [](const OptionMap &m) {
        std::vector<std::pair<std::string, std::string>> keys(m.begin(), m.end());
        return checking_order(keys).front();
    };
    Section plain{g, {}};
    for (auto it = sub.begin(); it != sub.end();) {
        if (const KeyDesc *d = find_key(g, it->first)) {
            QIMG_TRY(check_value(*d, it->second));
            plain.keys.emplace_back(it->first, it->second);
            it = sub.erase(it);
        } else {
            ++it;
        }
    }
    if (sub.empty()) {
        out.push_back(std::move(plain));
        return ok();
    }
    if (!plain.keys.empty())
        return make_error(EINVAL, "Unknown option '" + first_in_qdict_order(sub) + "' for [" + g + "]");
    for (unsigned i = 0;; ++i) {
        const std::string idx = std::to_string(i);
        if (sub.count(idx)) return make_error(EINVAL, "[" + g + "] section (index " + idx + ") does not consist of keys");
        OptionMap keys = extract_prefix(sub, idx);
        if (keys.empty()) break;
        Section s{g, {}};
        for (const auto &[k, v] : keys) s.keys.emplace_back(k, v);
        for (const std::string &k : checking_order(s.keys)) {
            if (const KeyDesc *d = find_key(g, k)) QIMG_TRY(check_value(*d, keys[k]));
        }
        for (const std::string &k : checking_order(s.keys))
            if (!find_key(g, k))
                return make_error(EINVAL, "[" + g + "] section doesn't support the option '" + k + "'");
        out.push_back(std::move(s));
    }
    if (!sub.empty()) return make_error(EINVAL, "Unused option '" + first_in_qdict_order(sub) + "' for [" + g + "]");
    return ok();
}

}  // namespace

Result<std::vector<Section>> parse_config(std::string_view text) {
    std::vector<Section> out;
    bool open = false;
    Section cur;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos + 1);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        if (line[0] == '\n' || line[0] == '#') continue;
        std::string group, id;
        if (line[0] == '[' && parse_header(line, group, id)) {
            if (open) {
                QIMG_TRY(check_file_section(cur));
                out.push_back(std::move(cur));
            }
            cur = Section{group, {}};
            if (!id.empty()) cur.keys.emplace_back("id", id);
            open = true;
            continue;
        }
        std::string key, value;
        if (!parse_key_line(line, key, value)) return make_error(EINVAL, "parse error");
        if (!open) return make_error(EINVAL, "no group defined");
        put(cur, std::move(key), std::move(value));
    }
    if (open) {
        QIMG_TRY(check_file_section(cur));
        out.push_back(std::move(cur));
    }
    // The id names a section; it is no rule key.
    for (Section &s : out) std::erase_if(s.keys, [](const auto &kv) { return kv.first == "id"; });
    return out;
}

Result<std::vector<Section>> sections_from_options(OptionMap &opts) {
    std::vector<Section> out;
    for (std::string_view g : kGroups) QIMG_TRY(group_from_options(opts, g, out));
    return out;
}

Result<std::vector<Rule>> make_rules(const std::vector<Section> &sections) {
    std::vector<Rule> rules;
    for (std::string_view g : kGroups)
        for (const Section &s : sections) {
            if (s.group != g) continue;
            QIMG_ASSIGN(Rule r, make_rule(s));
            rules.push_back(r);
        }
    return rules;
}

void Engine::event(BlkdebugEvent e) {
    std::lock_guard lock(mutex_);
    int64_t new_state = state_;
    bool state_set = false;
    std::vector<size_t> armed;
    for (size_t i = 0; i < rules_.size(); ++i) {
        const Rule &r = rules_[i];
        if (r.event != e || removed_(i) || (r.state && r.state != state_)) continue;
        if (r.action == Rule::Action::InjectError) {
            armed.push_back(i);
        } else if (!state_set) {
            // QEMU walks an event's rules newest first, so the set-state
            // rule defined first has the last word.
            new_state = r.new_state;
            state_set = true;
        }
    }
    if (!armed.empty()) armed_ = std::move(armed);
    state_ = new_state;
}

int Engine::check(uint64_t off, uint64_t len, IoType type) {
    std::lock_guard lock(mutex_);
    for (auto it = armed_.begin(); it != armed_.end(); ++it) {
        Rule &r = rules_[*it];
        const uint64_t at = static_cast<uint64_t>(r.offset);
        bool covers = r.offset == -1 || (len && at >= off && at - off < len);
        if (!covers || !(r.iotype_mask & (1u << int(type)))) continue;
        const int err = r.error;
        if (err && r.once) {
            removed_flags_.insert(*it);
            armed_.erase(it);
        }
        return err;
    }
    return 0;
}

int64_t Engine::state() const {
    std::lock_guard lock(mutex_);
    return state_;
}

}  // namespace qimg::blkdebug
