// qcow2 reference counts: the refcount table, a bounded write-back cache of
// refcount blocks (block/table_cache.h; widths 1-64 bits), cluster
// allocation (first fit, as QEMU's alloc_clusters_noref), refcount block
// allocation and refcount table growth. Not thread-safe: the node's
// metadata mutex guards it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "block/node.h"
#include "block/table_cache.h"

namespace qimg::qcow2 {

// qcow2.txt: "Refcount table": an entry is a refcount block's offset, its
// low 9 bits reserved.
inline constexpr uint64_t kRefcountTableOffsetMask = 0xfffffffffffffe00ull;
inline constexpr uint64_t kRefcountTableReservedMask = 0x1ffull;

class Refcounts {
public:
    // `write_reftable_header` stores a new refcount table location in the
    // image header (offset, clusters) and makes it durable.
    using HeaderWriter = std::function<Result<void>(uint64_t offset, uint32_t clusters)>;

    Refcounts(BlockNode &file, uint32_t cluster_bits, uint32_t refcount_order, HeaderWriter hw);

    // Reads the refcount table (size already validated by read_header).
    Result<void> load(uint64_t table_offset, uint32_t table_clusters);

    Result<uint64_t> get(uint64_t cluster_index);
    // Whether every cluster touching [offset, offset+length) already has a
    // refcount block, as every cluster in use must: EAGAIN where one is
    // missing (what QEMU's refcount updates answer there), EFBIG where not
    // even a refcount table of the largest size could cover the range.
    // Lets a multi-step update refuse corrupt references before it starts.
    Result<void> check_counted(uint64_t offset, uint64_t length) const;
    // Adds `delta` to the refcount of every cluster touching [offset, offset+length).
    Result<void> update(uint64_t offset, uint64_t length, int64_t delta);
    // Allocates `n` contiguous clusters (refcount 1), returns the host offset.
    Result<uint64_t> alloc_clusters(uint64_t n);
    // QEMU's qcow2_alloc_clusters_at: sets the refcount of the free clusters
    // from `first` (at most `n`, up to the first one in use) to 1 and
    // returns how many.
    Result<uint64_t> alloc_clusters_at(uint64_t first, uint64_t n);
    // QEMU's qcow2_refcount_area: a new refcount table, and refcount blocks
    // where needed, placed at cluster `start` (all free from there on) and
    // sized to cover `start + additional` clusters plus themselves; switched
    // in crash-safely (blocks, table, sync, header, then the old table is
    // freed). A `new_block_offset` (already written) is entered at
    // `new_block_index`. Returns the first cluster after the new structures.
    Result<uint64_t> refcount_area(uint64_t start, uint64_t additional, bool exact, uint64_t new_block_index = 0,
                                   uint64_t new_block_offset = 0);
    // One past the last cluster with a non-zero refcount below `limit`.
    Result<uint64_t> used_end(uint64_t limit);
    // Writes dirty refcount blocks (no sync).
    Result<void> write_back();
    bool dirty() const { return cache_.dirty(); }

    // Rewrites the refcount structures at width 2^new_order (qemu-img amend
    // -o refcount_bits, QEMU's qcow2_change_refcount_order). New refcount
    // blocks and the new table go to clusters allocated through the current
    // structures, which are made durable; `publish` then stores the new
    // table location and order in the header in one write. In the new
    // structures the old table and blocks are already free, so a crash at
    // any point leaves either layout complete (at worst with leaked
    // clusters). `status(done, total)` reports progress as QEMU's walks do.
    using PublishFn = std::function<Result<void>(uint64_t table_offset, uint32_t table_clusters, uint32_t order)>;
    using StatusFn = std::function<void(int64_t done, int64_t total)>;
    Result<void> change_order(uint32_t new_order, const PublishFn &publish, const StatusFn &status);
    uint32_t order() const { return order_; }
    // Drops refcount blocks that count nothing but themselves from the table
    // (QEMU's qcow2_shrink_reftable, after a shrink): the table is written
    // and synced before the blocks are freed.
    Result<void> drop_empty_blocks();
    // The highest cluster index below `end_cluster` with a non-zero
    // refcount, or -1 (qcow2_get_last_cluster).
    Result<int64_t> last_used_cluster(uint64_t end_cluster);

    uint64_t table_offset() const { return table_offset_; }
    uint32_t table_clusters() const { return table_clusters_; }
    const std::vector<uint64_t> &table() const { return table_; }
    uint64_t max_refcount() const { return max_; }

private:
    using Block = std::vector<uint8_t>;  // one refcount block as stored
    Result<std::shared_ptr<Block>> load_block(uint64_t block_offset);
    uint64_t read_entry(const Block &b, uint64_t i) const;
    void write_entry(Block &b, uint64_t i, uint64_t v);
    Result<void> set(uint64_t cluster_index, uint64_t value);
    Result<uint64_t> find_free(uint64_t n);
    bool has_block(uint64_t table_index) const;
    Result<void> ensure_block(uint64_t cluster_index);
    Result<bool> alloc_refcount_block(uint64_t cluster_index);
    Result<bool> increase(uint64_t first, uint64_t n);
    Result<void> write_table_entry(uint64_t index);
    struct OrderChange;
    Result<void> walk_for_order_change(OrderChange &oc, bool write, int index, int total, const StatusFn &status);

    BlockNode &file_;
    uint32_t cluster_bits_, order_;
    uint64_t cluster_size_, entries_per_block_, max_;
    HeaderWriter write_header_;
    std::vector<uint64_t> table_;
    uint64_t table_offset_ = 0;
    uint32_t table_clusters_ = 0;
    TableCache<Block> cache_;  // refcount blocks by offset
    uint64_t free_index_ = 0;
};

}  // namespace qimg::qcow2
