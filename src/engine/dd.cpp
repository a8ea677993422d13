// dd as a job of the request pipeline (see dd.h). A request that fails to
// read does not fail in the worker: it keeps the blocks it could read and
// the error, and reports the error from the in-order write stage after
// writing those blocks, so earlier requests are all written first, as in
// qemu-img's block-by-block loop.
#include "engine/dd.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "engine/pipeline.h"

namespace qimg::engine {
namespace {

constexpr uint64_t kRequestBytes = 2 << 20;

class DdJob final : public PipelineJob {
public:
    DdJob(BlockNode &src, BlockNode &dst, const DdOptions &o, uint64_t request)
        : src_(src), dst_(dst), o_(o), request_(request) {}

    Result<bool> plan(PipelineRequest &r) override {
        uint64_t total = o_.in_end - o_.in_start;
        if (next_ >= total) return false;
        r.offset = next_;
        r.length = std::min(request_, total - next_);
        next_ += r.length;
        return true;
    }

    // kind: 0, or the errno of the first block that failed to read;
    // streamed: the bytes read before it.
    Result<void> read(PipelineRequest &r) override {
        r.kind = 0;
        r.streamed = r.length;
        uint64_t at = o_.in_start + r.offset;
        if (read_padded(src_, at, r.buf, static_cast<size_t>(r.length))) return ok();
        // Find the failing block, as qemu-img's loop would.
        for (uint64_t done = 0; done < r.length; done += o_.block) {
            uint64_t n = std::min(o_.block, r.length - done);
            if (auto rr = read_padded(src_, at + done, r.buf + done, static_cast<size_t>(n)); !rr) {
                r.kind = rr.error().code ? rr.error().code : EIO;
                r.streamed = done;
                return ok();
            }
        }
        return ok();  // a transient failure: every block read on the retry
    }

    Result<void> write(PipelineRequest &r) override {
        if (r.streamed) {
            if (auto w = dst_.write(r.offset, r.buf, static_cast<size_t>(r.streamed)); !w)
                return make_error(w.error().code,
                                  std::string("error while writing to output image file: ") +
                                      std::strerror(w.error().code));
        }
        if (r.kind)
            return make_error(r.kind, std::string("error while reading from input image file: ") + std::strerror(r.kind));
        return ok();
    }

    void drop_read_cache(uint64_t from, uint64_t to) override {
        drop_chain_cache(&src_, o_.in_start + from, to - from);
    }

private:
    BlockNode &src_, &dst_;
    const DdOptions &o_;
    uint64_t request_;
    uint64_t next_ = 0;
};

}  // namespace

Result<void> dd_copy(BlockNode &src, BlockNode &dst, const DdOptions &o) {
    if (o.in_end <= o.in_start) return ok();
    uint64_t block = std::max<uint64_t>(o.block, 1);
    // Whole blocks per request, so that a failing block is found in one.
    uint64_t request = std::max<uint64_t>(block, kRequestBytes / block * block);
    DdOptions opts = o;
    opts.block = block;
    DdJob job(src, dst, opts, request);
    PipelineOptions po;
    po.in_flight = o.in_flight ? o.in_flight
                               : static_cast<unsigned>(std::clamp<uint64_t>(kMaxBufferBytes / request, 1, kMaxInFlight));
    po.in_order = true;  // qemu-img's write order (qcow2 layout) and error semantics
    po.buf_bytes = static_cast<size_t>(request);
    po.write_behind = o.write_behind;
    po.target = &dst;
    return run_pipeline(job, po);
}

}  // namespace qimg::engine
