// qemu-img bitmap: adds, removes, clears, enables, disables and merges
// persistent dirty bitmaps, in command-line order, through
// BlockNode::bitmap_action. Formats without bitmaps answer with the
// BlockNode defaults, worded as qemu-img.
#include <algorithm>
#include <cstdio>
#include <random>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

const char *op_name(BitmapAction::Kind k) {
    switch (k) {
    case BitmapAction::Kind::Add: return "add";
    case BitmapAction::Kind::Remove: return "remove";
    case BitmapAction::Kind::Clear: return "clear";
    case BitmapAction::Kind::Enable: return "enable";
    case BitmapAction::Kind::Disable: return "disable";
    case BitmapAction::Kind::Merge: return "merge";
    }
    return "";
}

// QEMU names the format node of the image "#block1NN": the second node it
// creates (after the protocol node), plus two random digits (id_generate()).
std::string qemu_node_name() {
    std::random_device rd;
    return fmt::format("#block1{:02d}", rd() % 100);
}

}  // namespace

int cmd_bitmap(int argc, char **argv) {
    SharedOptions so;
    std::optional<std::string> src_fmt, src_filename;
    int64_t granularity = 0;
    std::vector<BitmapAction> actions;
    auto push = [&actions](BitmapAction::Kind k) {
        return [&actions, k](const char *src) {
            BitmapAction a;
            a.kind = k;
            if (src) a.src_name = src;
            actions.push_back(a);
            return true;
        };
    };
    if (int rc = parse_options(argc, argv, so, kOptFormat | kOptObject | kOptImageOpts,
                               {
                                   value('b', "source-file", src_filename),
                                   value('F', "source-format", src_fmt),
                                   number('g', "granularity", "granularity", granularity),
                                   {0, "add", false, push(BitmapAction::Kind::Add)},
                                   {0, "remove", false, push(BitmapAction::Kind::Remove)},
                                   {0, "clear", false, push(BitmapAction::Kind::Clear)},
                                   {0, "enable", false, push(BitmapAction::Kind::Enable)},
                                   {0, "disable", false, push(BitmapAction::Kind::Disable)},
                                   {0, "merge", true, push(BitmapAction::Kind::Merge)},
                               }))
        return rc;
    auto given = [&actions](BitmapAction::Kind k) {
        return std::any_of(actions.begin(), actions.end(), [k](const BitmapAction &a) { return a.kind == k; });
    };
    const bool add = given(BitmapAction::Kind::Add), merge = given(BitmapAction::Kind::Merge);
    const bool have_src = src_filename.has_value(), have_src_fmt = src_fmt.has_value();
    if (actions.empty()) {
        error_report("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
        return 1;
    }
    if (granularity && !add) {
        error_report("granularity only supported with --add");
        return 1;
    }
    if (have_src_fmt && !have_src) {
        error_report("-F only supported with -b");
        return 1;
    }
    if (have_src && !merge) {
        error_report("Merge bitmap source file only supported with --merge");
        return 1;
    }
    if (optind != argc - 2) {
        error_report("Expecting filename and bitmap name");
        return 1;
    }
    std::string filename = argv[optind];
    std::string bitmap = argv[optind + 1];

    // Bitmaps live in this image alone: no backing chain is needed.
    BlockOpener opener;
    ImageOpenArgs a = so.open_args("writeback", true);
    a.no_backing = true;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;
    NodePtr src = node;
    BlockOpener src_opener;
    if (have_src) {
        ImageOpenArgs sa;
        sa.format = src_fmt.value_or("");
        sa.no_backing = true;
        src = open_image(src_opener, *src_filename, sa);
        if (!src) return 1;
    }

    std::string node_name = qemu_node_name();
    // QEMU passes the granularity on as a uint32 (-g 4G becomes 0).
    const uint32_t granularity32 = static_cast<uint32_t>(granularity);
    for (BitmapAction &act : actions) {
        act.name = bitmap;
        act.node_name = node_name;
        act.src = src.get();
        Result<void> r;
        if (act.kind == BitmapAction::Kind::Add && bitmap.empty()) {
            r = make_error(EINVAL, "Bitmap name cannot be empty");
        } else if (act.kind == BitmapAction::Kind::Add && granularity &&
                   (granularity32 < 512 || (granularity32 & (granularity32 - 1)) != 0)) {
            r = make_error(EINVAL, "Granularity must be power of 2 and at least 512");
        } else {
            act.granularity = granularity32;
            r = node->bitmap_action(act);
        }
        if (!r) {
            error_reportf("Operation {} on bitmap {} failed: {}", op_name(act.kind), bitmap, r.error().message);
            return 1;
        }
    }
    // Changes reach the image when it is closed, as in QEMU.
    auto f = node->flush();
    if (!f) {
        error_report(f.error().message);
        return 1;
    }
    return 0;
}

}  // namespace qimg::cli
