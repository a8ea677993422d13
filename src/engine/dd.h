// The copy behind `qemu-img dd`: bytes [in_start, in_end) of the source
// (read through read_padded, so a tail past the end reads as zeroes) go to
// the target from offset 0, as they are: no zero detection, every byte is
// written (qemu-img dd allocates everything it copies). qemu-img copies one
// `bs` block at a time; here requests of whole blocks (up to 2 MiB, or one
// block when it is bigger) are read in parallel on the request pipeline and
// written in order, so a qcow2 target gets qemu-img's cluster layout.
//
// Errors keep qemu-img's semantics exactly: the first block that fails to
// read or write stops the copy with every block before it written and none
// after, and the message says which side failed.
#pragma once

#include <cstdint>

#include "block/node.h"

namespace qimg::engine {

struct DdOptions {
    uint64_t in_start = 0, in_end = 0;  // source byte range
    uint64_t block = 512;               // bs
    unsigned in_flight = 0;             // 0: as many as fit in the engine's buffer budget (at most 16)
    uint64_t write_behind = 0;          // PipelineOptions::write_behind
};

// Errors: "error while reading from input image file: <strerror>" or
// "error while writing to output image file: <strerror>" (qemu-img's).
Result<void> dd_copy(BlockNode &src, BlockNode &dst, const DdOptions &o);

}  // namespace qimg::engine
