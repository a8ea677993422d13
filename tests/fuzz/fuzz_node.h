// Shared by the image fuzz targets: what is done with an image once it
// opened (the calls `qemu-img info`, `map`, `convert` make on it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "block/driver.h"

namespace qimg::fuzz {

inline constexpr uint64_t kMaxRead = 4u << 20;  // guest bytes read per input

// Format info, snapshot and bitmap lists, then the guest content (the first
// kMaxRead bytes) read and block-status queried in 64 KiB steps, and one
// unaligned read across whatever units the format maps in.
inline void exercise(BlockNode &n) {
    (void)n.specific_info();
    (void)n.snapshot_list();
    (void)n.bitmap_list();
    const uint64_t len = std::min<uint64_t>(n.length(), kMaxRead);
    std::vector<uint8_t> buf(64 * 1024);
    for (uint64_t off = 0; off < len; off += buf.size()) {
        size_t chunk = size_t(std::min<uint64_t>(buf.size(), len - off));
        (void)n.read(off, buf.data(), chunk);
        (void)n.block_status(off, chunk);
    }
    if (len > 3) (void)n.read(1, buf.data(), size_t(std::min<uint64_t>(len - 2, buf.size())));
}

}  // namespace qimg::fuzz
