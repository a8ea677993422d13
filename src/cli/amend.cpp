// qemu-img amend: changes format options of an existing image in place
// (BlockNode::amend), validating `-o` against the driver's amend options
// as qemu-img does, with `-o help` listing them.
#include <algorithm>
#include <cstdio>
#include <map>

#include "block/create_opts.h"
#include "block/driver.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "util/keyval.h"
#include "util/progress.h"

namespace qimg::cli {
namespace {

// print_amend_option_help(); returns the exit code.
int print_amend_help(const std::string &format) {
    const Driver *d = find_format_that(format, &Driver::can_amend, "option amendment");
    if (!d) return 1;
    std::printf("Amend options for '%s':\n%s", format.c_str(), option_help_text(d->amend_options).c_str());
    return 0;
}

int run_amend(int argc, char **argv, const SharedOptions &so, bool force) {
    const std::string &options = *so.options;
    const std::string fmt = so.format.value_or("");
    // With -f, help needs no image (and no file name).
    if (!fmt.empty() && has_help_option(options)) return print_amend_help(fmt);
    if (optind != argc - 1) {
        error_report("Expecting one image file name");
        return 1;
    }
    std::string filename = argv[argc - 1];
    if (!valid_cache_mode(so.cache, false)) return 1;

    BlockOpener opener;
    NodePtr node = open_image(opener, filename, so.open_args(so.cache, true));
    if (!node) return 1;
    std::string format(node->driver_name());

    if (has_help_option(options)) return print_amend_help(format);
    const Driver *d = find_driver(format);
    if (!d || !d->can_amend()) {
        error_reportf("Format driver '{}' does not support option amendment", format);
        return 1;
    }
    CreateOpts opts(d->amend_options);
    if (auto p = opts.parse(options); !p) {
        std::string msg = p.error().message;
        // An option known to creation only gets QEMU's hint line.
        CreateOpts both(merge_create_options(d->amend_options, &d->create_options));
        if (both.parse(options)) msg += "\nThis option is only supported for image creation";
        error_report(msg);
        return 1;
    }
    // qemu-img reports 0% and 100% around the driver's own progress.
    progress::print(0.f, 0);
    auto r = node->amend(opts.values(), force, [](int64_t done, int64_t total) {
        if (total > 0) progress::print(100.f * float(done) / float(total), 0);
    });
    progress::print(100.f, 0);
    if (!r) {
        error_report(r.error().message);
        return 1;
    }
    return 0;
}

}  // namespace

int cmd_amend(int argc, char **argv) {
    SharedOptions so;
    bool force = false;
    if (int rc = parse_options(argc, argv, so,
                               kOptCreateOptions | kOptFormat | kOptCache | kOptProgress | kOptQuiet | kOptObject |
                                   kOptImageOpts,
                               {flag(0, "force", force)}))
        return rc;
    if (!so.options) error_exit("Must specify options (-o)");
    progress::init(so.progress, 1.0f);
    const int rc = run_amend(argc, argv, so, force);
    progress::end();
    return rc;
}

}  // namespace qimg::cli

