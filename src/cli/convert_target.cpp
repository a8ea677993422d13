// Target creation for convert and dd (see convert_target.h).
#include "cli/convert_target.h"

#include <algorithm>
#include <cstdio>

#include "cli/common.h"
#include "util/keyval.h"

namespace qimg::cli {
namespace {

const char *type_name(CreateOption::Type t) {
    switch (t) {
    case CreateOption::Type::String: return "str";
    case CreateOption::Type::Bool: return "bool (on/off)";
    case CreateOption::Type::Number: return "num";
    case CreateOption::Type::Size: return "size";
    }
    return "str";
}

const CreateOption *find_option(const std::vector<const CreateOption *> &list, const std::string &name) {
    for (auto *o : list)
        if (o->name == name) return o;
    return nullptr;
}

std::vector<const CreateOption *> option_list(const Driver *fmt, bool with_protocol) {
    std::vector<const CreateOption *> out;
    for (auto &o : fmt->create_options) out.push_back(&o);
    if (with_protocol) {
        if (const Driver *file = find_driver("file"))
            for (auto &o : file->create_options)
                if (!find_option(out, o.name)) out.push_back(&o);
    }
    return out;
}

}  // namespace

Result<TargetPlan> plan_target(const std::string &fmt, const std::string &filename, const std::string &options,
                               uint64_t size, const std::string &backing, const std::string &backing_fmt,
                               const char *unknown_fmt_msg) {
    const Driver *d = find_driver(fmt);
    if (!d || d->is_protocol)
        return make_error(EINVAL, unknown_fmt_msg ? std::string(unknown_fmt_msg) : "Unknown file format '" + fmt + "'");
    if (!d->create) return make_error(ENOTSUP, "Format driver '" + fmt + "' does not support image creation");
    TargetPlan plan;
    plan.format = d;
    plan.filename = filename;
    auto list = option_list(d, true);
    if (!options.empty()) {
        QIMG_ASSIGN(OptList kv, parse_opts(options));
        for (auto &[k, v] : kv) {
            const CreateOption *o = find_option(list, k);
            if (!o) return make_error(EINVAL, "Invalid parameter '" + k + "'");
            if (o->type == CreateOption::Type::Size) QIMG_TRY(parse_size_opt(k, v));
            else if (o->type == CreateOption::Type::Bool) QIMG_TRY(parse_bool_opt(k, v));
            else if (o->type == CreateOption::Type::Number) QIMG_TRY(parse_number_opt(k, v));
            plan.options[k] = v;
        }
    }
    plan.options["size"] = std::to_string(size);
    if (!backing.empty() && !find_option(list, "backing_file"))
        return make_error(EINVAL, "Backing file not supported for file format '" + fmt + "'");
    if (!backing.empty()) plan.options["backing_file"] = backing;
    if (!backing_fmt.empty() && !find_option(list, "backing_fmt"))
        return make_error(EINVAL, "Backing file format not supported for file format '" + fmt + "'");
    if (!backing_fmt.empty()) plan.options["backing_fmt"] = backing_fmt;
    return plan;
}

Result<void> create_target(BlockOpener &opener, const TargetPlan &plan) {
    auto it = plan.options.find("preallocation");
    if (it != plan.options.end()) {
        const std::string &p = it->second;
        if (p != "off" && p != "falloc" && p != "full" && p != "metadata")
            return make_error(EINVAL, "invalid parameter value: " + p);
    }
    CreateRequest req;
    req.filename = plan.filename;
    req.size = std::stoull(plan.options.at("size"));
    req.options = plan.options;
    req.options.erase("size");
    req.opener = &opener;
    req.quiet = true;
    return plan.format->create(req);
}

int print_target_option_help(const std::string &fmt, const std::string *filename) {
    const Driver *d = find_driver(fmt);
    if (!d || d->is_protocol) {
        error_reportf("Unknown file format '{}'", fmt);
        return 1;
    }
    if (!d->create) {
        error_reportf("Format driver '{}' does not support image creation", fmt);
        return 1;
    }
    auto list = option_list(d, filename != nullptr);
    std::sort(list.begin(), list.end(), [](auto *a, auto *b) { return a->name < b->name; });
    if (filename) std::printf("Supported options:\n");
    else std::printf("Supported %s options:\n", fmt.c_str());
    for (auto *o : list) {
        std::string head = o->name + "=<" + type_name(o->type) + ">";
        std::printf("  %-22s - %s\n", head.c_str(), o->help.c_str());
    }
    if (!filename)
        std::printf("\nThe protocol level may support further options.\n"
                    "Specify the target filename to include those options.\n");
    return 0;
}

}  // namespace qimg::cli
