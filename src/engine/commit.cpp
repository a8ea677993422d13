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

// QEMU's commit job is a mirror that copies whole chunks of its dirty
// bitmap's granularity (the base's cluster size, within [4k, 64k]). Reads
// through a filter on top can have side effects (copy-on-read writes what
// they read into the top), so there the extents are widened to those
// chunks, merged, and copied as data.
std::vector<Extent> widen_to_granularity(const std::vector<Extent> &in, uint64_t granularity, uint64_t size,
                                         uint64_t chunk) {
    std::vector<Extent> merged;
    for (const Extent &e : in) {
        uint64_t lo = e.off / granularity * granularity;
        uint64_t hi = std::min(size, (e.off + e.len + granularity - 1) / granularity * granularity);
        if (!merged.empty() && lo <= merged.back().off + merged.back().len) {
            merged.back().len = std::max(merged.back().off + merged.back().len, hi) - merged.back().off;
        } else {
            merged.push_back({lo, hi - lo, false});
        }
    }
    std::vector<Extent> out;
    for (const Extent &m : merged) {
        for (uint64_t o = m.off; o < m.off + m.len; o += chunk) out.push_back({o, std::min(chunk, m.off + m.len - o), false});
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
    if (top.filtered_child()) {
        const uint64_t granularity = std::clamp<uint64_t>(base.cluster_size(), 4096, 65536);
        chunk = std::max(chunk / granularity * granularity, granularity);
        extents = widen_to_granularity(extents, granularity, size, chunk);
    }
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
