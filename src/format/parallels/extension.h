// The parallels Format Extension (parallels.txt, "Format Extension"): one
// cluster named by the header's ext_off holding an MD5-checked list of
// features, of which QEMU knows the end marker and dirty bitmaps. Checked
// as QEMU checks it on a read-only open; qimg keeps none of it.
#pragma once

#include <cstdint>

#include "block/node.h"
#include "util/result.h"

namespace qimg::parallels {

// Reads the extension cluster at `ext_off` (sectors) and validates it with
// QEMU's messages: the magic, the MD5 checksum of the rest of the cluster,
// each feature header (no flags, data inside the cluster, a known magic)
// and each dirty bitmap (its size the disk's `disk_sectors`, a granularity
// of 512 bytes or more, an L1 table inside the feature whose length fits
// the bitmap, data cluster offsets that can be read, names not repeated).
// Beyond QEMU: a granularity that is not a power of two of at least 512
// bytes (QEMU aborts on an assertion), a feature list that
// runs past the cluster (QEMU reads past its buffer) and a cluster larger
// than 64 MiB (QEMU allocates it whole) are refused.
Result<void> check_format_extension(BlockNode &file, uint64_t ext_off, uint64_t cluster_size,
                                    uint64_t disk_sectors);

}  // namespace qimg::parallels
