// A bounded write-back cache of on-disk metadata tables, keyed by the
// table's offset in its file: qcow2 L2 tables today; vmdk grain tables, vhdx
// BAT blocks and qed L2 tables are the same shape. The format supplies how a
// table is read and written (Io) and how many tables to keep.
//
// Thread-safety: none. The owning driver serialises every call (its metadata
// mutex). A table handed out by get() stays alive while held (shared_ptr)
// even if evicted, but an edit reaches the disk only if mark_dirty(offset)
// is called before any other call that may evict (get) — i.e. edit and mark
// under the same lock hold.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "util/result.h"

namespace qimg {

template <class Table>
class TableCache {
public:
    struct Io {
        // Reads and decodes the table at `offset`.
        std::function<Result<std::shared_ptr<Table>>(uint64_t offset)> load;
        // Encodes and writes the table at `offset`.
        std::function<Result<void>(uint64_t offset, const Table &)> store;
        // Optional; runs once before dirty tables are written back, for the
        // format's write ordering (qcow2: refcounts durable before L2 tables).
        std::function<Result<void>()> before_write;
    };

    // Keeps at most max(max_tables, 2) tables; on a miss with the cache
    // full, every dirty table is written back and the least recently used
    // half is dropped.
    TableCache(size_t max_tables, Io io) : io_(std::move(io)), max_tables_(std::max<size_t>(2, max_tables)) {}
    virtual ~TableCache() = default;

    Result<std::shared_ptr<Table>> get(uint64_t offset) {
        auto it = cache_.find(offset);
        if (it == cache_.end()) {
            QIMG_TRY(evict_if_needed());
            QIMG_ASSIGN(std::shared_ptr<Table> t, io_.load(offset));
            it = cache_.emplace(offset, Entry{std::move(t), false, 0}).first;
        }
        it->second.tick = ++tick_;
        return it->second.table;
    }
    // Installs a table that is not read from disk (a fresh allocation, which
    // the caller writes itself or marks dirty).
    void put_new(uint64_t offset, std::shared_ptr<Table> t) { cache_[offset] = Entry{std::move(t), false, ++tick_}; }
    // The cached table at `offset` (if any) must be written back.
    void mark_dirty(uint64_t offset) {
        auto it = cache_.find(offset);
        if (it != cache_.end()) it->second.dirty = true;
    }
    // Forgets the table at `offset` without writing it (freed or rewritten
    // behind the cache's back).
    void drop(uint64_t offset) { cache_.erase(offset); }
    // Forgets every table without writing any (the tables changed layout).
    void clear() { cache_.clear(); }
    bool dirty() const {
        return std::any_of(cache_.begin(), cache_.end(), [](const auto &kv) { return kv.second.dirty; });
    }
    // Writes every dirty table (after Io::before_write).
    Result<void> write_back() {
        if (!dirty()) return ok();
        if (io_.before_write) QIMG_TRY(io_.before_write());
        for (auto &[off, e] : cache_) {
            if (!e.dirty) continue;
            QIMG_TRY(io_.store(off, *e.table));
            e.dirty = false;
        }
        return ok();
    }
    // Writes `t` at `offset` now, cached or not (no before_write).
    Result<void> write_table(uint64_t offset, const Table &t) { return io_.store(offset, t); }

    size_t size() const { return cache_.size(); }
    size_t capacity() const { return max_tables_; }

private:
    struct Entry {
        std::shared_ptr<Table> table;
        bool dirty = false;
        uint64_t tick = 0;  // last use
    };
    Result<void> evict_if_needed() {
        if (cache_.size() < max_tables_) return ok();
        QIMG_TRY(write_back());
        std::vector<std::pair<uint64_t, uint64_t>> by_tick;
        for (auto &[off, e] : cache_) by_tick.emplace_back(e.tick, off);
        std::sort(by_tick.begin(), by_tick.end());
        for (size_t i = 0; i < by_tick.size() / 2; i++) cache_.erase(by_tick[i].second);
        return ok();
    }

    Io io_;
    size_t max_tables_;
    std::map<uint64_t, Entry> cache_;
    uint64_t tick_ = 0;
};

}  // namespace qimg
