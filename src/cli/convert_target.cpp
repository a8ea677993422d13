// Target creation for convert and dd (see convert_target.h), on the shared
// creation-option code of cli/create_opts.h: QEMU's qemu_opts_append of the
// format's and the protocol's lists, QemuOpts parsing and messages, and
// add_old_style_options() for -B/-F.
#include "cli/convert_target.h"

#include "cli/common.h"
#include "cli/create_opts.h"

namespace qimg::cli {

Result<TargetPlan> plan_target(const std::string &fmt, const std::string &filename, const std::string &options,
                               uint64_t size, const std::string &backing, const std::string &backing_fmt,
                               const char *unknown_fmt_msg) {
    const Driver *d = find_driver(fmt);
    if (!d || d->is_protocol)
        return make_error(EINVAL, unknown_fmt_msg ? std::string(unknown_fmt_msg) : "Unknown file format '" + fmt + "'");
    QIMG_ASSIGN(const Driver *proto, find_protocol_driver(filename));
    if (d->create_options.empty() || !d->create)
        return make_error(ENOTSUP, "Format driver '" + fmt + "' does not support image creation");
    if (proto->create_options.empty())
        return make_error(ENOTSUP, "Protocol driver '" + proto->name + "' does not support image creation");
    CreateOpts opts(merge_create_options(d->create_options, &proto->create_options));
    if (!options.empty()) QIMG_TRY(opts.parse(options));
    QIMG_TRY(opts.set_number("size", size));
    if (!backing.empty() && !opts.set("backing_file", backing))
        return make_error(EINVAL, "Backing file not supported for file format '" + fmt + "'");
    if (!backing_fmt.empty() && !opts.set("backing_fmt", backing_fmt))
        return make_error(EINVAL, "Backing file format not supported for file format '" + fmt + "'");
    TargetPlan plan;
    plan.format = d;
    plan.filename = filename;
    plan.options = opts.values();
    plan.options["size"] = std::to_string(size);
    return plan;
}

Result<void> create_target(BlockOpener &opener, const TargetPlan &plan) {
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
    return print_create_option_help(filename ? filename->c_str() : nullptr, fmt);
}

}  // namespace qimg::cli
