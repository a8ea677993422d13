// qemu-img check: runs the format's consistency check (BlockNode::check),
// optionally repairing, and reports as qemu-img does. Exit codes: 0 clean,
// 1 check failed, 2 corruptions, 3 leaks only, 63 format has no checks.
#include <getopt.h>

#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "util/qjson.h"

namespace qimg::cli {
namespace {

enum { kOptOutput = 256, kOptObject, kOptImageOpts };

}  // namespace

int cmd_check(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"format", required_argument, nullptr, 'f'},
        {"repair", required_argument, nullptr, 'r'},
        {"output", required_argument, nullptr, kOptOutput},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt, cache = "writeback";
    const char *output = nullptr;
    bool image_opts = false, force_share = false, quiet = false;
    CheckRepair repair = CheckRepair::None;
    int c;
    while ((c = getopt_long(argc, argv, ":hf:r:T:qU", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
            break;
        case 'r':
            if (std::strcmp(optarg, "leaks") == 0)
                repair = CheckRepair::Leaks;
            else if (std::strcmp(optarg, "all") == 0)
                repair = CheckRepair::All;
            else
                error_exitf("Unknown option value for -r (expecting 'leaks' or 'all'): {}", optarg);
            break;
        case kOptOutput:
            output = optarg;
            break;
        case 'T':
            cache = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            force_share = true;
            break;
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        }
    }
    if (optind != argc - 1) error_exit("Expecting one image file name");
    std::string filename = argv[optind];

    OutputFormat out = OutputFormat::Human;
    if (output && !parse_output_format(output, out)) return 1;
    if (!parse_cache_mode(cache)) {
        error_reportf("Invalid source cache option: {}", cache);
        return 1;
    }

    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt;
    a.image_opts = image_opts;
    a.writable = repair != CheckRepair::None;
    a.force_share = force_share;
    a.cache = cache;
    a.quiet = quiet;
    a.check = true;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;

    auto r = node->check(repair);
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
