// qcow2 compressed clusters: raw deflate (zlib, windowBits -12, as QEMU —
// its inflate uses a 4 KiB window, so larger distances must never be
// emitted) and zstd (one or more frames filling exactly one cluster).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "util/result.h"

namespace qimg::qcow2 {

// Inflates `in` (which may carry trailing sector padding) into exactly
// out.size() bytes. Corrupt or short data is an EIO error.
Result<void> decompress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out);

// Compresses one cluster into `out` (capacity out.size()). Returns the
// compressed length, or 0 when the result would not fit (store uncompressed).
Result<size_t> compress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out);

// The same with a codec level (-1: QEMU's default) or, with `fast`, the
// fastest deflate available: ISA-L igzip level 1 with a 4 KiB history
// (hist_bits 12, so QEMU's 4 KiB-window inflate reads it) when built with
// ISA-L (QIMG_HAVE_ISAL), else zlib level 1. zstd ignores `fast`.
// Thread-safe; codec state is kept per thread.
Result<size_t> compress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out, int level,
                                bool fast);
// Whether compress_cluster(..., fast=true) uses ISA-L.
bool have_isal();

}  // namespace qimg::qcow2
