// The request pipeline (see pipeline.h). With in-order writes, a finished
// read waits in a reorder map and whichever worker completes the request at
// the write cursor writes it and every ready successor, so no worker ever
// sleeps while holding a buffer it could be reading into. Out of order, a
// worker writes as soon as it has read, after waiting for any write in
// flight that shares a conflict granule with its range; since the
// dispatcher plans disjoint ranges in order, only neighbours ever wait.
//
// Write-behind: a copy streams through data it never reads again, so left
// alone it fills the page cache with dirty target pages (and clean source
// pages) until the kernel throttles it in bursts; a container that imports
// a big image is OOM-killed for that dirty memory. With `write_behind` set,
// a thread of its own keeps writing the target back as the copy goes: once
// a quarter of the budget has been written since its last round it starts
// writeback of the whole target (sync_file_range), waits for it, drops the
// clean pages, and lets the job drop the source pages every request below
// the read frontier has been read from. The workers never wait for the
// disk unless the bytes written and not yet written back exceed the
// budget, so copying and writeback overlap; at most about `write_behind`
// bytes of the target are in the page cache at any time. The policy is
// here because only the engine knows the access is a one-pass stream; the
// mechanism (sync_file_range, posix_fadvise) is the protocol's
// (cache_advice()).
#include "engine/pipeline.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace qimg::engine {
namespace {

struct FreeDeleter {
    void operator()(uint8_t *p) const { std::free(p); }
};

class Pipeline {
public:
    Pipeline(PipelineJob &job, const PipelineOptions &o) : job_(job), o_(o) {}

    Result<void> run() {
        size_t buf_bytes = std::max<size_t>(o_.buf_bytes, 1);
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
        std::thread wb;
        if (o_.write_behind && o_.target) wb = std::thread([this] { write_behind_loop(); });

        Result<void> plan_result = dispatch();

        {
            std::unique_lock lk(mu_);
            closing_ = true;
            cv_work_.notify_all();
        }
        for (auto &t : pool) t.join();
        if (wb.joinable()) {
            {
                std::lock_guard lk(wb_mu_);
                wb_stop_ = true;
                wb_cv_.notify_all();
            }
            wb.join();
        }
        if (!plan_result) return plan_result;
        if (failed_) return Err(error_);
        return ok();
    }

private:
    // Plans requests in order and queues them, at most `slots` at a time.
    // Planning runs up to `lookahead` requests ahead of the free buffers,
    // and each planned request is announced to the job (prefetch()): the
    // source starts reading it before a worker is free to, so the disk sees
    // about twice as many requests as there are threads. Not past a request
    // that drains (the next plan depends on its writes), nor with a rate
    // limit (which is charged as requests are queued).
    Result<void> dispatch() {
        auto start = std::chrono::steady_clock::now();
        uint64_t charged = 0;
        const size_t lookahead = o_.rate_limit ? 0 : buffers_.size();
        std::deque<PipelineRequest> planned;
        bool end = false;
        for (uint64_t seq = 0;; ++seq) {
            while (!end && planned.size() <= lookahead && (planned.empty() || !planned.back().drain_after)) {
                PipelineRequest r;
                auto more = job_.plan(r);
                if (!more) return more.error();
                if (!*more) {
                    end = true;
                    break;
                }
                job_.prefetch(r);
                planned.push_back(std::move(r));
            }
            if (planned.empty()) break;
            {
                std::unique_lock lk(mu_);
                cv_free_.wait(lk, [&] { return !free_bufs_.empty() || failed_; });
                if (failed_) return ok();
            }
            PipelineRequest r = std::move(planned.front());
            planned.pop_front();
            if (o_.rate_limit && r.rate_bytes) throttle(start, charged += r.rate_bytes);
            r.seq = seq;
            bool drain = r.drain_after;
            {
                std::unique_lock lk(mu_);
                r.buf = free_bufs_.back();
                free_bufs_.pop_back();
                reading_.insert(r.offset);
                planned_end_ = r.offset + r.length;
                queue_.push_back(std::move(r));
                cv_work_.notify_one();
            }
            if (drain) wait_idle();
        }
        wait_idle();
        return ok();
    }

    // Waits until every queued request is written (or dropped after a failure).
    void wait_idle() {
        std::unique_lock lk(mu_);
        cv_free_.wait(lk, [&] { return free_bufs_.size() == buffers_.size(); });
    }

    // Keeps the bytes charged at or below rate_limit per second.
    void throttle(std::chrono::steady_clock::time_point start, uint64_t bytes) {
        auto due = start + std::chrono::duration<double>(static_cast<double>(bytes) / o_.rate_limit);
        std::this_thread::sleep_until(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
    }

    void worker() {
        for (;;) {
            PipelineRequest r;
            {
                std::unique_lock lk(mu_);
                cv_work_.wait(lk, [&] { return !queue_.empty() || closing_; });
                if (queue_.empty()) return;
                r = std::move(queue_.front());
                queue_.pop_front();
            }
            process(std::move(r));
        }
    }

    // After a failure, the requests planned before the failed one still run
    // (they were in flight, as in qemu-img) and a failure among them takes
    // its place: the error reported is the one at the lowest plan position,
    // whichever thread met its error first.
    bool cancelled(const PipelineRequest &r) const { return r.seq >= failed_seq_.load(); }

    void process(PipelineRequest r) {
        if (!cancelled(r)) {
            if (auto rr = job_.read(r); !rr) fail(rr.error(), r.seq);
        }
        std::unique_lock lk(mu_);
        reading_.erase(reading_.find(r.offset));
        if (!o_.in_order) {
            lk.unlock();
            if (!cancelled(r)) write_unordered(r);
            release(r);
            return;
        }
        if (cancelled(r)) {
            release_locked(r);
            drop_cancelled_locked();
            return;
        }
        uint64_t seq = r.seq;
        ready_.emplace(seq, std::move(r));
        if (writer_active_) return;
        writer_active_ = true;
        while (!ready_.empty() && ready_.begin()->first == write_cursor_ && !cancelled(ready_.begin()->second)) {
            PipelineRequest w = std::move(ready_.begin()->second);
            ready_.erase(ready_.begin());
            lk.unlock();
            write_checked(w);
            lk.lock();
            ++write_cursor_;
            release_locked(w);
        }
        drop_cancelled_locked();
        writer_active_ = false;
    }

    // The aligned block range [a, b) a request's writes may touch.
    std::pair<uint64_t, uint64_t> granules(const PipelineRequest &r) const {
        uint64_t g = std::max<uint64_t>(o_.conflict_granule, 1);
        return {r.offset / g * g, (r.offset + r.length + g - 1) / g * g};
    }

    void write_unordered(PipelineRequest &r) {
        auto range = granules(r);
        {
            std::unique_lock lk(mu_);
            cv_conflict_.wait(lk, [&] {
                return std::none_of(active_.begin(), active_.end(), [&](const auto &a) {
                    return a.first < range.second && range.first < a.second;
                });
            });
            active_.push_back(range);
        }
        if (!cancelled(r)) write_checked(r);
        std::lock_guard lk(mu_);
        active_.erase(std::find(active_.begin(), active_.end(), range));
        cv_conflict_.notify_all();
    }

    void write_checked(PipelineRequest &r) {
        if (auto wr = job_.write(r); !wr) {
            fail(wr.error(), r.seq);
            return;
        }
        if (o_.on_bytes && r.counted) o_.on_bytes(done_bytes_ += r.length, o_.total_bytes);
        if (o_.write_behind && o_.target && r.streamed) {
            std::unique_lock lk(wb_mu_);
            written_ += r.streamed;
            if (written_ - kicked_ >= kick_bytes()) wb_cv_.notify_all();
            // Over budget: wait for the round in progress to write back.
            wb_room_.wait(lk, [&] { return written_ - clean_ <= o_.write_behind || wb_stop_ || failed_.load(); });
        }
    }

    uint64_t kick_bytes() const { return std::max<uint64_t>(o_.write_behind / 4, 1); }

    // The write-behind thread (see the top of this file).
    void write_behind_loop() {
        uint64_t dropped_to = 0;
        for (;;) {
            uint64_t snap;
            {
                std::unique_lock lk(wb_mu_);
                wb_cv_.wait(lk, [&] { return wb_stop_ || written_ - kicked_ >= kick_bytes(); });
                if (wb_stop_) return;
                snap = kicked_ = written_;
            }
            o_.target->cache_advice(BlockNode::CacheAdvice::StartWriteback);
            o_.target->cache_advice(BlockNode::CacheAdvice::WaitWriteback);
            o_.target->cache_advice(BlockNode::CacheAdvice::DropClean);
            uint64_t frontier;
            {
                std::lock_guard lk(mu_);
                frontier = reading_.empty() ? planned_end_ : *reading_.begin();
            }
            if (frontier > dropped_to) {
                job_.drop_read_cache(dropped_to, frontier);
                dropped_to = frontier;
            }
            std::lock_guard lk(wb_mu_);
            clean_ = snap;
            wb_room_.notify_all();
        }
    }

    void fail(const Error &e, uint64_t seq) {
        std::lock_guard lk(mu_);
        if (seq >= failed_seq_.load()) return;
        error_ = e;
        failed_seq_ = seq;
        failed_ = true;
        cv_free_.notify_all();
        std::lock_guard wl(wb_mu_);
        wb_room_.notify_all();
    }

    void release(const PipelineRequest &r) {
        std::lock_guard lk(mu_);
        release_locked(r);
    }
    void release_locked(const PipelineRequest &r) {
        free_bufs_.push_back(r.buf);
        cv_free_.notify_all();
    }
    // Releases the ready requests at or after the failed one.
    void drop_cancelled_locked() {
        for (auto it = ready_.lower_bound(failed_seq_.load()); it != ready_.end();) {
            release_locked(it->second);
            it = ready_.erase(it);
        }
    }

    PipelineJob &job_;
    const PipelineOptions &o_;
    std::vector<std::unique_ptr<uint8_t, FreeDeleter>> buffers_;

    std::mutex mu_;
    std::condition_variable cv_work_, cv_free_, cv_conflict_;
    std::vector<uint8_t *> free_bufs_;
    std::deque<PipelineRequest> queue_;
    std::map<uint64_t, PipelineRequest> ready_;
    std::vector<std::pair<uint64_t, uint64_t>> active_;  // unordered writes in flight (granule ranges)
    uint64_t write_cursor_ = 0;
    bool writer_active_ = false;
    bool closing_ = false;
    std::atomic<bool> failed_{false};
    std::atomic<uint64_t> failed_seq_{UINT64_MAX};  // plan position of the failure reported
    Error error_;
    std::multiset<uint64_t> reading_;  // offsets of the requests planned and not yet read
    uint64_t planned_end_ = 0;          // end of the last planned request
    // Write-behind, under wb_mu_: bytes streamed to the target, as of the
    // start of the last round, and as of the end of the last finished round.
    std::mutex wb_mu_;
    std::condition_variable wb_cv_, wb_room_;
    uint64_t written_ = 0, kicked_ = 0, clean_ = 0;
    bool wb_stop_ = false;
    std::atomic<uint64_t> done_bytes_{0};
};

}  // namespace

void drop_chain_cache(BlockNode *node, uint64_t off, uint64_t len) {
    if (len == 0) return;
    for (BlockNode *n = node; n; n = n->backing()) n->cache_advice(BlockNode::CacheAdvice::DropClean, off, len);
}

uint64_t write_behind_budget(const MemoryRoom &room) {
    std::optional<uint64_t> budget;
    if (room.cgroup_room) budget = *room.cgroup_room / 4;
    if (room.mem_available) budget = std::min(budget.value_or(UINT64_MAX), *room.mem_available / 2);
    if (!budget) return kFallbackWriteBehind;
    return std::max(*budget, kMinWriteBehind) >> 20 << 20;
}

uint64_t default_write_behind() {
    static const uint64_t budget = write_behind_budget(probe_memory_room());
    return budget;
}

unsigned default_in_flight() {
    return std::clamp(2 * std::thread::hardware_concurrency(), kMinDefaultInFlight, kMaxSlots);
}

Result<void> run_pipeline(PipelineJob &job, const PipelineOptions &o) {
    Pipeline p(job, o);
    return p.run();
}

}  // namespace qimg::engine
