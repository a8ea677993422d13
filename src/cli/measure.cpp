// qemu-img measure: the size an image of the output format would need, for
// a new image (--size) or for a copy of an existing one. The arithmetic is
// the output format driver's (Driver::measure); this file is img_measure's
// argument handling and printing.
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <optional>

#include "block/create_opts.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "util/keyval.h"
#include "util/qjson.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

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
    SharedOptions so;
    OutputFormat output = OutputFormat::Human;
    std::string out_fmt = "raw";
    int64_t size_arg = -1;
    // Unlike the other subcommands, qemu-img measure lets getopt print its
    // own message ("measure: invalid option -- 'x'") and then shows the
    // help; and it checks --output when it sees it.
    if (int rc = parse_options(
            argc, argv, so, kOptFormat | kOptCreateOptions | kOptSnapshot | kOptForceShare | kOptObject | kOptImageOpts,
            {value('O', nullptr, out_fmt),
             action_arg(0, "output", [&output](const char *arg) { return parse_output_format(arg, output); }),
             number(0, "size", "image size", size_arg)},
            GetoptErrors::Getopt))
        return rc;
    const std::optional<std::string> &options = so.options;
    const uint64_t img_size = size_arg < 0 ? UINT64_MAX : static_cast<uint64_t>(size_arg);

    const char *filename = nullptr;
    if (argc - optind > 1) {
        error_report("At most one filename argument is allowed.");
        return 1;
    }
    if (argc - optind == 1) filename = argv[optind];
    if (!filename && (so.image_opts || so.format || !so.snapshot.empty())) {
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
        source = open_image(opener, filename, so.open_args("writeback"));
        if (!source) return 1;
        if (!so.snapshot.empty()) {
            if (auto r = so.snapshot.load(*source); !r) {
                error_reportf("Failed to load snapshot: {}", r.error().message);
                return 1;
            }
        }
    }

    const Driver *drv = find_format_that(out_fmt, &Driver::can_create, "image creation");
    if (!drv) return 1;
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
