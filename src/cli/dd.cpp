// qemu-img dd: dd(1)-style operands (bs=, count=, if=, of=, skip=), the
// output image created with the input size (limited by count, minus skip),
// then the copy on the engine (engine/dd.h): the result and the errors of
// qemu-img's block-by-block img_dd(), with reads in parallel.
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "block/create.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "engine/dd.h"
#include "engine/pipeline.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

struct DdArgs {
    int64_t bs = 512, count = 0, skip = 0;
    std::string in, out;
    bool has_count = false, has_skip = false, has_in = false, has_out = false;
};

// One "name=value" operand; false after reporting.
bool parse_operand(const std::string &arg, DdArgs &d) {
    size_t eq = arg.find('=');
    // QEMU works on C strings: the name ends at the first '=' (or NUL).
    std::string name = arg.substr(0, std::min(eq, arg.find('\0')));
    if (eq == std::string::npos) {
        error_reportf("unrecognized operand {}", arg);
        return false;
    }
    std::string value = arg.substr(eq + 1);
    if (name == "bs") return parse_number("bs", value, 1, INT_MAX, d.bs);
    if (name == "count") return d.has_count = true, parse_number("count", value, d.count);
    if (name == "if") return d.has_in = true, d.in = value, true;
    if (name == "of") return d.has_out = true, d.out = value, true;
    if (name == "skip") return d.has_skip = true, parse_number("skip", value, d.skip);
    error_reportf("unrecognized operand {}", name);
    return false;
}

}  // namespace

int cmd_dd(int argc, char **argv) {
    SharedOptions so;
    std::string out_fmt = "raw";
    if (int rc = parse_options(argc, argv, so, kOptFormat | kOptForceShare | kOptObject | kOptImageOpts,
                               {value('O', nullptr, out_fmt)}))
        return rc;
    DdArgs d;
    for (int i = optind; i < argc; ++i)
        if (!parse_operand(argv[i], d)) return 1;
    if (!d.has_in || !d.has_out) {
        error_report("Must specify both input and output files");
        return 1;
    }
    BlockOpener opener;
    NodePtr src = open_image(opener, d.in, so.open_args("writeback"));
    if (!src) return 1;

    // Sizes as QEMU sees them: whole sectors.
    int64_t size = static_cast<int64_t>((src->length() + 511) / 512 * 512);
    if (d.has_count && d.count <= INT64_MAX / d.bs && d.count * d.bs < size) size = d.count * d.bs;
    bool skip_past_end = d.has_skip && (d.skip > INT64_MAX / d.bs || size < d.bs * d.skip);
    int64_t out_size = skip_past_end ? 0 : size - d.bs * d.skip;

    ImageSpec spec;
    spec.format = out_fmt;
    spec.filename = d.out;
    spec.size = static_cast<uint64_t>(out_size);
    spec.unknown_format_message = "Unknown file format";
    auto plan = plan_image(spec);
    if (!plan) {
        error_report(plan.error().message);
        return 1;
    }
    if (auto r = create_image(opener, *plan, true); !r) {
        error_reportf("{}: error while creating output image: {}", d.out, r.error().message);
        return 1;
    }
    ImageOpenArgs oa;
    oa.format = out_fmt;
    oa.writable = true;
    NodePtr dst = open_image(opener, d.out, oa);
    if (!dst) return 1;

    int64_t in_pos;
    if (skip_past_end) {
        // Like dd(1): an empty output image, and a message.
        error_reportf("{}: cannot skip to specified offset", d.in);
        in_pos = size;
    } else {
        in_pos = d.skip * d.bs;
    }
    engine::DdOptions o;
    o.in_start = static_cast<uint64_t>(in_pos);
    o.in_end = static_cast<uint64_t>(size);
    o.block = static_cast<uint64_t>(d.bs);
    o.write_behind = default_write_behind();
    if (auto r = engine::dd_copy(*src, *dst, o); !r) {
        error_report(r.error().message);
        return 1;
    }
    if (auto r = dst->flush(); !r) {
        error_report(r.error().message);
        return 1;
    }
    return 0;
}

}  // namespace qimg::cli
