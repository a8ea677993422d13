// qcow2 cluster mapping: L1/L2 entry layout (standard and extended L2 with
// 32 subclusters), subcluster classification as QEMU's
// qcow2_get_subcluster_type, and a bounded write-back cache of L2 tables.
// Not thread-safe: the node's metadata mutex guards it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "block/node.h"
#include "block/table_cache.h"

namespace qimg::qcow2 {

// qcow2.txt: "Cluster mapping"
inline constexpr uint64_t kOflagCopied = 1ull << 63;
inline constexpr uint64_t kOflagCompressed = 1ull << 62;
inline constexpr uint64_t kOflagZero = 1ull << 0;
inline constexpr uint64_t kL1OffsetMask = 0x00fffffffffffe00ull;
inline constexpr uint64_t kL2OffsetMask = 0x00fffffffffffe00ull;
inline constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffull;
inline constexpr unsigned kSubclusters = 32;  // per cluster with extended L2

enum class SubclusterType {
    Unallocated,       // reads from the backing file (or zeroes)
    UnallocatedAlloc,  // extended L2: host cluster exists, subcluster not yet written
    ZeroPlain,         // reads as zeroes, no host cluster
    ZeroAlloc,         // reads as zeroes, host cluster reserved
    Normal,            // data at the host offset
    Compressed,        // compressed cluster
    Invalid,           // contradictory extended-L2 bitmap
};

// Classifies subcluster `sc` of a cluster from its L2 entry (and bitmap for
// extended L2). `has_data_file`: offset 0 with COPIED is a valid data cluster.
SubclusterType classify(uint64_t entry, uint64_t bitmap, unsigned sc, bool extended, bool has_data_file);

// A table of L2 entries as host-endian words: one word per entry, or two
// (entry, bitmap) with extended L2.
using L2Table = std::vector<uint64_t>;

// The L2 tables of one image (block/table_cache.h), 32 MiB of them (at
// least 16 tables), like a generous QEMU l2-cache-size. `before_write` runs
// before any dirty table is written back: it must make the refcounts that
// the table relies on durable first.
class L2Cache : public TableCache<L2Table> {
public:
    L2Cache(BlockNode &file, uint64_t cluster_size, std::function<Result<void>()> before_write);
};

}  // namespace qimg::qcow2
