// The convert copy pipeline (see copy.h). One dispatching thread plans
// requests from allocation status and hands them to worker threads (one per
// request slot); each request owns one buffer of a fixed pool (in_flight x
// buf_sectors, 2 MiB each; by default at most 128 MiB together). With in-order writes, a finished read
// waits in a reorder map and whichever worker completes the request at the
// write cursor writes it and every ready successor, so no worker ever sleeps
// while holding a buffer it could be reading into.
//
// Write-behind (CopyOptions::write_behind): a convert streams through data
// it never reads again, so left alone it fills the page cache with dirty
// target pages (and clean source pages) until the kernel throttles it in
// bursts. Every 64 MiB the worker that crosses the mark waits for the
// writeback it started last time, drops clean pages of the target and the
// sources, and starts writeback of what is dirty now: at most ~2 x 64 MiB
// stays dirty and writeback overlaps copying. The policy is here because only
// the engine knows the access is a one-pass stream; the mechanism
// (sync_file_range, posix_fadvise) is the protocol's (cache_advice()).
//
// Compressed targets (-c): requests are single clusters, as in qemu-img;
// the worker that read a cluster also compresses it (so compression runs on
// every core), and only the allocation and write of the compressed bytes is
// ordered, which keeps the packed layout qemu-img produces.
#include "engine/copy.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "block/status.h"

namespace qimg::engine {

bool buffer_is_zero(const uint8_t *p, size_t len) {
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        if (v) return false;
    }
    for (; i < len; ++i)
        if (p[i]) return false;
    return true;
}

namespace {

// qemu-img's is_allocated_sectors(): the run of sectors sharing the first
// sector's zero-ness, with the end aligned to `alignment` where that avoids
// read-modify-write on the target.
bool allocated_sectors(const uint8_t *buf, int64_t n, int64_t *pnum, int64_t sector_num, int64_t alignment) {
    if (n <= 0) {
        *pnum = 0;
        return false;
    }
    bool is_zero = buffer_is_zero(buf, kSectorSize);
    int64_t i = 1;
    for (; i < n; ++i)
        if (is_zero != buffer_is_zero(buf + i * kSectorSize, kSectorSize)) break;
    if (i == n) {
        *pnum = i;
        return !is_zero;
    }
    int64_t tail = (sector_num + i) & (alignment - 1);
    if (tail) {
        if (is_zero && i <= tail) is_zero = false;  // the next data write rewrites this tail anyway
        if (!is_zero) i = std::min(i + alignment - tail, n);
        else i -= tail;
    }
    *pnum = i;
    return !is_zero;
}

}  // namespace

bool allocated_sectors_min(const uint8_t *buf, int64_t n, int64_t *pnum, int64_t min, int64_t sector_num,
                           int64_t alignment) {
    if (n < min) min = n;
    if (!allocated_sectors(buf, n, pnum, sector_num, alignment)) return false;
    // Zero runs shorter than `min` inside data are written as data, so that
    // small sparse areas do not split the write.
    int64_t used = *pnum, checked = used;
    buf += kSectorSize * *pnum;
    n -= *pnum;
    sector_num += *pnum;
    while (n > 0) {
        bool r = allocated_sectors(buf, n, pnum, sector_num, alignment);
        buf += kSectorSize * *pnum;
        n -= *pnum;
        sector_num += *pnum;
        checked += *pnum;
        if (r) used = checked;
        else if (*pnum >= min) break;
    }
    *pnum = used;
    return true;
}

namespace {

enum class Kind { Data, Zero, Backing, Done };  // Done: already copied (offload)

// Largest request qemu's block layer accepts (BDRV_REQUEST_MAX_SECTORS).
constexpr int64_t kRequestMaxSectors = 0x7fffffff >> 9;

struct Part {
    BlockNode *node;
    int64_t sectors;
    int64_t alignment;  // sectors
};

// The planner: qemu-img's convert_iteration_sectors() over the
// concatenated sources.
class Planner {
public:
    Planner(std::vector<Part> parts, const CopyOptions &o) : parts_(std::move(parts)), o_(o) {
        for (auto &p : parts_) total_ += p.sectors;
    }
    int64_t total() const { return total_; }
    std::vector<BlockNode *> nodes() const {
        std::vector<BlockNode *> v;
        for (auto &p : parts_) v.push_back(p.node);
        return v;
    }
    Kind kind() const { return kind_; }
    void reset() { next_status_ = 0; }

    // Locates the source holding `sector`.
    void select(int64_t sector, size_t &idx, int64_t &base) const {
        idx = 0;
        base = 0;
        while (sector - base >= parts_[idx].sectors) base += parts_[idx++].sectors;
    }

    Result<int64_t> next(int64_t sector) {
        size_t idx;
        int64_t part_base;
        select(sector, idx, part_base);
        int64_t n = std::min(total_ - sector, kRequestMaxSectors);
        if (next_status_ <= sector) {
            uint64_t offset = static_cast<uint64_t>(sector - part_base) * kSectorSize;
            BlockNode *src = parts_[idx].node;
            BlockNode *base = o_.target_has_backing ? src->backing() : nullptr;
            uint32_t flags = 0;
            uint64_t count = 0;
            for (;;) {
                auto st = chain_status(*src, base, offset, static_cast<uint64_t>(n) * kSectorSize);
                if (st) {
                    flags = st->flags;
                    count = st->bytes;
                    break;
                }
                if (!o_.salvage)
                    return make_error(st.error().code, "error while reading block status at offset " +
                                                           std::to_string(offset) + ": " +
                                                           std::strerror(st.error().code));
                if (n == 1) {
                    if (!o_.quiet && o_.on_warning)
                        o_.on_warning("error while reading block status at offset " + std::to_string(offset) +
                                      ": " + std::strerror(st.error().code));
                    flags = kStatusData;
                    count = kSectorSize;
                    break;
                }
                n = (n + 3) / 4;
            }
            if (count == 0) count = kSectorSize;  // defensive: never stall
            n = static_cast<int64_t>((count + kSectorSize - 1) / kSectorSize);
            int64_t tail = (sector - part_base + n) % parts_[idx].alignment;
            if (n > tail) n -= tail;
            if (flags & kStatusZero) kind_ = Kind::Zero;
            else if (flags & kStatusData) kind_ = Kind::Data;
            else kind_ = o_.target_has_backing ? Kind::Backing : Kind::Data;
            next_status_ = sector + n;
        }
        n = std::min(n, next_status_ - sector);
        if (kind_ == Kind::Data) n = std::min<int64_t>(n, static_cast<int64_t>(o_.buf_sectors));
        if (o_.compressed) {
            // Compressed clusters are written whole: a short extent makes the
            // whole cluster data (qemu-img changes its status the same way).
            int64_t cs = static_cast<int64_t>(o_.cluster_sectors);
            if (n < cs) {
                n = std::min(cs, total_ - sector);
                kind_ = Kind::Data;
            } else {
                n -= n % cs;
            }
        }
        return n;
    }

    // -C: copies sectors [sector, sector+n) of the concatenation to the same
    // place in `target` with the nodes' offloaded copy.
    Result<void> copy_range(int64_t sector, int64_t n, BlockNode &target) const {
        while (n > 0) {
            size_t idx;
            int64_t part_base;
            select(sector, idx, part_base);
            int64_t m = std::min(n, parts_[idx].sectors - (sector - part_base));
            uint64_t off = static_cast<uint64_t>(sector - part_base) * kSectorSize;
            QIMG_TRY(parts_[idx].node->copy_range_from(off, target, static_cast<uint64_t>(sector) * kSectorSize,
                                                       static_cast<uint64_t>(m) * kSectorSize));
            sector += m;
            n -= m;
        }
        return ok();
    }

    // Reads sectors [sector, sector+n) of the concatenation into buf.
    Result<void> read(int64_t sector, int64_t n, uint8_t *buf) const {
        int64_t single_until = 0;  // salvage: retry sector by sector up to here
        while (n > 0) {
            size_t idx;
            int64_t part_base;
            select(sector, idx, part_base);
            int64_t m = std::min(n, parts_[idx].sectors - (sector - part_base));
            uint64_t off = static_cast<uint64_t>(sector - part_base) * kSectorSize;
            if (single_until > sector) m = 1;
            auto r = read_padded(*parts_[idx].node, off, buf, static_cast<size_t>(m) * kSectorSize);
            if (!r) {
                if (!o_.salvage) return r;
                if (m > 1) {
                    single_until = sector + m;
                    continue;
                }
                if (!o_.quiet && o_.on_warning)
                    o_.on_warning("error while reading offset " + std::to_string(off) + ": " +
                                  std::strerror(r.error().code));
                std::memset(buf, 0, kSectorSize);
            }
            sector += m;
            n -= m;
            buf += m * kSectorSize;
        }
        return ok();
    }

private:
    std::vector<Part> parts_;
    const CopyOptions &o_;
    int64_t total_ = 0;
    int64_t next_status_ = 0;
    Kind kind_ = Kind::Data;
};

struct Request {
    int64_t sector = 0, n = 0;
    Kind kind = Kind::Data;
    uint8_t *buf = nullptr;
    bool counted = false;        // part of the planned work (progress)
    std::vector<uint8_t> cdata;  // -c: the compressed cluster (empty: store as is)
};

struct FreeDeleter {
    void operator()(uint8_t *p) const { std::free(p); }
};

class Pipeline {
public:
    Pipeline(Planner &planner, BlockNode &target, const CopyOptions &o) : planner_(planner), target_(target), o_(o) {}

    Result<void> run() {
        size_t buf_bytes = o_.buf_sectors * kSectorSize;
        unsigned slots = std::clamp(o_.in_flight, 1u, kMaxSlots);
        if (o_.in_flight == 0) {
            slots = default_in_flight();
            while (slots > 1 && slots * buf_bytes > kMaxBufferBytes) --slots;
        }
        unsigned workers = std::min(o_.workers ? o_.workers : slots, slots);
        for (unsigned i = 0; i < slots; ++i) {
            void *p = nullptr;
            if (posix_memalign(&p, 4096, buf_bytes) != 0) return make_error(ENOMEM, "Could not allocate buffer");
            buffers_.emplace_back(static_cast<uint8_t *>(p));
            free_bufs_.push_back(buffers_.back().get());
        }
        std::vector<std::thread> pool;
        for (unsigned i = 0; i < workers; ++i) pool.emplace_back([this] { worker(); });

        Result<void> plan_result = dispatch();

        {
            std::unique_lock lk(mu_);
            closing_ = true;
            cv_work_.notify_all();
        }
        for (auto &t : pool) t.join();
        if (!plan_result) return plan_result;
        if (failed_) return Err(error_);
        return ok();
    }

private:
    // Plans requests in order and queues them, at most `slots` at a time.
    Result<void> dispatch() {
        int64_t allocated = 0;
        // First pass: how much will be copied, for the percentage.
        for (int64_t s = 0; s < planner_.total();) {
            QIMG_ASSIGN(int64_t n, planner_.next(s));
            if (planner_.kind() == Kind::Data || (!o_.min_sparse && planner_.kind() == Kind::Zero)) allocated += n;
            s += n;
        }
        planner_.reset();
        total_bytes_ = static_cast<uint64_t>(allocated) * kSectorSize;
        if (o_.on_bytes) o_.on_bytes(0, total_bytes_);
        int64_t done = 0;
        auto start = std::chrono::steady_clock::now();
        uint64_t bytes_sent = 0;
        for (int64_t s = 0; s < planner_.total();) {
            {
                std::unique_lock lk(mu_);
                cv_free_.wait(lk, [&] { return !free_bufs_.empty() || failed_; });
                if (failed_) return ok();
            }
            QIMG_ASSIGN(int64_t n, planner_.next(s));
            Kind kind = planner_.kind();
            if (!o_.min_sparse && kind == Kind::Zero) n = std::min<int64_t>(n, static_cast<int64_t>(o_.buf_sectors));
            if (kind == Kind::Data || (!o_.min_sparse && kind == Kind::Zero)) {
                done += n;
                if (o_.on_progress) o_.on_progress(static_cast<float>(100.0 * done / allocated));
                if (o_.rate_limit) throttle(start, bytes_sent += static_cast<uint64_t>(n) * kSectorSize);
            }
            std::unique_lock lk(mu_);
            Request r{s, n, kind, free_bufs_.back(), kind == Kind::Data || (!o_.min_sparse && kind == Kind::Zero)};
            free_bufs_.pop_back();
            queue_.push_back(r);
            cv_work_.notify_one();
            s += n;
        }
        std::unique_lock lk(mu_);
        cv_free_.wait(lk, [&] { return free_bufs_.size() == buffers_.size(); });
        return ok();
    }

    // -r: keeps the bytes issued at or below rate_limit per second.
    void throttle(std::chrono::steady_clock::time_point start, uint64_t bytes) {
        auto due = start + std::chrono::duration<double>(static_cast<double>(bytes) / o_.rate_limit);
        std::this_thread::sleep_until(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
    }

    void worker() {
        for (;;) {
            Request r;
            {
                std::unique_lock lk(mu_);
                cv_work_.wait(lk, [&] { return !queue_.empty() || closing_; });
                if (queue_.empty()) return;
                r = queue_.front();
                queue_.pop_front();
            }
            process(r);
        }
    }

    void process(Request r) {
        if (!failed_.load()) {
            if (r.kind == Kind::Data && o_.copy_offload && !offload_off_.load()) {
                // qemu-img: the first failure turns offloading off for good
                // and the request is copied the ordinary way.
                if (planner_.copy_range(r.sector, r.n, target_)) r.kind = Kind::Done;
                else offload_off_ = true;
            }
            if (r.kind == Kind::Data) {
                auto rr = planner_.read(r.sector, r.n, r.buf);
                if (!rr) fail(rr.error(), "reading", r.sector);
                else if (o_.compressed) compress(r);
            } else if (!o_.min_sparse && r.kind == Kind::Zero) {
                std::memset(r.buf, 0, static_cast<size_t>(r.n) * kSectorSize);
                r.kind = Kind::Data;
            }
        }
        if (!o_.in_order) {
            if (!failed_.load()) write_checked(r);
            release(r);
            return;
        }
        std::unique_lock lk(mu_);
        if (failed_) {
            release_locked(r);
            drop_ready_locked();
            return;
        }
        ready_[r.sector] = std::move(r);
        if (writer_active_) return;
        writer_active_ = true;
        while (!failed_ && !ready_.empty() && ready_.begin()->first == write_cursor_) {
            Request w = std::move(ready_.begin()->second);
            ready_.erase(ready_.begin());
            lk.unlock();
            write_checked(w);
            lk.lock();
            write_cursor_ = w.sector + w.n;
            release_locked(w);
        }
        if (failed_) drop_ready_locked();
        writer_active_ = false;
    }

    // -c, in the worker: an all-zero cluster becomes a zero request (not
    // written on a zero-initialised target), anything else is compressed.
    void compress(Request &r) {
        size_t len = static_cast<size_t>(r.n) * kSectorSize;
        if (o_.min_sparse && buffer_is_zero(r.buf, len)) {
            r.kind = Kind::Zero;
            return;
        }
        auto c = target_.compress_cluster(r.buf, len, o_.compress);
        if (!c) fail(c.error(), "writing", r.sector);
        else r.cdata = std::move(*c);
    }

    void write_checked(const Request &r) {
        auto wr = write_request(r);
        if (!wr) {
            fail(wr.error(), "writing", r.sector);
            return;
        }
        if (o_.on_bytes && r.counted)
            o_.on_bytes(done_bytes_ += static_cast<uint64_t>(r.n) * kSectorSize, total_bytes_);
        if (o_.write_behind && (r.kind == Kind::Data || r.kind == Kind::Done)) {
            uint64_t bytes = static_cast<uint64_t>(r.n) * kSectorSize;
            uint64_t before = since_kick_.fetch_add(bytes);
            if (before + bytes >= o_.write_behind) write_behind();
        }
    }

    void write_behind() {
        std::unique_lock lk(wb_mu_, std::try_to_lock);
        if (!lk.owns_lock()) return;  // another worker is at it
        since_kick_ = 0;
        target_.cache_advice(BlockNode::CacheAdvice::WaitWriteback);
        target_.cache_advice(BlockNode::CacheAdvice::DropClean);
        target_.cache_advice(BlockNode::CacheAdvice::StartWriteback);
        for (BlockNode *s : planner_.nodes())
            for (BlockNode *n = s; n; n = n->backing()) n->cache_advice(BlockNode::CacheAdvice::DropClean);
    }

    // qemu-img's convert_co_write().
    Result<void> write_request(const Request &r) {
        int64_t sector = r.sector, left = r.n;
        const uint8_t *buf = r.buf;
        while (left > 0) {
            int64_t n = left;
            bool as_data = false;
            if (r.kind == Kind::Done) {
                break;
            } else if (r.kind == Kind::Backing) {
                // Unallocated in the source: leave it to the target's backing file.
            } else if (r.kind == Kind::Data && o_.compressed) {
                return target_.write_compressed_data(static_cast<uint64_t>(sector) * kSectorSize, r.cdata, buf,
                                                     static_cast<size_t>(n) * kSectorSize);
            } else if (r.kind == Kind::Data) {
                as_data = !o_.min_sparse || o_.copy_offload ||
                          allocated_sectors_min(buf, left, &n, static_cast<int64_t>(o_.min_sparse), sector,
                                                alignment());
            }
            if (as_data) {
                QIMG_TRY(target_.write(static_cast<uint64_t>(sector) * kSectorSize, buf,
                                       static_cast<size_t>(n) * kSectorSize));
            } else if (r.kind != Kind::Backing && !o_.target_is_zero) {
                QIMG_TRY(target_.write_zeroes(static_cast<uint64_t>(sector) * kSectorSize,
                                              static_cast<uint64_t>(n) * kSectorSize, kZeroMayUnmap));
            }
            sector += n;
            left -= n;
            buf += n * kSectorSize;
        }
        return ok();
    }

    int64_t alignment() const {
        // pow2floor(min_sparse), at least the target's request alignment in sectors.
        int64_t a = 1;
        while (a * 2 <= static_cast<int64_t>(o_.min_sparse)) a *= 2;
        int64_t t = (target_.request_alignment() + kSectorSize - 1) / kSectorSize;
        return std::max(a, t);
    }

    void fail(const Error &e, const char *what, int64_t sector) {
        std::lock_guard lk(mu_);
        if (failed_) return;
        error_ = make_error(e.code, std::string("error while ") + what + " at byte " +
                                        std::to_string(sector * static_cast<int64_t>(kSectorSize)) + ": " +
                                        std::strerror(e.code));
        failed_ = true;
        cv_free_.notify_all();
    }

    void release(const Request &r) {
        std::lock_guard lk(mu_);
        release_locked(r);
    }
    void release_locked(const Request &r) {
        free_bufs_.push_back(r.buf);
        cv_free_.notify_all();
    }
    void drop_ready_locked() {
        for (auto &[_, q] : ready_) release_locked(q);
        ready_.clear();
    }

    Planner &planner_;
    BlockNode &target_;
    const CopyOptions &o_;
    std::vector<std::unique_ptr<uint8_t, FreeDeleter>> buffers_;

    std::mutex mu_;
    std::condition_variable cv_work_, cv_free_;
    std::vector<uint8_t *> free_bufs_;
    std::deque<Request> queue_;
    std::map<int64_t, Request> ready_;
    int64_t write_cursor_ = 0;
    bool writer_active_ = false;
    bool closing_ = false;
    std::atomic<bool> failed_{false};
    Error error_;
    std::mutex wb_mu_;
    std::atomic<uint64_t> since_kick_{0};
    std::atomic<bool> offload_off_{false};
    uint64_t total_bytes_ = 0;
    std::atomic<uint64_t> done_bytes_{0};
};

}  // namespace

unsigned default_in_flight() {
    return std::clamp(2 * std::thread::hardware_concurrency(), kMaxInFlight, kMaxSlots);
}

Result<void> copy_images(const std::vector<BlockNode *> &sources, BlockNode &target, const CopyOptions &opts) {
    std::vector<Part> parts;
    for (BlockNode *s : sources) {
        int64_t align = (s->request_alignment() + kSectorSize - 1) / kSectorSize;
        align = std::max<int64_t>(align, s->cluster_size() / kSectorSize);
        parts.push_back({s, static_cast<int64_t>(sector_length(*s) / kSectorSize), std::max<int64_t>(align, 1)});
    }
    CopyOptions o = opts;
    o.buf_sectors = std::clamp<uint64_t>(o.buf_sectors, 1, kMaxBufSectors);
    if (o.compressed) {
        // Only one cluster per request (qemu-img's buffer for -c).
        if (o.cluster_sectors == 0 || o.cluster_sectors > o.buf_sectors)
            return make_error(EINVAL, "invalid cluster size");
        o.buf_sectors = o.cluster_sectors;
    }
    Planner planner(std::move(parts), o);
    if (planner.total() == 0) return ok();
    Pipeline p(planner, target, o);
    QIMG_TRY(p.run());
    // qemu-img's end-of-compressed-writes signal (the driver aligns its file).
    if (o.compressed) QIMG_TRY(target.write_compressed(0, nullptr, 0));
    return ok();
}

}  // namespace qimg::engine
