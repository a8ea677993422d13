// qcow2 space accounting: the metadata overhead of an image (header, L1/L2
// tables, refcount structures) for `qemu-img measure -O qcow2` and for
// preallocation, computed the way QEMU's qcow2_measure() does. The qcow2
// Driver record registers measure() as its Driver::measure hook.
#pragma once

#include <cstdint>

#include "block/driver.h"

namespace qimg::qcow2 {

// Bytes of refcount table and refcount blocks needed to count `clusters`
// clusters plus the refcount structures themselves (the fixed point QEMU's
// qcow2_refcount_metadata_size finds). `generous_increase` leaves room for
// the table to grow by half, as QEMU does when growing a live image.
uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, unsigned refcount_order,
                                bool generous_increase, uint64_t *refblock_count = nullptr);

// Size of a fully allocated image of `virtual_size` bytes: header cluster,
// L2 and L1 tables, refcount metadata and the data (qcow2_calc_prealloc_size).
uint64_t prealloc_size(uint64_t virtual_size, uint64_t cluster_size, unsigned refcount_order, bool extended_l2);

// The Driver::measure hook. Option errors use QEMU's messages ("Cluster size
// must be a power of two between 512 and 2048k", "Invalid compatibility
// level: 'x'", "Refcount width must be ...", "invalid parameter value: x",
// "The image size is too large (try using a larger cluster size)").
// With a source, "required" counts only the source's allocated clusters
// (block status through its backing chain); with -o backing_file, or
// preallocation=falloc/full, every cluster. The persistent bitmaps of a
// qcow2 v3 source are read from its specific_info() ("bitmaps size").
Result<MeasureInfo> measure(MeasureRequest &req);

}  // namespace qimg::qcow2
