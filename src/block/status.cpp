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
        BlockNode *b = node.backing();
        if (!b || off >= b->length()) s.flags |= kStatusZero;
    }
    if (off + s.bytes >= size) s.flags |= kStatusEof;
    return s;
}

Result<ChainStatus> chain_status(BlockNode &top, BlockNode *base, uint64_t off, uint64_t len) {
    ChainStatus out;
    int depth = 0;
    for (BlockNode *p = &top; p && p != base; p = p->backing(), ++depth) {
        QIMG_ASSIGN(BlockStatus s, node_status(*p, off, len));
        if (s.bytes == 0) {
            // Past the end of this layer (a backing file shorter than its
            // overlay): the overlay reads zeroes there.
            out.flags = kStatusZero | (s.flags & kStatusEof);
            out.bytes = len;
            out.depth = depth;
            return out;
        }
        len = std::min(len, s.bytes);
        out.flags = s.flags;
        out.bytes = len;
        out.host_offset = s.host_offset;
        out.host_node = s.host_node;
        out.depth = depth;
        if (s.flags & kStatusAllocated) return out;
        // Unallocated: reads come from the backing layer (if any and if
        // above base); the zero flag was set by node_status when there is none.
        if (!p->backing() || p->backing() == base || off >= p->backing()->length()) return out;
    }
    return out;
}

}  // namespace qimg
