// qemu-img map: the allocation map of an image through its backing chain,
// as qemu-img prints it: extents from block/status.h's chain_status(),
// merged when contiguous and alike (qemu-img.c entry_mergeable), in the
// human table ("Offset Length Mapped to File") or as JSON lines.
#include <getopt.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>

#include "block/status.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

enum { kOptOutput = 256, kOptObject, kOptImageOpts };

struct MapEntry {
    uint64_t start = 0, length = 0;
    bool data = false, zero = false, present = false;
    bool has_offset = false;
    uint64_t offset = 0;
    int depth = 0;
    const std::string *filename = nullptr;  // host file, with has_offset
};

bool mergeable(const MapEntry &a, const MapEntry &b) {
    if (a.length == 0) return false;
    if (a.zero != b.zero || a.data != b.data || a.depth != b.depth || a.present != b.present ||
        (a.filename != nullptr) != (b.filename != nullptr) || a.has_offset != b.has_offset)
        return false;
    if (a.filename && *a.filename != *b.filename) return false;
    if (a.has_offset && a.offset + a.length != b.offset) return false;
    return true;
}

Result<MapEntry> entry_at(BlockNode &top, uint64_t off, uint64_t len) {
    QIMG_ASSIGN(ChainStatus s, layer_status(top, off, len));
    MapEntry e;
    e.start = off;
    e.length = s.bytes;
    e.data = s.flags & kStatusData;
    e.zero = s.flags & kStatusZero;
    e.present = s.flags & kStatusAllocated;
    e.has_offset = s.flags & kStatusOffsetValid;
    e.offset = e.has_offset ? s.host_offset : 0;
    e.depth = s.depth;
    if (e.has_offset && s.host_node) e.filename = &s.host_node->filename();
    // qemu-img reports unallocated-everywhere without any flag; chain_status
    // marks it zero only when some layer says reads give zeroes.
    return e;
}

// dump_map_entry(); false on the "external clusters" error.
bool dump_entry(OutputFormat out, const MapEntry &e, MapEntry *next) {
    if (out == OutputFormat::Human) {
        if (e.data && !e.has_offset) {
            error_report("File contains external, encrypted or compressed clusters.");
            return false;
        }
        if (e.data && !e.zero) {
            std::printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e.start, e.length,
                        e.has_offset ? e.offset : 0, e.filename ? e.filename->c_str() : "");
        }
        // The table does not tell zero from unallocated: merge them.
        if (next && (!next->data || next->zero)) {
            next->data = false;
            next->zero = true;
        }
        return true;
    }
    std::printf("{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %d, \"present\": %s, \"zero\": %s, "
                "\"data\": %s",
                static_cast<int64_t>(e.start), static_cast<int64_t>(e.length), e.depth, e.present ? "true" : "false",
                e.zero ? "true" : "false", e.data ? "true" : "false");
    if (e.has_offset) std::printf(", \"offset\": %" PRId64, static_cast<int64_t>(e.offset));
    std::putchar('}');
    if (next) std::puts(",");
    return true;
}

int64_t parse_num_arg(const char *what, const char *arg) {
    auto v = cvtnum(what, arg, g_argv0);
    if (!v) {
        error_report(v.error().message);
        return -1;
    }
    return *v;
}

}  // namespace

int cmd_map(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"format", required_argument, nullptr, 'f'},
        {"output", required_argument, nullptr, kOptOutput},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {"start-offset", required_argument, nullptr, 's'},
        {"max-length", required_argument, nullptr, 'l'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt;
    const char *output = nullptr;
    bool image_opts = false, force_share = false;
    int64_t start_offset = 0, max_length = -1;
    int c;
    while ((c = getopt_long(argc, argv, ":f:s:l:hU", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
            break;
        case 'U':
            force_share = true;
            break;
        case kOptOutput:
            output = optarg;
            break;
        case 's':
            start_offset = parse_num_arg("start offset", optarg);
            if (start_offset < 0) return 1;
            break;
        case 'l':
            max_length = parse_num_arg("max length", optarg);
            if (max_length < 0) return 1;
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

    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt;
    a.image_opts = image_opts;
    a.force_share = force_share;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;

    if (out == OutputFormat::Human)
        std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    else
        std::putchar('[');

    uint64_t length = node->length();
    if (max_length != -1) {
        // qemu-img computes start + max in int64_t; both are at most
        // INT64_MAX, so the unsigned sum cannot wrap.
        uint64_t end = static_cast<uint64_t>(start_offset) + static_cast<uint64_t>(max_length);
        length = std::min(end, length);
    }

    MapEntry curr;
    curr.start = static_cast<uint64_t>(start_offset);
    while (curr.start + curr.length < length) {
        uint64_t off = curr.start + curr.length;
        auto next = entry_at(*node, off, length - off);
        if (!next) {
            error_reportf("Could not read file metadata: {}", std::strerror(next.error().code));
            return 1;
        }
        if (next->length == 0) {
            error_report("Could not read file metadata: Input/output error");
            return 1;
        }
        if (mergeable(curr, *next)) {
            curr.length += next->length;
            continue;
        }
        if (curr.length > 0 && !dump_entry(out, curr, &*next)) return 1;
        curr = *next;
    }
    if (!dump_entry(out, curr, nullptr)) return 1;
    if (out == OutputFormat::Json) std::puts("]");
    return 0;
}

}  // namespace qimg::cli
