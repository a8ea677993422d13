// qcow2 L2 entries and the L2 table cache (see l1l2.h).
#include "format/qcow2/l1l2.h"

#include <algorithm>

#include "util/endian.h"

namespace qimg::qcow2 {

SubclusterType classify(uint64_t entry, uint64_t bitmap, unsigned sc, bool extended, bool has_data_file) {
    if (entry & kOflagCompressed) return SubclusterType::Compressed;
    uint64_t off = entry & kL2OffsetMask;
    bool allocated = off != 0 || (has_data_file && (entry & kOflagCopied));
    if (!extended) {
        if (entry & kOflagZero) return allocated ? SubclusterType::ZeroAlloc : SubclusterType::ZeroPlain;
        return allocated ? SubclusterType::Normal : SubclusterType::Unallocated;
    }
    uint64_t alloc_bit = uint64_t{1} << sc, zero_bit = uint64_t{1} << (sc + 32);
    if (allocated) {
        if ((bitmap >> 32) & bitmap) return SubclusterType::Invalid;
        if (bitmap & zero_bit) return SubclusterType::ZeroAlloc;
        if (bitmap & alloc_bit) return SubclusterType::Normal;
        return SubclusterType::UnallocatedAlloc;
    }
    if (bitmap & zero_bit) return SubclusterType::ZeroPlain;
    if (bitmap & alloc_bit) return SubclusterType::Invalid;
    return SubclusterType::Unallocated;
}

L2Cache::L2Cache(BlockNode &file, uint64_t cluster_size, std::function<Result<void>()> before_write)
    : file_(file), cluster_size_(cluster_size), before_write_(std::move(before_write)) {
    // 32 MiB of tables (at least 16 tables), like a generous QEMU l2-cache-size.
    max_tables_ = std::max<size_t>(16, (32u << 20) / cluster_size);
}

Result<void> L2Cache::write_table(uint64_t offset, const L2Table &t) {
    std::vector<uint8_t> raw(cluster_size_);
    for (size_t i = 0; i < t.size(); i++) put_be64(&raw[i * 8], t[i]);
    return file_.write(offset, raw.data(), raw.size());
}

Result<void> L2Cache::evict_if_needed() {
    if (cache_.size() < max_tables_) return ok();
    QIMG_TRY(write_back());
    std::vector<std::pair<uint64_t, uint64_t>> by_tick;
    for (auto &[off, e] : cache_) by_tick.emplace_back(e.tick, off);
    std::sort(by_tick.begin(), by_tick.end());
    for (size_t i = 0; i < by_tick.size() / 2; i++) cache_.erase(by_tick[i].second);
    return ok();
}

Result<std::shared_ptr<L2Table>> L2Cache::get(uint64_t offset) {
    auto it = cache_.find(offset);
    if (it == cache_.end()) {
        QIMG_TRY(evict_if_needed());
        std::vector<uint8_t> raw(cluster_size_);
        QIMG_TRY(read_padded(file_, offset, raw.data(), raw.size()));
        auto t = std::make_shared<L2Table>(cluster_size_ / 8);
        for (size_t i = 0; i < t->size(); i++) (*t)[i] = be64(&raw[i * 8]);
        it = cache_.emplace(offset, Entry{std::move(t), false, 0}).first;
    }
    it->second.tick = ++tick_;
    return it->second.table;
}

void L2Cache::put_new(uint64_t offset, std::shared_ptr<L2Table> t) { cache_[offset] = Entry{std::move(t), false, ++tick_}; }

void L2Cache::mark_dirty(uint64_t offset) {
    auto it = cache_.find(offset);
    if (it != cache_.end()) it->second.dirty = true;
}

void L2Cache::drop(uint64_t offset) { cache_.erase(offset); }

bool L2Cache::dirty() const {
    return std::any_of(cache_.begin(), cache_.end(), [](const auto &kv) { return kv.second.dirty; });
}

Result<void> L2Cache::write_back() {
    if (!dirty()) return ok();
    QIMG_TRY(before_write_());
    for (auto &[off, e] : cache_) {
        if (!e.dirty) continue;
        QIMG_TRY(write_table(off, *e.table));
        e.dirty = false;
    }
    return ok();
}

}  // namespace qimg::qcow2
