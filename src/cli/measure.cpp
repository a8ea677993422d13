// qemu-img measure: the size an image of the output format would need, for
// a new image (--size) or for a copy of an existing one. The arithmetic is
// the output format driver's (Driver::measure); this file is img_measure's
// argument handling and printing.
#include <getopt.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <optional>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/create_opts.h"
#include "util/keyval.h"
#include "util/qjson.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

enum : int { kOptImageOpts = 256, kOptObject, kOptOutput, kOptSize };

void print_info(const MeasureInfo &info, OutputFormat of) {
    if (of == OutputFormat::Human) {
        std::printf("required size: %" PRIu64 "\n", info.required);
        std::printf("fully allocated size: %" PRIu64 "\n", info.fully_allocated);
        if (info.has_bitmaps) std::printf("bitmaps size: %" PRIu64 "\n", info.bitmaps);
        return;
    }
    nlohmann::ordered_json j;
    j["required"] = info.required;
    j["fully-allocated"] = info.fully_allocated;
    if (info.has_bitmaps) j["bitmaps"] = info.bitmaps;
    std::printf("%s\n", to_qemu_json(j).c_str());
}

}  // namespace

int cmd_measure(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"object", required_argument, nullptr, kOptObject},
        {"output", required_argument, nullptr, kOptOutput},
        {"size", required_argument, nullptr, kOptSize},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    OutputFormat output = OutputFormat::Human;
    const char *fmt = nullptr;
    std::string out_fmt = "raw";
    std::optional<std::string> options;
    SnapshotSelector snapshot;  // -l
    bool force_share = false, image_opts = false;
    uint64_t img_size = UINT64_MAX;

    // Unlike the other subcommands, qemu-img measure lets getopt print its
    // own message ("measure: invalid option -- 'x'") and then shows the help.
    opterr = 1;
    int c;
    while ((c = getopt_long(argc, argv, "hf:O:o:l:U", kLong, nullptr)) != -1) {
        switch (c) {
        case '?':
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
            break;
        case 'O':
            out_fmt = optarg;
            break;
        case 'o': {
            auto acc = accumulate_options(options.value_or(""), optarg);
            if (!acc) {
                error_report(acc.error().message);
                return 1;
            }
            options = *acc;
            break;
        }
        case 'l':
            if (!snapshot.parse(optarg)) return 1;
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
        case kOptOutput:
            if (!parse_output_format(optarg, output)) return 1;
            break;
        case kOptSize: {
            auto n = cvtnum("image size", optarg, g_argv0);
            if (!n) {
                error_report(n.error().message);
                return 1;
            }
            img_size = static_cast<uint64_t>(*n);
            break;
        }
        }
    }

    const char *filename = nullptr;
    if (argc - optind > 1) {
        error_report("At most one filename argument is allowed.");
        return 1;
    }
    if (argc - optind == 1) filename = argv[optind];
    if (!filename && (image_opts || fmt || !snapshot.empty())) {
        error_report("--image-opts, -f, and -l require a filename argument.");
        return 1;
    }
    if (filename && img_size != UINT64_MAX) {
        error_report("--size N cannot be used together with a filename.");
        return 1;
    }
    if (!filename && img_size == UINT64_MAX) {
        error_report("Either --size N or one filename must be specified.");
        return 1;
    }

    BlockOpener opener;
    NodePtr source;
    if (filename) {
        ImageOpenArgs a;
        a.format = fmt ? fmt : "";
        a.image_opts = image_opts;
        a.force_share = force_share;
        source = open_image(opener, filename, a);
        if (!source) return 1;
        if (!snapshot.empty()) {
            if (auto r = snapshot.load(*source); !r) {
                error_reportf("Failed to load snapshot: {}", r.error().message);
                return 1;
            }
        }
    }

    const Driver *drv = find_driver(out_fmt);
    if (!drv) {
        error_reportf("Unknown file format '{}'", out_fmt);
        return 1;
    }
    if (drv->create_options.empty()) {
        error_reportf("Format driver '{}' does not support image creation", drv->name);
        return 1;
    }
    const Driver *file = find_driver("file");
    CreateOpts opts(merge_create_options(drv->create_options, file ? &file->create_options : nullptr));
    if (options) {
        if (auto r = opts.parse(*options); !r) {
            error_report(r.error().message);
            error_reportf("Invalid options for file format '{}'", out_fmt);
            return 1;
        }
    }
    if (img_size != UINT64_MAX) (void)opts.set_number("size", img_size);

    if (!drv->measure) {
        error_reportf("Block driver '{}' does not support size measurement", drv->name);
        return 1;
    }
    MeasureRequest req;
    req.options = opts.values();
    req.source = source.get();
    auto info = drv->measure(req);
    if (!info) {
        error_report(info.error().message);
        return 1;
    }
    print_info(*info, output);
    return 0;
}

}  // namespace qimg::cli
