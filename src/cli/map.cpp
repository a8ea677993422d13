// qemu-img map: the allocation map of an image through its backing chain,
// as qemu-img prints it: extents from block/status.h's chain_status(),
// merged when contiguous and alike (qemu-img.c entry_mergeable), in the
// human table ("Offset Length Mapped to File") or as JSON lines.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>

#include "block/status.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

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

}  // namespace

int cmd_map(int argc, char **argv) {
    SharedOptions so;
    int64_t start_offset = 0, max_length = -1;
    if (int rc = parse_options(argc, argv, so,
                               kOptFormat | kOptFormatLong | kOptForceShare | kOptOutput | kOptObject | kOptImageOpts,
                               {number('s', "start-offset", "start offset", start_offset),
                                number('l', "max-length", "max length", max_length)}))
        return rc;
    std::string filename = one_filename(argc, argv);

    OutputFormat out;
    if (!so.output_format(out)) return 1;

    BlockOpener opener;
    NodePtr node = open_image(opener, filename, so.open_args("writeback"));
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
