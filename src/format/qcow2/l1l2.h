// qcow2 cluster mapping: L1/L2 entry layout (standard and extended L2 with
// 32 subclusters), subcluster classification as QEMU's
// qcow2_get_subcluster_type, and a bounded write-back cache of L2 tables.
// Not thread-safe: the node's metadata mutex guards it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <type_traits>
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
inline constexpr uint64_t kL2StdReservedMask = 0x3f000000000001feull;  // standard cluster descriptor
// Extended L2 bitmap: allocation bits in the low half, zero bits in the high.
inline constexpr uint64_t kL2BitmapAllAllocated = 0x00000000ffffffffull;
inline constexpr uint64_t kL2BitmapAllZero = 0xffffffff00000000ull;
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

// A table as stored (big-endian words) and back; `raw` holds whole words.
L2Table decode_l2_table(std::span<const uint8_t> raw);
std::vector<uint8_t> encode_l2_table(const L2Table &t);

// qcow2.txt: "Compressed Clusters Descriptor": the host offset in the low
// x = 62 - (cluster_bits - 8) bits, the number of additional 512-byte
// sectors in bits x..61. The compressed data starts at `offset` and ends
// at the end of the last sector the descriptor counts.
struct CompressedExtent {
    uint64_t offset = 0, bytes = 0;
};
CompressedExtent decode_compressed(uint64_t entry, uint32_t cluster_bits);
// The descriptor (compressed flag included) of `bytes` (> 0) at `offset`.
uint64_t encode_compressed(uint64_t offset, uint64_t bytes, uint32_t cluster_bits);

// What a whole cluster's L2 entry says, as QEMU's qcow2_get_cluster_type:
// with extended L2 the zero flag is not used (the bitmap tells subclusters
// apart, see classify()), so an entry with a host cluster is Normal there.
enum class ClusterType { Unallocated, ZeroPlain, ZeroAlloc, Normal, Compressed };

// One L2 entry, decoded.
struct L2Entry {
    uint64_t index = 0;   // in its table
    uint64_t word = 0;    // as stored, flags included
    uint64_t bitmap = 0;  // extended L2 subcluster bitmap (0 without)
    ClusterType type = ClusterType::Unallocated;
    // Normal/ZeroAlloc: the host cluster offset (alignment not checked: a
    // corrupt entry may have it unaligned); Compressed: the first byte.
    uint64_t host = 0;
    // Host bytes the entry holds a reference on: the cluster (when `host`
    // is not 0) or the compressed data; 0 for none.
    uint64_t bytes = 0;
    bool copied() const { return word & kOflagCopied; }
};

// The layout of an image's L2 tables, and the one place their entries are
// decoded: each loop over an L2 table (reads, check, snapshots, amend,
// make_empty) visits decoded entries through for_each_entry().
class L2Layout {
public:
    L2Layout() = default;
    L2Layout(uint32_t cluster_bits, bool extended, bool has_data_file);

    uint64_t entries() const { return entries_; }  // per table
    unsigned words() const { return extended_ ? 2 : 1; }
    ClusterType type(uint64_t word) const;
    L2Entry decode(uint64_t word, uint64_t bitmap, uint64_t index) const;
    L2Entry entry(const L2Table &t, uint64_t index) const {
        return decode(t[index * words()], extended_ ? t[index * 2 + 1] : 0, index);
    }
    // Calls `fn(const L2Entry &)` for every entry of `t` in order; `fn`
    // returns void or Result<void> (the first error ends the walk).
    template <class Fn>
    Result<void> for_each_entry(const L2Table &t, Fn &&fn) const {
        for (uint64_t i = 0; i < entries_; i++) {
            if constexpr (std::is_void_v<std::invoke_result_t<Fn &, const L2Entry &>>) {
                fn(entry(t, i));
            } else {
                QIMG_TRY(fn(entry(t, i)));
            }
        }
        return ok();
    }

private:
    uint32_t cluster_bits_ = 16;
    bool extended_ = false, has_data_file_ = false;
    uint64_t entries_ = 0;
};

// The L1 → L2 step of the walk: each L2 table that an entry of `l1` names
// (entries without one are skipped), in L1 order. `load(l1_index,
// l2_offset)` fetches it as the caller needs (the node's cache with its
// offset checks, or check's raw reads) and returns
// Result<std::shared_ptr<L2Table>>; `visit(l1_index, l2_offset, L2Table &)`
// returns Result<void>, or Result<bool> where false ends the walk (before
// the next table is loaded). The first error ends the walk. `visit` may
// change the entry of `l1` it is called for (its flags, or the table it
// names after a copy-on-write).
template <class Load, class Visit>
Result<void> for_each_l2_table(const std::vector<uint64_t> &l1, Load &&load, Visit &&visit) {
    for (uint64_t i = 0; i < l1.size(); i++) {
        const uint64_t l2_offset = l1[i] & kL1OffsetMask;
        if (!l2_offset) continue;
        QIMG_ASSIGN(std::shared_ptr<L2Table> table, load(i, l2_offset));
        using R = std::invoke_result_t<Visit &, uint64_t, uint64_t, L2Table &>;
        if constexpr (std::is_same_v<R, Result<bool>>) {
            QIMG_ASSIGN(bool more, visit(i, l2_offset, *table));
            if (!more) break;
        } else {
            QIMG_TRY(visit(i, l2_offset, *table));
        }
    }
    return ok();
}

// The L2 tables of one image (block/table_cache.h), 32 MiB of them (at
// least 16 tables), like a generous QEMU l2-cache-size. `before_write` runs
// before any dirty table is written back: it must make the refcounts that
// the table relies on durable first.
class L2Cache : public TableCache<L2Table> {
public:
    L2Cache(BlockNode &file, uint64_t cluster_size, std::function<Result<void>()> before_write);
};

}  // namespace qimg::qcow2
