// Generic allocation-status walk (see status.h). Drivers answer for their own
// layer; this file adds what follows from the graph: recursion into a host
// node, zeroes at the end of a chain, and fall-through to backing layers.
#include "block/status.h"

#include <algorithm>

namespace qimg {

Result<BlockStatus> node_status(BlockNode &node, uint64_t off, uint64_t len) {
    uint64_t size = node.length();
    if (off >= size) {
        BlockStatus s;
        s.flags = kStatusZero | kStatusEof;
        s.bytes = 0;
        return s;
    }
    len = std::min(len, size - off);
    QIMG_ASSIGN(BlockStatus s, node.block_status(off, len));
    if (s.bytes == 0 || s.bytes > len) return make_error(EIO, "driver returned an invalid block status extent");
    if (s.flags & (kStatusData | kStatusZero)) s.flags |= kStatusAllocated;

    if ((s.flags & kStatusRecurse) && (s.flags & kStatusOffsetValid) && s.host_node && s.host_node != &node) {
        QIMG_ASSIGN(BlockStatus h, node_status(*s.host_node, s.host_offset, s.bytes));
        if ((h.flags & kStatusEof) && (h.bytes == 0 || (h.flags & kStatusZero))) {
            s.flags |= kStatusZero;  // past the host's end reads as zeroes
        } else {
            s.bytes = std::min(s.bytes, h.bytes);
            s.flags |= h.flags & kStatusZero;
        }
    }
    s.flags &= ~kStatusRecurse;

    if (!(s.flags & kStatusAllocated)) {
        BlockNode *b = skip_filters(&node)->backing();
        if ((!b && node.unallocated_reads_zero()) || (b && off >= b->length())) s.flags |= kStatusZero;
    }
    if (off + s.bytes >= size) s.flags |= kStatusEof;
    return s;
}

namespace {

// Walks from `top` down to (not including) `base` until a layer's status has
// one of `stop_flags`.
Result<ChainStatus> walk_chain(BlockNode &top, BlockNode *base, uint64_t off, uint64_t len, uint32_t stop_flags) {
    ChainStatus out;
    int depth = 0;
    // A filter answers for the image below it (and may fail: blkdebug), and
    // the chain goes on below that image (QEMU's bdrv_filter_or_cow_bs).
    for (BlockNode *p = &top; p && p != base; p = skip_filters(p)->backing(), ++depth) {
        QIMG_ASSIGN(BlockStatus s, node_status(*p, off, len));
        if (s.bytes == 0) {
            // The layer above deferred to this one and this one ends before
            // `off` (a backing file shorter than its overlay): the zeroes
            // read there belong to this layer, as if allocated in it, so
            // that whoever copies or compares down to a base below it
            // keeps them (QEMU's bdrv_co_common_block_status_above).
            out = ChainStatus{};
            out.flags = kStatusZero | kStatusAllocated;
            out.bytes = len;
            out.depth = depth;
            break;
        }
        len = std::min(len, s.bytes);
        out.flags = s.flags;
        out.bytes = len;
        out.host_offset = s.host_offset;
        out.host_node = s.host_node;
        out.depth = depth;
        if (s.flags & stop_flags) break;
        // Unallocated: reads come from the backing layer, if any and if
        // above base; node_status set the zero flag when there is none.
        BlockNode *next = skip_filters(p)->backing();
        if (!next || next == base) break;
    }
    return out;
}

}  // namespace

Result<ChainStatus> chain_status(BlockNode &top, BlockNode *base, uint64_t off, uint64_t len) {
    QIMG_ASSIGN(ChainStatus out, walk_chain(top, base, off, len, kStatusAllocated));
    // The end of file is the top's, whichever layer answered.
    if (off + out.bytes >= top.length()) out.flags |= kStatusEof;
    else out.flags &= ~kStatusEof;
    return out;
}

// A layer whose backing file ends before `off` answers "zero" itself, so the
// walk never reaches a layer that ends before the range.
Result<ChainStatus> layer_status(BlockNode &top, uint64_t off, uint64_t len) {
    return walk_chain(top, nullptr, off, len, kStatusData | kStatusZero);
}

}  // namespace qimg
