// qemu-img resize: absolute or relative (+N / -N) new virtual size, with
// --shrink required to lose data and --preallocation for the grown part.
// The work is BlockNode::truncate; this file is img_resize's checks and
// messages (and bdrv_co_truncate's generic ones).
#include <getopt.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "cli/common.h"
#include "util/keyval.h"

namespace qimg::cli {
namespace {

enum : int { kOptObject = 256, kOptImageOpts, kOptPreallocation, kOptShrink };

// QEMU's BDRV_MAX_LENGTH: INT64_MAX rounded down to BDRV_MAX_ALIGNMENT (1 GiB).
constexpr int64_t kMaxLength = INT64_MAX / (int64_t{1} << 30) * (int64_t{1} << 30);

}  // namespace

int cmd_resize(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"preallocation", required_argument, nullptr, kOptPreallocation},
        {"shrink", no_argument, nullptr, kOptShrink},
        {nullptr, 0, nullptr, 0},
    };
    // The size is taken off argv before getopt so that "-1G" is not an option.
    if (argc < 3) error_exit("Not enough arguments");
    const char *size = argv[--argc];

    const char *fmt = nullptr;
    bool quiet = false, image_opts = false, shrink = false;
    Prealloc prealloc = Prealloc::Off;
    int c;
    while ((c = getopt_long(argc, argv, ":f:hq", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
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
        case kOptPreallocation: {
            auto p = parse_prealloc(optarg);
            if (!p) {
                error_reportf("Invalid preallocation mode '{}'", optarg);
                return 1;
            }
            prealloc = *p;
            break;
        }
        case kOptShrink:
            shrink = true;
            break;
        }
    }
    if (optind != argc - 1) error_exit("Expecting image file name and size");
    const char *filename = argv[optind++];

    int relative = 0;
    if (size[0] == '+') {
        relative = 1;
        size++;
    } else if (size[0] == '-') {
        relative = -1;
        size++;
    }
    std::string warning;
    auto parsed = parse_size_opt("size", size, &warning);
    if (!warning.empty()) warn_report(warning);
    if (!parsed) {
        error_report(parsed.error().message);
        return 1;
    }
    // QEMU keeps the size in an int64_t: values of 2^63 and above go negative.
    const int64_t n = static_cast<int64_t>(*parsed);

    if (image_opts && fmt) {
        error_report("--image-opts and --format are mutually exclusive");
        return 1;
    }
    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt ? fmt : "";
    a.image_opts = image_opts;
    a.writable = true;
    a.resize = true;  // BDRV_O_RESIZE: the "resize" permission (lock byte 103)
    a.quiet = quiet;
    NodePtr blk = open_image(opener, filename, a);
    if (!blk) return 1;

    // QEMU 7.2 sees lengths in whole sectors.
    const int64_t current = static_cast<int64_t>((blk->length() + 511) / 512 * 512);
    int64_t total;
    if (relative) {
        total = static_cast<int64_t>(static_cast<uint64_t>(current) +
                                     static_cast<uint64_t>(n) * static_cast<uint64_t>(static_cast<int64_t>(relative)));
    } else {
        total = n;
    }
    if (total <= 0) {
        error_report("New image size must be positive");
        return 1;
    }
    if (total <= current && prealloc != Prealloc::Off) {
        error_report("Preallocation can only be used for growing images");
        return 1;
    }
    if (total < current && !shrink) {
        error_report("Use the --shrink option to perform a shrink operation.");
        warn_report("Shrinking an image will delete all data beyond the shrunken image's end. Before performing "
                    "such an operation, make sure there is no important data there.");
        return 1;
    }
    if (total > kMaxLength) {
        error_reportf("offset({}) exceeds maximum({})", total, kMaxLength);
        return 1;
    }
    // The user expects exactly the size asked for.
    auto r = blk->truncate(static_cast<uint64_t>(total), prealloc, true);
    if (!r) {
        error_report(r.error().message);
        return 1;
    }
    if (auto f = blk->flush(); !f) {
        error_report(f.error().message);
        return 1;
    }
    if (!quiet) std::printf("Image resized.\n");
    return 0;
}

}  // namespace qimg::cli
