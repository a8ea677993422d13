// Request limits a node declares (QEMU's BlockLimits: request_alignment,
// max_transfer, max_pwrite_zeroes, max_pdiscard) and the generic padding and
// splitting that honours them, as QEMU's block layer does before a request
// reaches the driver: reads are widened to the alignment, unaligned writes
// become read-modify-write of the aligned blocks around them, long
// requests are split, discards shrink to the aligned part.
//
// A node that declares limits routes its public calls through these with
// its own aligned operations as callbacks (filter/blkdebug does).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "util/result.h"

namespace qimg {

struct IoLimits {
    uint64_t align = 1;             // a power of two
    uint64_t max_transfer = 0;      // a multiple of align; 0: none
    uint64_t max_write_zeroes = 0;  // 0: max_transfer-free, whole request
    uint64_t max_discard = 0;
    bool trivial() const { return align <= 1 && max_transfer == 0; }
};

using LimitedRead = std::function<Result<void>(uint64_t off, void *buf, size_t len)>;
using LimitedWrite = std::function<Result<void>(uint64_t off, const void *buf, size_t len)>;
using LimitedRange = std::function<Result<void>(uint64_t off, uint64_t len)>;

// [off, off+len) through `read`, whose every call is aligned and at most
// max_transfer long.
Result<void> limited_read(const IoLimits &lim, uint64_t off, void *buf, size_t len, const LimitedRead &read);
// The same for a write; unaligned edges are read through `read` and written
// back whole, under `rmw` (two writers into one block must not interleave).
Result<void> limited_write(const IoLimits &lim, uint64_t off, const void *buf, size_t len, const LimitedRead &read,
                           const LimitedWrite &write, std::mutex &rmw);
// Zero writes: the aligned middle through `zero` in pieces of at most
// max_write_zeroes, the unaligned edges as written zero buffers.
Result<void> limited_write_zeroes(const IoLimits &lim, uint64_t off, uint64_t len, const LimitedRead &read,
                                  const LimitedWrite &write, const LimitedRange &zero, std::mutex &rmw);
// Discards: only the aligned part, in pieces of at most max_discard.
Result<void> limited_discard(const IoLimits &lim, uint64_t off, uint64_t len, const LimitedRange &discard);

}  // namespace qimg
