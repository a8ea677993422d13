// qemu-img check: runs the format's consistency check (BlockNode::check),
// optionally repairing, and reports as qemu-img does. Exit codes: 0 clean,
// 1 check failed, 2 corruptions, 3 leaks only, 63 format has no checks.
#include <cstdio>
#include <cstring>

#include "block/driver.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "util/qjson.h"

namespace qimg::cli {

int cmd_check(int argc, char **argv) {
    SharedOptions so;
    CheckRepair repair = CheckRepair::None;
    auto parse_repair = [&repair](const char *arg) {
        if (std::strcmp(arg, "leaks") == 0)
            repair = CheckRepair::Leaks;
        else if (std::strcmp(arg, "all") == 0)
            repair = CheckRepair::All;
        else
            error_exitf("Unknown option value for -r (expecting 'leaks' or 'all'): {}", arg);
        return true;
    };
    if (int rc = parse_options(argc, argv, so,
                               kOptFormat | kOptFormatLong | kOptSrcCache | kOptQuiet | kOptForceShare | kOptOutput |
                                   kOptObject | kOptImageOpts,
                               {action_arg('r', "repair", parse_repair)}))
        return rc;
    std::string filename = one_filename(argc, argv);

    OutputFormat out;
    if (!so.output_format(out)) return 1;
    if (!valid_cache_mode(so.src_cache, true)) return 1;
    const bool quiet = so.quiet;

    BlockOpener opener;
    ImageOpenArgs a = so.open_args(so.src_cache);
    a.writable = repair != CheckRepair::None;
    a.check = true;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;

    // bdrv_check(): a driver without checks is ENOTSUP before anything is read.
    const Driver *drv = driver_of(*node);
    Result<CheckReport> r = drv && drv->supports_check ? node->check(repair) : make_error(ENOTSUP, "");
    if (!r && r.error().code == ENOTSUP) {
        error_report("This image format does not support checks");
        return 63;
    }
    if (r && (r->corruptions_fixed || r->leaks_fixed)) {
        CheckReport fixed = *r;
        if (out == OutputFormat::Human)
            qprintf(quiet, fmt::format("The following inconsistencies were found and repaired:\n\n"
                                       "    {} leaked clusters\n"
                                       "    {} corruptions\n\n"
                                       "Double checking the fixed image now...\n",
                                       fixed.leaks_fixed, fixed.corruptions_fixed));
        r = node->check(CheckRepair::None);
        if (r) {
            r->leaks_fixed = fixed.leaks_fixed;
            r->corruptions_fixed = fixed.corruptions_fixed;
        }
    }
    if (!r) {
        error_reportf("Check failed: {}", std::strerror(r.error().code));
        return 1;
    }
    if (out == OutputFormat::Human)
        print_check_human(*r, quiet);
    else
        qprintf(quiet, to_qemu_json(check_report_json(filename, node->driver_name(), *r)) + "\n");

    if (r->check_errors) {
        error_report("Check failed");
        return 1;
    }
    if (r->corruptions) return 2;
    if (r->leaks) return 3;
    return 0;
}

}  // namespace qimg::cli
