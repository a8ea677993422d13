// qemu-img resize: absolute or relative (+N / -N) new virtual size, with
// --shrink required to lose data and --preallocation for the grown part.
// The work is BlockNode::truncate; this file is img_resize's checks and
// messages (and bdrv_co_truncate's generic ones).
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "cli/options.h"
#include "util/keyval.h"

namespace qimg::cli {
namespace {

// QEMU's BDRV_MAX_LENGTH: INT64_MAX rounded down to BDRV_MAX_ALIGNMENT (1 GiB).
constexpr int64_t kMaxLength = INT64_MAX / (int64_t{1} << 30) * (int64_t{1} << 30);

}  // namespace

int cmd_resize(int argc, char **argv) {
    // The size is taken off argv before getopt so that "-1G" is not an option.
    if (argc < 3) error_exit("Not enough arguments");
    const char *size = argv[--argc];

    SharedOptions so;
    bool shrink = false;
    Prealloc prealloc = Prealloc::Off;
    auto set_prealloc = [&prealloc](const char *arg) {
        auto p = parse_prealloc(arg);
        if (!p) error_reportf("Invalid preallocation mode '{}'", arg);
        if (p) prealloc = *p;
        return p.has_value();
    };
    if (int rc = parse_options(argc, argv, so, kOptFormat | kOptQuiet | kOptObject | kOptImageOpts,
                               {action_arg(0, "preallocation", set_prealloc), flag(0, "shrink", shrink)}))
        return rc;
    const bool quiet = so.quiet;
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

    if (so.image_opts && so.format) {
        error_report("--image-opts and --format are mutually exclusive");
        return 1;
    }
    BlockOpener opener;
    ImageOpenArgs a = so.open_args("writeback", true);
    a.resize = true;  // BDRV_O_RESIZE: the "resize" permission (lock byte 103)
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
