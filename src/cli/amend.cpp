// qemu-img amend: changes format options of an existing image in place
// (BlockNode::amend), validating `-o` against the driver's amend options
// as qemu-img does, with `-o help` listing them.
#include <getopt.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "block/driver.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "cli/create_opts.h"
#include "util/keyval.h"
#include "util/progress.h"

namespace qimg::cli {
namespace {

enum { kOptObject = 256, kOptImageOpts, kOptForce };

// print_amend_option_help(); returns the exit code.
int print_amend_help(const std::string &format) {
    const Driver *d = find_driver(format);
    if (!d) {
        error_reportf("Unknown file format '{}'", format);
        return 1;
    }
    if (d->amend_options.empty()) {
        error_reportf("Format driver '{}' does not support option amendment", format);
        return 1;
    }
    std::printf("Amend options for '%s':\n%s", format.c_str(), option_help_text(d->amend_options).c_str());
    return 0;
}

int run_amend(int argc, char **argv, const std::string &options, const std::string &fmt, const std::string &cache,
              bool quiet, bool image_opts, bool force) {
    // With -f, help needs no image (and no file name).
    if (!fmt.empty() && has_help_option(options)) return print_amend_help(fmt);
    if (optind != argc - 1) {
        error_report("Expecting one image file name");
        return 1;
    }
    std::string filename = argv[argc - 1];
    if (!parse_cache_mode(cache)) {
        error_reportf("Invalid cache option: {}", cache);
        return 1;
    }

    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt;
    a.image_opts = image_opts;
    a.writable = true;
    a.cache = cache;
    a.quiet = quiet;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;
    std::string format(node->driver_name());

    if (has_help_option(options)) return print_amend_help(format);
    const Driver *d = find_driver(format);
    if (!d || d->amend_options.empty()) {
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
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force", no_argument, nullptr, kOptForce},
        {nullptr, 0, nullptr, 0},
    };
    std::string options, fmt, cache = "writeback";
    bool have_options = false, quiet = false, image_opts = false, force = false, progress = false;
    int c;
    while ((c = getopt_long(argc, argv, ":ho:f:t:pq", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'o': {
            auto acc = accumulate_options(have_options ? options : std::string(), optarg);
            if (!acc) {
                error_report(acc.error().message);
                return 1;
            }
            options = *acc;
            have_options = true;
            break;
        }
        case 'f':
            fmt = optarg;
            break;
        case 't':
            cache = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        case kOptForce:
            force = true;
            break;
        }
    }
    if (!have_options) error_exit("Must specify options (-o)");
    progress::init(progress && !quiet, 1.0f);
    const int rc = run_amend(argc, argv, options, fmt, cache, quiet, image_opts, force);
    progress::end();
    return rc;
}

}  // namespace qimg::cli

