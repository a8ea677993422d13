// qcow2 compressed clusters: which codec (src/codec/) the header's
// compression_type names, and qcow2's messages around it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "block/node.h"
#include "codec/codec.h"
#include "util/result.h"

namespace qimg::qcow2 {

// qcow2.txt "compression type": 0 is raw deflate read with a 4 KiB window
// (QEMU inflates with windowBits -12, so larger distances must never be
// emitted), 1 is zstd (one or more frames filling exactly one cluster).
Result<codec::Params> codec_for(uint8_t compression_type, const CompressOptions &opts = {});

// Inflates `in` (which may carry trailing sector padding) into exactly
// out.size() bytes. Corrupt or short data is an EIO error.
Result<void> decompress_cluster(uint8_t compression_type, std::span<const uint8_t> in, std::span<uint8_t> out);

// Compresses `len` bytes (at most one cluster, zero-padded to it); empty when
// the cluster does not shrink (stored uncompressed).
Result<std::vector<uint8_t>> compress_cluster(uint8_t compression_type, const void *buf, size_t len,
                                              uint64_t cluster_size, const CompressOptions &opts);

}  // namespace qimg::qcow2
