// commit_image() (see commit.h): the extents come from one pass of
// chain_status() in steps of at most `chunk` bytes, as qemu-img's loop
// took them, so that the progress percentages are the same; the pipeline
// then copies them with several requests in flight.
#include "engine/commit.h"

#include <algorithm>
#include <vector>

#include "block/status.h"
#include "engine/pipeline.h"

namespace qimg::engine {
namespace {

struct Extent {
    uint64_t off, len;
    bool zero;
};

// The ranges allocated between `top` and `base`, in order, at most `chunk`
// bytes each.
Result<std::vector<Extent>> commit_extents(BlockNode &top, BlockNode &base, uint64_t chunk) {
    std::vector<Extent> out;
    uint64_t size = top.length();
    for (uint64_t off = 0; off < size;) {
        QIMG_ASSIGN(ChainStatus s, chain_status(top, &base, off, std::min(chunk, size - off)));
        if (s.bytes == 0) break;
        uint64_t n = std::min(s.bytes, chunk);  // a request never outgrows its buffer
        if (s.flags & kStatusAllocated) out.push_back({off, n, (s.flags & kStatusZero) != 0});
        off += n;
    }
    return out;
}

class CommitJob final : public PipelineJob {
public:
    CommitJob(BlockNode &top, BlockNode &base, std::vector<Extent> extents, const CommitOptions &o)
        : top_(top), base_(base), extents_(std::move(extents)), o_(o) {
        for (const Extent &e : extents_) total_ += e.len;
    }
    uint64_t total() const { return total_; }

    // The top and its chain down to the base hold the same offsets.
    void drop_read_cache(uint64_t from, uint64_t to) override { drop_chain_cache(&top_, from, to - from); }

    Result<bool> plan(PipelineRequest &r) override {
        if (next_ == extents_.size()) return false;
        const Extent &e = extents_[next_++];
        r.offset = e.off;
        r.length = e.len;
        r.kind = e.zero;
        r.counted = true;
        // As QEMU's mirror: zeroes written as zeroes do not count against the speed.
        r.rate_bytes = e.zero ? 0 : e.len;
        done_ += e.len;
        if (o_.on_progress) o_.on_progress(static_cast<float>(done_) * 100.f / static_cast<float>(total_));
        return true;
    }

    Result<void> read(PipelineRequest &r) override {
        if (r.kind) return ok();
        r.streamed = r.length;
        return top_.read(r.offset, r.buf, r.length);
    }

    Result<void> write(PipelineRequest &r) override {
        if (r.kind) return base_.write_zeroes(r.offset, r.length, kZeroMayUnmap);
        return base_.write(r.offset, r.buf, r.length);
    }

private:
    BlockNode &top_, &base_;
    std::vector<Extent> extents_;
    const CommitOptions &o_;
    size_t next_ = 0;
    uint64_t total_ = 0, done_ = 0;
};

}  // namespace

Result<void> commit_image(BlockNode &top, BlockNode &base, const CommitOptions &o) {
    uint64_t size = top.length();
    if (base.length() < size) QIMG_TRY(base.truncate(size, Prealloc::Off, false));
    uint64_t chunk = std::max<uint64_t>(o.chunk, 512);
    QIMG_ASSIGN(std::vector<Extent> extents, commit_extents(top, base, chunk));
    CommitJob job(top, base, std::move(extents), o);
    PipelineOptions po;
    po.in_flight = o.in_flight;
    po.workers = o.workers;
    po.in_order = false;
    po.buf_bytes = chunk;
    po.rate_limit = o.rate_limit;
    po.conflict_granule = write_granule(base);
    po.write_behind = o.write_behind;
    po.target = &base;
    po.total_bytes = job.total();
    QIMG_TRY(run_pipeline(job, po));
    return base.flush();
}

}  // namespace qimg::engine
