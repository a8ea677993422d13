// The copy behind `qemu-img commit`: everything the layers of an image
// above its base allocate (data and zero extents) is written into the base,
// several requests at a time on the request pipeline (pipeline.h). The CLI
// keeps what happens around it (opening, reopening the base read-write,
// emptying the image).
#pragma once

#include <cstdint>
#include <functional>

#include "block/node.h"
#include "engine/pipeline.h"

namespace qimg::engine {

struct CommitOptions {
    unsigned in_flight = 8;         // requests in flight (1..16)
    unsigned workers = 0;           // threads; 0 = number of cores
    uint64_t rate_limit = 0;        // -r: bytes of data per second (QEMU's job speed), 0 = unlimited
    uint64_t chunk = 2 << 20;       // largest request (qemu-img's 2 MiB status steps)
    // See PipelineOptions::write_behind. Its source drops are ranged (only
    // what has been read), so warm chains keep their cache: bench_chain.sh,
    // 512 MiB, 128 MiB budget against none: commit 0.17-0.20 s vs
    // 0.18-0.21 s, rebase 0.49 vs 0.56 s (bench/RESULTS.md).
    uint64_t write_behind = kFallbackWriteBehind;
    // From the dispatching thread, as each request is issued: the share of
    // the bytes to commit issued so far, in percent (QEMU's job progress
    // counts the bytes to copy, so an image with little data goes from 0%
    // to 100% at once).
    std::function<void(float)> on_progress;
};

// Copies every range allocated in the chain from `top` down to (not
// including) `base` into `base`: data is read through `top` and written,
// zero extents become write_zeroes that may unmap (QEMU's commit is a
// mirror job with unmap on). `base` is grown to `top`'s size first if
// smaller and flushed at the end. Writes go out of order, two requests that
// share a cluster of `base` one after the other. Errors are the drivers'.
Result<void> commit_image(BlockNode &top, BlockNode &base, const CommitOptions &o);

}  // namespace qimg::engine
