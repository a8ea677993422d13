// qcow2 refcount table and blocks (see refcount.h).
// qcow2.txt: "Host cluster management".
#include "format/qcow2/refcount.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <unordered_set>
#include <utility>

#include "format/qcow2/header.h"
#include "format/qcow2/measure.h"
#include "util/checked.h"
#include "util/endian.h"

namespace qimg::qcow2 {
namespace {
constexpr size_t kMaxCachedBlocksBytes = 32u << 20;

// 32 MiB of blocks, and at least 4; the cache evicts once it holds more.
size_t max_cached_blocks(uint64_t cluster_size) {
    return std::max<size_t>(kMaxCachedBlocksBytes / cluster_size + 1, 4);
}

TableCache<std::vector<uint8_t>>::Io block_io(BlockNode &file, uint64_t cluster_size) {
    TableCache<std::vector<uint8_t>>::Io io;
    io.load = [&file, cluster_size](uint64_t offset) -> Result<std::shared_ptr<std::vector<uint8_t>>> {
        auto b = std::make_shared<std::vector<uint8_t>>(cluster_size);
        file.debug_event(BlkdebugEvent::RefblockLoad);
        QIMG_TRY(read_padded(file, offset, b->data(), cluster_size));
        return b;
    };
    io.store = [&file](uint64_t offset, const std::vector<uint8_t> &b) -> Result<void> {
        file.debug_event(BlkdebugEvent::RefblockUpdate);
        return file.write(offset, b.data(), b.size());
    };
    return io;
}
}  // namespace

namespace {

// One refcount of width 2^order at index i of a refcount block
// (qcow2.txt: "Refcount blocks": sub-byte widths fill bytes from bit 0).
uint64_t get_refcount(const uint8_t *d, uint32_t order, uint64_t i) {
    switch (order) {
    case 0: return (d[i / 8] >> (i % 8)) & 1;
    case 1: return (d[i / 4] >> (2 * (i % 4))) & 3;
    case 2: return (d[i / 2] >> (4 * (i % 2))) & 15;
    case 3: return d[i];
    case 4: return be16(d + 2 * i);
    case 5: return be32(d + 4 * i);
    default: return be64(d + 8 * i);
    }
}

void set_refcount(uint8_t *d, uint32_t order, uint64_t i, uint64_t v) {
    switch (order) {
    case 0: d[i / 8] = uint8_t((d[i / 8] & ~(1u << (i % 8))) | (v << (i % 8))); break;
    case 1: d[i / 4] = uint8_t((d[i / 4] & ~(3u << (2 * (i % 4)))) | (v << (2 * (i % 4)))); break;
    case 2: d[i / 2] = uint8_t((d[i / 2] & ~(15u << (4 * (i % 2)))) | (v << (4 * (i % 2)))); break;
    case 3: d[i] = uint8_t(v); break;
    case 4: put_be16(d + 2 * i, uint16_t(v)); break;
    case 5: put_be32(d + 4 * i, uint32_t(v)); break;
    default: put_be64(d + 8 * i, v); break;
    }
}

uint64_t max_refcount_for(uint32_t order) {
    uint32_t bits = 1u << order;
    return bits == 64 ? UINT64_MAX : (uint64_t{1} << bits) - 1;
}

}  // namespace

Refcounts::Refcounts(BlockNode &file, uint32_t cluster_bits, uint32_t refcount_order, HeaderWriter hw)
    : file_(file), cluster_bits_(cluster_bits), order_(refcount_order), write_header_(std::move(hw)),
      cache_(max_cached_blocks(uint64_t{1} << cluster_bits), block_io(file, uint64_t{1} << cluster_bits)) {
    cluster_size_ = uint64_t{1} << cluster_bits;
    entries_per_block_ = (cluster_size_ * 8) >> refcount_order;
    max_ = max_refcount_for(refcount_order);
}

Result<void> Refcounts::load(uint64_t table_offset, uint32_t table_clusters) {
    table_offset_ = table_offset;
    table_clusters_ = table_clusters;
    uint64_t n = uint64_t(table_clusters) * cluster_size_ / 8;
    std::vector<uint8_t> raw(n * 8);
    QIMG_TRY(read_padded(file_, table_offset, raw.data(), raw.size()));
    table_.resize(n);
    for (uint64_t i = 0; i < n; i++) table_[i] = be64(&raw[i * 8]);
    return ok();
}

uint64_t Refcounts::read_entry(const Block &b, uint64_t i) const { return get_refcount(b.data(), order_, i); }

void Refcounts::write_entry(Block &b, uint64_t i, uint64_t v) { set_refcount(b.data(), order_, i, v); }

Result<std::shared_ptr<Refcounts::Block>> Refcounts::load_block(uint64_t block_offset) {
    return cache_.get(block_offset);
}

Result<uint64_t> Refcounts::get(uint64_t cluster_index) {
    uint64_t ti = cluster_index / entries_per_block_;
    if (ti >= table_.size()) return uint64_t{0};
    uint64_t bo = table_[ti] & kRefcountTableOffsetMask;
    if (bo == 0) return uint64_t{0};
    if (bo & (cluster_size_ - 1)) {
        char m[128];
        std::snprintf(m, sizeof m, "Refblock offset %#" PRIx64 " unaligned (reftable index: %#" PRIx64 ")", bo, ti);
        return make_error(EIO, m);
    }
    QIMG_ASSIGN(std::shared_ptr<Block> b, load_block(bo));
    return read_entry(*b, cluster_index % entries_per_block_);
}

Result<void> Refcounts::write_table_entry(uint64_t index) {
    uint8_t e[8];
    put_be64(e, table_[index]);
    return file_.write(table_offset_ + index * 8, e, 8);
}

Result<void> Refcounts::check_counted(uint64_t offset, uint64_t length) const {
    if (length == 0) return ok();
    uint64_t last_byte;
    if (__builtin_add_overflow(offset, length - 1, &last_byte)) return make_error(EFBIG, "Refcount table too large");
    const uint64_t per_table_entry = entries_per_block_ << cluster_bits_;  // bytes one refcount block covers
    for (uint64_t ti = offset / per_table_entry; ti <= last_byte / per_table_entry; ti++) {
        if (has_block(ti)) continue;
        if (ti >= kMaxRefcountTableBytes / 8) return make_error(EFBIG, "Refcount table too large");
        return make_error(EAGAIN, "Cluster at offset " + std::to_string(offset) + " has no refcount block");
    }
    return ok();
}

bool Refcounts::has_block(uint64_t table_index) const {
    return table_index < table_.size() && (table_[table_index] & kRefcountTableOffsetMask);
}

// Makes sure a refcount block covers `cluster_index` (for callers that do
// not allocate: they need no restart, just the block).
Result<void> Refcounts::ensure_block(uint64_t cluster_index) {
    while (!has_block(cluster_index / entries_per_block_)) QIMG_TRY(alloc_refcount_block(cluster_index));
    return ok();
}

// QEMU's alloc_refcount_block for a cluster without a refcount block: the
// block goes to the first free cluster (counting itself when it falls in
// its own range, else counted by another block); when the table is too
// small, new self-describing structures start at the first refcount-block
// boundary past the block (qcow2_refcount_area). Returns true when it
// allocated something: the caller's free clusters may be gone, it must
// search again.
Result<bool> Refcounts::alloc_refcount_block(uint64_t cluster_index) {
    const uint64_t ti = cluster_index / entries_per_block_;
    if (has_block(ti)) return false;
    QIMG_ASSIGN(uint64_t nb, find_free(1));
    if (nb == 0) return make_error(EIO, "Preventing invalid allocation of refcount block at offset 0");
    auto b = std::make_shared<Block>(cluster_size_, 0);
    if (nb / entries_per_block_ == ti) {
        write_entry(*b, nb % entries_per_block_, 1);
    } else {
        // Counted elsewhere; that may need a block of its own first.
        QIMG_ASSIGN(bool again, increase(nb, 1));
        if (again) return true;
    }
    const uint64_t bo = nb << cluster_bits_;
    // The block must be on disk before the table points at it.
    QIMG_TRY(write_back());
    QIMG_TRY(file_.write(bo, b->data(), cluster_size_));
    QIMG_TRY(file_.flush());
    cache_.put_new(bo, std::move(b));
    if (ti < table_.size()) {
        table_[ti] = bo;
        QIMG_TRY(write_table_entry(ti));
        QIMG_TRY(file_.flush());
        return true;
    }
    const uint64_t blocks_used = (std::max(cluster_index, nb) + 1 + entries_per_block_ - 1) / entries_per_block_;
    QIMG_TRY(refcount_area(blocks_used * entries_per_block_, 0, false, ti, bo));
    return true;
}

// QEMU's update_refcount(+1) over `n` clusters from `first`, for an
// allocation: when a refcount block had to be allocated on the way, the
// increments done so far are undone, the free cluster index goes back to
// `first` and true asks the caller to search for free clusters again.
Result<bool> Refcounts::increase(uint64_t first, uint64_t n) {
    uint64_t loaded = UINT64_MAX;
    for (uint64_t c = first; c < first + n; c++) {
        const uint64_t ti = c / entries_per_block_;
        if (ti != loaded) {
            QIMG_ASSIGN(bool again, alloc_refcount_block(c));
            if (again) {
                free_index_ = std::min(free_index_, first);
                for (uint64_t d = first; d < c; d++) {
                    QIMG_ASSIGN(uint64_t cur, get(d));
                    QIMG_TRY(set(d, cur - 1));
                }
                return true;
            }
            loaded = ti;
        }
        QIMG_ASSIGN(uint64_t cur, get(c));
        if (cur == max_) return make_error(EINVAL, "refcount overflow");  // QEMU: -EINVAL
        QIMG_TRY(set(c, cur + 1));
    }
    return false;
}

Result<void> Refcounts::set(uint64_t cluster_index, uint64_t value) {
    QIMG_TRY(ensure_block(cluster_index));
    uint64_t bo = table_[cluster_index / entries_per_block_] & kRefcountTableOffsetMask;
    if (bo & (cluster_size_ - 1)) return make_error(EIO, "Refblock offset unaligned");
    QIMG_ASSIGN(std::shared_ptr<Block> b, load_block(bo));
    write_entry(*b, cluster_index % entries_per_block_, value);
    cache_.mark_dirty(bo);
    if (value == 0 && cluster_index < free_index_) free_index_ = cluster_index;
    return ok();
}

Result<void> Refcounts::update(uint64_t offset, uint64_t length, int64_t delta) {
    if (length == 0) return ok();
    uint64_t first = offset >> cluster_bits_, last = (offset + length - 1) >> cluster_bits_;
    for (uint64_t c = first; c <= last; c++) {
        QIMG_ASSIGN(uint64_t cur, get(c));
        uint64_t nv;
        if (delta < 0) {
            if (cur < uint64_t(-delta)) return make_error(EINVAL, "refcount underflow");
            nv = cur - uint64_t(-delta);
        } else {
            if (max_ - cur < uint64_t(delta)) return make_error(EINVAL, "refcount overflow");  // QEMU: -EINVAL
            nv = cur + uint64_t(delta);
        }
        QIMG_TRY(set(c, nv));
    }
    return ok();
}

// QEMU's alloc_clusters_noref: the first run of `n` free clusters from the
// free cluster index, which moves past the run (a hole too small for the
// run is skipped for good, until a cluster before the index is freed).
Result<uint64_t> Refcounts::find_free(uint64_t n) {
    const uint64_t limit = uint64_t{1} << (56 - cluster_bits_);
    for (uint64_t run = 0; run < n;) {
        const uint64_t c = free_index_++;
        if (c >= limit) return make_error(EFBIG, "No space left in the image");
        QIMG_ASSIGN(uint64_t r, get(c));
        run = r ? 0 : run + 1;
    }
    return free_index_ - n;
}

// QEMU's qcow2_alloc_clusters: search, count, and search again whenever
// counting had to allocate refcount structures.
Result<uint64_t> Refcounts::alloc_clusters(uint64_t n) {
    for (;;) {
        QIMG_ASSIGN(uint64_t c, find_free(n));
        QIMG_ASSIGN(bool again, increase(c, n));
        if (!again) return c << cluster_bits_;
    }
}

Result<uint64_t> Refcounts::alloc_clusters_at(uint64_t first, uint64_t n) {
    for (;;) {
        uint64_t count = 0;
        for (; count < n; count++) {
            QIMG_ASSIGN(uint64_t r, get(first + count));
            if (r != 0) break;
        }
        QIMG_ASSIGN(bool again, increase(first, count));
        if (!again) return count;
    }
}

Result<uint64_t> Refcounts::used_end(uint64_t limit) {
    for (uint64_t c = limit; c > 0; c--) {
        QIMG_ASSIGN(uint64_t r, get(c - 1));
        if (r != 0) return c;
    }
    return uint64_t{0};
}

Result<uint64_t> Refcounts::refcount_area(uint64_t start, uint64_t additional, bool exact, uint64_t new_block_index,
                                          uint64_t new_block_offset) {
    const uint64_t per_cluster = cluster_size_ / 8;
    uint64_t total = 0;  // refcount blocks covering everything, themselves included
    refcount_metadata_size(start + additional, cluster_size_, order_, !exact, &total);
    uint64_t table_size = exact ? total : total + div_round_up(total, 2);
    table_size = div_round_up(table_size, per_cluster) * per_cluster;
    const uint64_t table_clusters = table_size / per_cluster;
    if (table_clusters * cluster_size_ > kMaxRefcountTableBytes) return make_error(EFBIG, "Refcount table too large");

    const uint64_t area_index = start / entries_per_block_;
    std::vector<uint64_t> nt(table_size, 0);
    std::copy_n(table_.begin(), std::min<uint64_t>(table_.size(), table_size), nt.begin());
    if (new_block_offset) {
        if (new_block_index >= total) return make_error(EIO, "New refcount block outside the new refcount table");
        nt[new_block_index] = new_block_offset;
    }
    uint64_t new_blocks = 0;
    for (uint64_t i = area_index; i < total; i++)
        if (!(nt[i] & kRefcountTableOffsetMask)) new_blocks++;
    const uint64_t table_c = start + new_blocks, end_c = table_c + table_clusters;

    QIMG_TRY(write_back());
    std::vector<std::pair<uint64_t, std::shared_ptr<Block>>> fresh;
    uint64_t block_c = start;
    for (uint64_t i = area_index; i < total; i++) {
        const uint64_t first = i * entries_per_block_;
        const uint64_t a = std::max(start, first), b = std::min(end_c, first + entries_per_block_);
        if (nt[i] & kRefcountTableOffsetMask) {
            // An existing block covers part of the area: count it there.
            for (uint64_t c = a; c < b; c++) QIMG_TRY(set(c, 1));
            continue;
        }
        auto blk = std::make_shared<Block>(cluster_size_, 0);
        for (uint64_t c = a; c < b; c++) write_entry(*blk, c - first, 1);
        nt[i] = block_c << cluster_bits_;
        fresh.emplace_back(block_c << cluster_bits_, std::move(blk));
        block_c++;
    }
    // Blocks, then the table, durable before the header points at them.
    for (auto &[off, blk] : fresh) QIMG_TRY(file_.write(off, blk->data(), cluster_size_));
    QIMG_TRY(write_back());
    std::vector<uint8_t> raw(table_size * 8, 0);
    for (uint64_t i = 0; i < table_size; i++) put_be64(&raw[i * 8], nt[i]);
    QIMG_TRY(file_.write(table_c << cluster_bits_, raw.data(), raw.size()));
    QIMG_TRY(file_.flush());
    QIMG_TRY(write_header_(table_c << cluster_bits_, uint32_t(table_clusters)));

    const uint64_t old_off = table_offset_;
    const uint32_t old_clusters = table_clusters_;
    table_ = std::move(nt);
    table_offset_ = table_c << cluster_bits_;
    table_clusters_ = uint32_t(table_clusters);
    for (auto &[off, blk] : fresh) cache_.put_new(off, std::move(blk));
    QIMG_TRY(update(old_off, uint64_t(old_clusters) << cluster_bits_, -1));
    return end_c;
}

Result<void> Refcounts::write_back() { return cache_.write_back(); }

// --- shrinking ---------------------------------------------------------------

Result<void> Refcounts::drop_empty_blocks() {
    QIMG_TRY(write_back());
    std::vector<uint64_t> nt = table_;
    std::vector<uint64_t> dropped;
    for (uint64_t ti = 0; ti < table_.size(); ti++) {
        const uint64_t bo = table_[ti] & kRefcountTableOffsetMask;
        if (!bo) continue;
        if (bo & (cluster_size_ - 1)) continue;  // left for check to report
        QIMG_ASSIGN(std::shared_ptr<Block> b, load_block(bo));
        const uint64_t self = bo >> cluster_bits_;
        bool empty = true;
        for (uint64_t i = 0; i < entries_per_block_ && empty; i++) {
            if (self / entries_per_block_ == ti && i == self % entries_per_block_) continue;
            empty = read_entry(*b, i) == 0;
        }
        if (!empty) continue;
        nt[ti] = 0;
        dropped.push_back(ti);
    }
    if (dropped.empty()) return ok();
    std::vector<uint8_t> raw(table_.size() * 8, 0);
    for (uint64_t i = 0; i < nt.size(); i++) put_be64(&raw[i * 8], nt[i]);
    QIMG_TRY(file_.write(table_offset_, raw.data(), raw.size()));
    QIMG_TRY(file_.flush());
    std::vector<uint64_t> old = std::exchange(table_, std::move(nt));
    for (uint64_t ti : dropped) {
        const uint64_t bo = old[ti] & kRefcountTableOffsetMask;
        cache_.drop(bo);
        const uint64_t self = bo >> cluster_bits_;
        // A block that counted itself went away with its table entry;
        // one counted by another block is released there.
        if (self / entries_per_block_ != ti) QIMG_TRY(update(bo, cluster_size_, -1));
        free_index_ = std::min(free_index_, self);
    }
    return ok();
}

Result<int64_t> Refcounts::last_used_cluster(uint64_t end_cluster) {
    for (uint64_t c = end_cluster; c-- > 0;) {
        QIMG_ASSIGN(uint64_t r, get(c));
        if (r) return int64_t(c);
    }
    return int64_t{-1};
}

// --- refcount width change -----------------------------------------------

struct Refcounts::OrderChange {
    uint32_t order = 0;
    uint64_t entries_per_block = 0, max = 0;
    std::vector<uint64_t> table;  // the new refcount table (block offsets)
    bool allocated = false;       // a walk allocated a new block
    std::unordered_set<uint64_t> old_metadata;  // cluster indices freed by the switch
    std::vector<uint8_t> block;   // the new block being filled (write walk)
};

// One pass over every cluster the current table covers, in new-block-sized
// groups (QEMU's walk_over_reftable). The allocating pass gives each group
// with a non-zero refcount a cluster (and grows the new table); the writing
// pass stores the groups at those clusters.
Result<void> Refcounts::walk_for_order_change(OrderChange &oc, bool write, int index, int total,
                                              const StatusFn &status) {
    uint64_t new_index = 0, new_ti = 0;
    bool empty = true;
    if (write) oc.block.assign(cluster_size_, 0);
    auto finish_block = [&]() -> Result<void> {
        if (write) {
            if (new_ti < oc.table.size() && oc.table[new_ti]) {
                QIMG_TRY(file_.write(oc.table[new_ti], oc.block.data(), cluster_size_));
            } else if (!empty) {
                return make_error(EIO, "Refcount block of the new width was not allocated");
            }
            if (!empty) std::fill(oc.block.begin(), oc.block.end(), 0);  // only non-zero values are stored
        } else if (!empty) {
            if (new_ti >= oc.table.size()) {
                const uint64_t per_cluster = cluster_size_ / 8;
                uint64_t n = (new_ti + 1 + per_cluster - 1) / per_cluster * per_cluster;
                if (n > kMaxRefcountTableBytes / 8)
                    return make_error(ENOTSUP, "This operation would make the refcount table grow beyond the maximum "
                                               "size supported by QEMU, aborting");
                oc.table.resize(n, 0);
            }
            if (!oc.table[new_ti]) {
                auto off = alloc_clusters(1);
                if (!off) return Err(off.error().prepended("Failed to allocate refblock: "));
                oc.table[new_ti] = *off;
                oc.allocated = true;
            }
        }
        new_ti++;
        new_index = 0;
        empty = true;
        return ok();
    };
    for (uint64_t ti = 0; ti < table_.size(); ti++) {
        if (status) status(int64_t(uint64_t(index) * table_.size() + ti), int64_t(uint64_t(total) * table_.size()));
        const uint64_t bo = table_[ti] & kRefcountTableOffsetMask;
        if (bo & (cluster_size_ - 1)) return make_error(EIO, "Image is corrupt (unaligned refblock offset)");
        if (!bo) {
            // No block: all zero, skipped in whole runs (tables cover far more than is used).
            for (uint64_t left = entries_per_block_; left > 0;) {
                if (new_index >= oc.entries_per_block) QIMG_TRY(finish_block());
                const uint64_t n = std::min(left, oc.entries_per_block - new_index);
                new_index += n;
                left -= n;
            }
            continue;
        }
        // A copy: allocations in finish_block() may evict the cached block
        // (what they change is seen by the next pass).
        std::vector<uint8_t> old_block;
        {
            QIMG_ASSIGN(std::shared_ptr<Block> b, load_block(bo));
            old_block = *b;
        }
        for (uint64_t bi = 0; bi < entries_per_block_; bi++) {
            if (new_index >= oc.entries_per_block) QIMG_TRY(finish_block());
            const uint64_t c = ti * entries_per_block_ + bi;
            uint64_t v = get_refcount(old_block.data(), order_, bi);
            if (v > oc.max) {
                char m[160];
                std::snprintf(m, sizeof m,
                              "Cannot decrease refcount entry width to %u bits: Cluster at offset %#" PRIx64
                              " has a refcount of %" PRIu64,
                              1u << oc.order, c << cluster_bits_, v);
                return make_error(EINVAL, m);
            }
            if (write && v && oc.old_metadata.count(c)) v = 0;
            if (write && v) set_refcount(oc.block.data(), oc.order, new_index, v);
            new_index++;
            empty = empty && v == 0;
        }
    }
    if (new_index > 0) QIMG_TRY(finish_block());
    if (status) status(int64_t(uint64_t(index + 1) * table_.size()), int64_t(uint64_t(total) * table_.size()));
    return ok();
}

Result<void> Refcounts::change_order(uint32_t new_order, const PublishFn &publish, const StatusFn &status) {
    if (new_order > 6) return make_error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
    if (new_order == order_) return ok();
    OrderChange oc;
    oc.order = new_order;
    oc.entries_per_block = (cluster_size_ * 8) >> new_order;
    oc.max = max_refcount_for(new_order);

    // Allocate the new blocks and table through the current structures
    // until a pass needs nothing more (allocations can fill new groups).
    uint64_t table_off = 0, table_alloc_entries = 0;
    int walk_index = 0;
    do {
        const int total_walks = std::max(walk_index + 2, 3);
        oc.allocated = false;
        QIMG_TRY(walk_for_order_change(oc, false, walk_index++, total_walks, status));
        if (oc.allocated) {
            if (table_off) QIMG_TRY(update(table_off, table_alloc_entries * 8, -1));
            auto off = alloc_clusters((oc.table.size() * 8 + cluster_size_ - 1) >> cluster_bits_);
            if (!off) return Err(off.error().prepended("Failed to allocate the new reftable: "));
            table_off = *off;
            table_alloc_entries = oc.table.size();
        }
    } while (oc.allocated);

    // What the switch frees: the current table and blocks.
    for (uint64_t c = table_offset_ >> cluster_bits_; c < (table_offset_ >> cluster_bits_) + table_clusters_; c++)
        oc.old_metadata.insert(c);
    for (uint64_t e : table_)
        if (e & kRefcountTableOffsetMask) oc.old_metadata.insert((e & kRefcountTableOffsetMask) >> cluster_bits_);

    // The allocations are durable before anything is written to them.
    QIMG_TRY(write_back());
    QIMG_TRY(file_.flush());
    QIMG_TRY(walk_for_order_change(oc, true, walk_index, walk_index + 1, status));
    std::vector<uint8_t> raw(oc.table.size() * 8, 0);
    for (uint64_t i = 0; i < oc.table.size(); i++) put_be64(&raw[i * 8], oc.table[i]);
    QIMG_TRY(file_.write(table_off, raw.data(), raw.size()));
    QIMG_TRY(file_.flush());
    const uint32_t clusters = uint32_t((raw.size() + cluster_size_ - 1) >> cluster_bits_);
    QIMG_TRY(publish(table_off, clusters, new_order));

    order_ = new_order;
    entries_per_block_ = oc.entries_per_block;
    max_ = oc.max;
    table_ = std::move(oc.table);
    table_offset_ = table_off;
    table_clusters_ = clusters;
    cache_.clear();
    free_index_ = 0;
    return ok();
}

}  // namespace qimg::qcow2
