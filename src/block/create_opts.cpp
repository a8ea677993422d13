// Creation options (see create_opts.h): QemuOpts semantics over a driver's
// CreateOption list.
#include "block/create_opts.h"

#include <algorithm>
#include <cinttypes>

#include "util/progname.h"
#include "util/keyval.h"
#include "util/size.h"

namespace qimg {

std::vector<CreateOption> merge_create_options(const std::vector<CreateOption> &format,
                                               const std::vector<CreateOption> *protocol) {
    std::vector<CreateOption> out;
    auto append = [&out](const std::vector<CreateOption> &list) {
        for (const CreateOption &o : list) {
            bool present = std::any_of(out.begin(), out.end(), [&](const CreateOption &x) { return x.name == o.name; });
            if (!present) out.push_back(o);
        }
    };
    append(format);
    if (protocol) append(*protocol);
    return out;
}

static const char *type_name(CreateOption::Type t) {
    switch (t) {
    case CreateOption::Type::String: return "str";
    case CreateOption::Type::Bool: return "bool (on/off)";
    case CreateOption::Type::Number: return "num";
    case CreateOption::Type::Size: return "size";
    }
    return "str";
}

std::string option_help_text(const std::vector<CreateOption> &list) {
    std::vector<std::string> lines;
    for (const CreateOption &o : list) {
        std::string line = "  " + o.name + "=<" + type_name(o.type) + ">";
        if (!o.help.empty()) {
            if (line.size() < 24) line.append(24 - line.size(), ' ');
            line += " - " + o.help;
        }
        lines.push_back(std::move(line));
    }
    std::sort(lines.begin(), lines.end());
    if (lines.empty()) return "No options available.\n";
    std::string out;
    for (const std::string &l : lines) out += l + "\n";
    return out;
}

// ------------------------------------------------------------- CreateOpts

const CreateOption *CreateOpts::desc(std::string_view name) const {
    for (const CreateOption &o : list_)
        if (o.name == name) return &o;
    return nullptr;
}

const OptValue *CreateOpts::find(std::string_view name) const {
    for (auto it = values_.rbegin(); it != values_.rend(); ++it)
        if (it->name == name) return &*it;
    return nullptr;
}

std::optional<std::string> CreateOpts::get(std::string_view name) const {
    const OptValue *v = find(name);
    if (!v) return std::nullopt;
    return v->str;
}

uint64_t CreateOpts::get_number(std::string_view name, uint64_t dflt) const {
    if (const OptValue *v = find(name)) return v->number;
    // qemu_opt_get_size() falls back to the list's default string.
    if (const CreateOption *d = desc(name); d && !d->default_value.empty()) {
        if (auto n = parse_size(d->default_value)) return *n;
    }
    return dflt;
}

Result<void> CreateOpts::set(std::string_view name, std::string_view value) {
    const CreateOption *d = desc(name);
    if (!d) return make_error(EINVAL, "Invalid parameter '" + std::string(name) + "'");
    OptValue v;
    v.name = std::string(name);
    v.str = std::string(value);
    v.type = d->type;
    switch (d->type) {
    case CreateOption::Type::String:
        break;
    case CreateOption::Type::Bool: {
        QIMG_ASSIGN(v.boolean, parse_bool_opt(name, value));
        break;
    }
    case CreateOption::Type::Number: {
        QIMG_ASSIGN(v.number, parse_number_opt(name, value));
        break;
    }
    case CreateOption::Type::Size: {
        std::string warning;
        QIMG_ASSIGN(v.number, parse_size_opt(name, value, &warning));
        if (!warning.empty()) report_warning(warning);
        break;
    }
    }
    values_.push_back(std::move(v));
    return ok();
}

Result<void> CreateOpts::set_number(std::string_view name, uint64_t value) {
    const CreateOption *d = desc(name);
    if (!d) return make_error(EINVAL, "Invalid parameter '" + std::string(name) + "'");
    OptValue v;
    v.name = std::string(name);
    v.str = std::to_string(static_cast<int64_t>(value));
    v.type = d->type;
    v.number = value;
    values_.push_back(std::move(v));
    return ok();
}

Result<void> CreateOpts::parse(std::string_view optstr) {
    QIMG_ASSIGN(OptList list, parse_opts(optstr));
    for (const auto &[k, v] : list) {
        if (k == "id") continue;  // QemuOpts takes "id" as the instance name
        QIMG_TRY(set(k, v));
    }
    return ok();
}

static std::string escape_commas(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == ',') out += ',';
        out += c;
    }
    return out;
}

std::string CreateOpts::print() const {
    std::string out;
    const char *sep = "";
    for (const CreateOption &d : list_) {
        const OptValue *v = find(d.name);
        if (!v && d.default_value.empty()) continue;
        out += sep;
        out += d.name + "=";
        if (d.type == CreateOption::Type::String) {
            out += escape_commas(v ? v->str : d.default_value);
        } else if (v && (d.type == CreateOption::Type::Size || d.type == CreateOption::Type::Number)) {
            out += std::to_string(static_cast<int64_t>(v->number));
        } else {
            out += v ? v->str : d.default_value;
        }
        sep = " ";
    }
    return out;
}

std::map<std::string, std::string> CreateOpts::values() const {
    std::map<std::string, std::string> out;
    for (const OptValue &v : values_) {  // later settings overwrite earlier ones
        switch (v.type) {
        case CreateOption::Type::String: out[v.name] = v.str; break;
        case CreateOption::Type::Bool: out[v.name] = v.boolean ? "on" : "off"; break;
        case CreateOption::Type::Number:
        case CreateOption::Type::Size: out[v.name] = std::to_string(v.number); break;
        }
    }
    return out;
}

}  // namespace qimg
