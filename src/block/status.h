// Allocation status across layers: the generic walk that map, convert,
// compare and measure use (QEMU's bdrv_block_status_above).
#pragma once

#include "block/node.h"

namespace qimg {

struct ChainStatus {
    uint32_t flags = 0;            // kStatus* (kStatusAllocated: some layer above base owns it)
    uint64_t bytes = 0;
    uint64_t host_offset = 0;      // with kStatusOffsetValid
    BlockNode *host_node = nullptr;
    int depth = 0;                 // 0 = top; layer that answered
};

// What a format with no allocation information of its own answers (QEMU's
// answer for a format driver without block-status: bochs, cloop, dmg...):
// all `len` bytes data, allocated, at no host offset that could be shown.
inline BlockStatus unmapped_data_status(uint64_t len) {
    BlockStatus s;
    s.flags = kStatusData | kStatusAllocated;
    s.bytes = len;
    return s;
}

// Status of one node, following kStatusRecurse into its host node so that a
// raw image's holes show as zeroes.
Result<BlockStatus> node_status(BlockNode &node, uint64_t off, uint64_t len);

// Status of `top` looking through backing layers down to (not including)
// `base` (nullptr: the whole chain), as QEMU's bdrv_block_status_above: where
// a layer above `base` is shorter than the range, the zeroes past its end
// count as allocated in that layer (they hide whatever lies below it).
Result<ChainStatus> chain_status(BlockNode &top, BlockNode *base, uint64_t off, uint64_t len);

// The first layer from `top` down that says what reads give (data or
// zeroes), as qemu-img map walks the chain one layer at a time: a layer
// whose backing file ends before `off` answers "zero, not present" itself.
Result<ChainStatus> layer_status(BlockNode &top, uint64_t off, uint64_t len);

}  // namespace qimg
