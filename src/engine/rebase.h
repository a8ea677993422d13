// The data half of a safe `qemu-img rebase`: what an image reads through its
// old backing chain and would no longer read through the new one is written
// into the image, several requests at a time on the request pipeline
// (pipeline.h). The CLI then flushes and changes the header.
#pragma once

#include <cstdint>
#include <functional>

#include "block/node.h"
#include "engine/pipeline.h"

namespace qimg::engine {

struct RebaseOptions {
    unsigned in_flight = 8;  // requests in flight (1..16)
    unsigned workers = 0;    // threads; 0 = number of cores
    // -c (qemu-img 8.2): whole clusters that differ are written compressed
    // (compressed by the workers); `top` must have a compressed_cluster_size().
    bool compress = false;
    uint64_t write_behind = kFallbackWriteBehind;  // see PipelineOptions::write_behind and commit.h
    // From the dispatching thread, once per range compared: the percent to
    // add (qemu-img's local_progress), for progress::print(step, 100).
    std::function<void(float)> on_progress;
};

// For every range `top` does not allocate itself (and, with `prefix_base`,
// the new backing file further down the chain, only where the layers between
// allocate), reads the old backing (`old_backing`, zeroes past its end) and
// the new one (`new_backing`, may be null: zeroes), and writes into `top`
// the 512-byte sectors that differ, as qemu-img 7.2 does: data, or
// write_zeroes where the old backing ends. Writes reach `top` in offset order,
// as qemu-img's, so the image's layout is the same. Does not flush. Errors
// carry qemu-img's messages ("error while reading from old backing file",
// "Error while writing to COW image: ...", ...).
Result<void> rebase_preserve(BlockNode &top, BlockNode *old_backing, BlockNode *new_backing, BlockNode *prefix_base,
                             const RebaseOptions &o);

}  // namespace qimg::engine
