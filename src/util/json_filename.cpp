// json: filenames and --image-opts strings as flat option maps; see
// json_filename.h.
#include "util/json_filename.h"

#include <cctype>
#include <cerrno>

#include <fmt/format.h>

#include "util/keyval.h"
#include "util/qjson.h"

namespace qimg {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kJsonPrefix = "json:";

std::string option_string(const Json &v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "on" : "off";
    if (v.is_object()) return "{}";  // only empty ones get here
    if (v.is_array()) return "[]";
    return to_qemu_json(v, false);  // numbers, in QNum's formats
}

// `Leaf` turns a scalar into the map's value type.
template <class Map, class Leaf>
void flatten_into(const Json &v, const std::string &key, Map &out, Leaf leaf) {
    if (v.is_object() && !v.empty()) {
        for (const std::string &k : qdict_order(v)) flatten_into(v.at(k), key + "." + k, out, leaf);
    } else if (v.is_array() && !v.empty()) {
        for (size_t i = 0; i < v.size(); ++i) flatten_into(v[i], key + "." + std::to_string(i), out, leaf);
    } else if (!v.is_null()) {
        out[key] = leaf(v);
    } else {
        out.erase(key);  // a nested null still replaces, then is dropped
    }
}

template <class Map, class Leaf>
Map flatten_root(const Json &obj, Leaf leaf) {
    Map out;
    if (!obj.is_object()) return out;
    // Top-level scalars stay where they are; flattened nested values are put
    // over them (qdict_flatten() works in place on the root dictionary).
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        const bool container = (it->is_object() || it->is_array()) && !it->empty();
        if (!container && !it->is_null()) out[it.key()] = leaf(*it);
    }
    for (const std::string &k : qdict_order(obj)) {
        const Json &v = obj.at(k);
        if ((v.is_object() || v.is_array()) && !v.empty()) flatten_into(v, k, out, leaf);
    }
    return out;
}

}  // namespace

bool is_json_filename(std::string_view s) { return s.starts_with(kJsonPrefix); }

Result<nlohmann::ordered_json> parse_json_filename_tree(std::string_view s) {
    if (s.starts_with(kJsonPrefix)) s.remove_prefix(kJsonPrefix.size());
    auto parsed = parse_qemu_json(s);
    if (!parsed) return parsed.error().prepended("Could not parse the JSON options: ");
    if (!parsed->is_object()) return make_error(EINVAL, "Invalid JSON object given");
    return std::move(*parsed);
}

OptionMap flatten_json_options(const nlohmann::ordered_json &obj) {
    return flatten_root<OptionMap>(obj, option_string);
}

std::map<std::string, nlohmann::ordered_json> flatten_json_typed(const nlohmann::ordered_json &obj) {
    return flatten_root<std::map<std::string, Json>>(obj, [](const Json &v) { return v; });
}

Result<OptionMap> parse_json_filename(std::string_view s) {
    QIMG_ASSIGN(Json tree, parse_json_filename_tree(s));
    return flatten_json_options(tree);
}

Result<OptionMap> parse_image_opts(std::string_view s, std::vector<std::string> *warnings) {
    // opts_parse_id(): the first id= element, scanned without implied key.
    QIMG_ASSIGN(OptList plain, parse_opts(s));
    const std::string *id = nullptr;
    for (const auto &[k, v] : plain) {
        if (k == "id") {
            id = &v;
            break;
        }
    }
    if (id && !id_wellformed(*id)) {
        return make_error(EINVAL, "Parameter 'id' expects an identifier\n"
                                  "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
    }
    QIMG_ASSIGN(OptList opts, parse_opts(s, "file", warnings));
    OptionMap out;
    if (id) out["id"] = *id;
    for (auto &[k, v] : opts) {
        if (k == "id") continue;  // opts_do_parse() drops them; the first is the QemuOpts id
        out[k] = std::move(v);
    }
    return out;
}

OptionMap extract_prefix(OptionMap &opts, std::string_view prefix) {
    OptionMap sub;
    const std::string dotted = std::string(prefix) + ".";
    for (auto it = opts.lower_bound(dotted); it != opts.end() && it->first.starts_with(dotted);) {
        sub.emplace(it->first.substr(dotted.size()), std::move(it->second));
        it = opts.erase(it);
    }
    return sub;
}

}  // namespace qimg
