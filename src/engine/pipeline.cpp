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
// pages) until the kernel throttles it in bursts. Every `write_behind` bytes
// the worker that crosses the mark waits for the writeback it started last
// time, drops clean pages of the target and the sources, and starts
// writeback of what is dirty now: at most ~2 x write_behind stays dirty and
// writeback overlaps copying. The policy is here because only the engine
// knows the access is a one-pass stream; the mechanism (sync_file_range,
// posix_fadvise) is the protocol's (cache_advice()).
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
        auto start = std::chrono::steady_clock::now();
        uint64_t charged = 0;
        for (uint64_t seq = 0;; ++seq) {
            {
                std::unique_lock lk(mu_);
                cv_free_.wait(lk, [&] { return !free_bufs_.empty() || failed_; });
                if (failed_) return ok();
            }
            PipelineRequest r;
            auto more = job_.plan(r);
            if (!more) return more.error();
            if (!*more) break;
            if (o_.rate_limit && r.rate_bytes) throttle(start, charged += r.rate_bytes);
            r.seq = seq;
            bool drain = r.drain_after;
            {
                std::unique_lock lk(mu_);
                r.buf = free_bufs_.back();
                free_bufs_.pop_back();
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

    void process(PipelineRequest r) {
        if (!failed_.load()) {
            if (auto rr = job_.read(r); !rr) fail(rr.error());
        }
        if (!o_.in_order) {
            if (!failed_.load()) write_unordered(r);
            release(r);
            return;
        }
        std::unique_lock lk(mu_);
        if (failed_) {
            release_locked(r);
            drop_ready_locked();
            return;
        }
        uint64_t seq = r.seq;
        ready_.emplace(seq, std::move(r));
        if (writer_active_) return;
        writer_active_ = true;
        while (!failed_ && !ready_.empty() && ready_.begin()->first == write_cursor_) {
            PipelineRequest w = std::move(ready_.begin()->second);
            ready_.erase(ready_.begin());
            lk.unlock();
            write_checked(w);
            lk.lock();
            ++write_cursor_;
            release_locked(w);
        }
        if (failed_) drop_ready_locked();
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
        write_checked(r);
        std::lock_guard lk(mu_);
        active_.erase(std::find(active_.begin(), active_.end(), range));
        cv_conflict_.notify_all();
    }

    void write_checked(PipelineRequest &r) {
        if (auto wr = job_.write(r); !wr) {
            fail(wr.error());
            return;
        }
        if (o_.on_bytes && r.counted) o_.on_bytes(done_bytes_ += r.length, o_.total_bytes);
        if (o_.write_behind && o_.target && r.streamed) {
            uint64_t before = since_kick_.fetch_add(r.streamed);
            if (before + r.streamed >= o_.write_behind) write_behind();
        }
    }

    void write_behind() {
        std::unique_lock lk(wb_mu_, std::try_to_lock);
        if (!lk.owns_lock()) return;  // another worker is at it
        since_kick_ = 0;
        o_.target->cache_advice(BlockNode::CacheAdvice::WaitWriteback);
        o_.target->cache_advice(BlockNode::CacheAdvice::DropClean);
        o_.target->cache_advice(BlockNode::CacheAdvice::StartWriteback);
        for (BlockNode *s : o_.sources)
            for (BlockNode *n = s; n; n = n->backing()) n->cache_advice(BlockNode::CacheAdvice::DropClean);
    }

    void fail(const Error &e) {
        std::lock_guard lk(mu_);
        if (failed_) return;
        error_ = e;
        failed_ = true;
        cv_free_.notify_all();
    }

    void release(const PipelineRequest &r) {
        std::lock_guard lk(mu_);
        release_locked(r);
    }
    void release_locked(const PipelineRequest &r) {
        free_bufs_.push_back(r.buf);
        cv_free_.notify_all();
    }
    void drop_ready_locked() {
        for (auto &[_, q] : ready_) release_locked(q);
        ready_.clear();
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
    Error error_;
    std::mutex wb_mu_;
    std::atomic<uint64_t> since_kick_{0};
    std::atomic<uint64_t> done_bytes_{0};
};

}  // namespace

unsigned default_in_flight() {
    return std::clamp(2 * std::thread::hardware_concurrency(), kMaxInFlight, kMaxSlots);
}

Result<void> run_pipeline(PipelineJob &job, const PipelineOptions &o) {
    Pipeline p(job, o);
    return p.run();
}

}  // namespace qimg::engine
