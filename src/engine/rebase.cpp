// rebase_preserve() (see rebase.h). The dispatcher walks the image in
// qemu-img's steps (2 MiB, cut at allocation boundaries and backing-file
// ends) and prints the same progress; workers read both backing files,
// compare and compress; the in-order writer writes the differences.
//
// Planning looks at `top`'s allocation while earlier requests write into it.
// A write only changes the status of the clusters it touches, and a request
// ending mid-cluster is followed by one starting in that cluster: there the
// dispatcher waits for the writes (drain_after) before it asks, so it skips
// what qemu-img's sequential loop would skip (the copy-on-write of the
// partial cluster has already preserved it).
#include "engine/rebase.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "block/status.h"
#include "engine/pipeline.h"

namespace qimg::engine {
namespace {

constexpr uint64_t kIoBufSize = 2 << 20;  // qemu-img.c IO_BUF_SIZE
enum PieceKind { kPieceData, kPieceZero, kPieceCompressed };

std::string with_errno(const char *what, const Error &e) { return what + std::string(std::strerror(e.code)); }

class RebaseJob final : public PipelineJob {
public:
    RebaseJob(BlockNode &top, BlockNode *old_backing, BlockNode *new_backing, BlockNode *prefix_base,
              const RebaseOptions &o)
        : top_(top), old_(old_backing), new_(new_backing), prefix_(prefix_base), o_(o) {
        size_ = top.length();
        old_size_ = old_ ? old_->length() : 0;
        new_size_ = new_ ? new_->length() : 0;
        step_ = size_ ? 100.f / static_cast<float>(size_ / std::min(size_, kIoBufSize)) : 0.f;
        cs_ = o.compress ? top.compressed_cluster_size() : 0;
    }

    // Both backing chains hold the top's offsets.
    void drop_read_cache(uint64_t from, uint64_t to) override {
        drop_chain_cache(old_, from, to - from);
        drop_chain_cache(new_, from, to - from);
    }

    Result<bool> plan(PipelineRequest &r) override {
        for (;;) {
            if (off_ >= size_) return false;
            uint64_t n = std::min(kIoBufSize, size_ - off_);
            QIMG_ASSIGN(bool wanted, differs_maybe(off_, n));
            if (!wanted) {
                off_ += n;
                continue;
            }
            bool old_zero = off_ >= old_size_;
            if (!old_zero) n = std::min(n, old_size_ - off_);
            if (off_ < new_size_ && new_) n = std::min(n, new_size_ - off_);
            r.offset = off_;
            r.length = n;
            r.kind = old_zero;
            uint64_t granule = top_.cluster_size();
            r.drain_after = granule && (off_ + n) % granule != 0;
            off_ += n;
            if (o_.on_progress) o_.on_progress(step_);
            return true;
        }
    }

    Result<void> read(PipelineRequest &r) override {
        uint8_t *buf_old = r.buf, *buf_new = r.buf + kIoBufSize;
        const size_t n = static_cast<size_t>(r.length);
        if (r.kind) {
            std::memset(buf_old, 0, n);
        } else if (auto rr = old_->read(r.offset, buf_old, n); !rr) {
            return make_error(rr.error().code, "error while reading from old backing file");
        }
        if (r.offset >= new_size_ || !new_) {
            std::memset(buf_new, 0, n);
        } else if (auto rr = new_->read(r.offset, buf_new, n); !rr) {
            return make_error(rr.error().code, "error while reading from new backing file");
        }
        return differences(r, buf_old, buf_new);
    }

    Result<void> write(PipelineRequest &r) override {
        for (auto &p : r.pieces) {
            const uint8_t *src = r.buf + p.buf_offset;
            Result<void> w;
            if (p.kind == kPieceZero) w = top_.write_zeroes(p.offset, p.length, 0);
            else if (p.kind == kPieceData) w = top_.write(p.offset, src, p.length);
            else w = top_.write_compressed_data(p.offset, p.data, src, p.length);
            if (!w) return make_error(w.error().code, with_errno("Error while writing to COW image: ", w.error()));
            r.streamed += p.length;
        }
        return ok();
    }

private:
    // May [off, off+n) read differently after the rebase? Cuts n to the
    // extent the answer holds for.
    Result<bool> differs_maybe(uint64_t off, uint64_t &n) {
        auto here = node_status(top_, off, n);
        if (!here) return metadata_error(here.error());
        if (here->bytes) n = std::min(n, here->bytes);
        if (here->flags & kStatusAllocated) return false;
        if (!prefix_) return true;
        // Rebasing onto the current backing file: nothing differs.
        if (top_.backing() == prefix_) return false;
        if (!top_.backing()) return true;
        auto cs = chain_status(*top_.backing(), prefix_, off, n);
        if (!cs) return metadata_error(cs.error());
        if (cs->bytes) n = std::min(n, cs->bytes);
        return (cs->flags & kStatusAllocated) != 0;
    }
    static Error metadata_error(const Error &e) {
        return make_error(e.code, with_errno("error while reading image metadata: ", e));
    }

    // The writes that make [offset, offset+length) of `top` read as
    // `buf_old`: the 512-byte sectors that differ from `buf_new`, runs of
    // them as one write (up to a cluster edge with -c); with -c, whole
    // clusters that differ anywhere are compressed (here, in the worker).
    Result<void> differences(PipelineRequest &r, const uint8_t *buf_old, const uint8_t *buf_new) {
        const bool old_zero = r.kind;
        const uint64_t off = r.offset, n = r.length, cs = cs_;
        for (uint64_t done = 0; done < n;) {
            const uint64_t pos = off + done;
            if (cs && pos % cs == 0 && !old_zero) {
                uint64_t len = std::min(cs, size_ - pos);
                if (len <= n - done) {
                    if (std::memcmp(buf_old + done, buf_new + done, len) != 0) {
                        auto c = top_.compress_cluster(buf_old + done, len, CompressOptions{});
                        if (!c)
                            return make_error(c.error().code,
                                              with_errno("Error while writing to COW image: ", c.error()));
                        r.pieces.push_back({pos, len, done, kPieceCompressed, std::move(*c)});
                    }
                    done += len;
                    continue;
                }
            }
            uint64_t len = std::min<uint64_t>(512 - pos % 512, n - done);
            if (cs && !old_zero) len = std::min(len, cs - pos % cs);
            if (std::memcmp(buf_old + done, buf_new + done, len) != 0) {
                uint64_t run = len;
                while (done + run < n && (!cs || old_zero || (pos + run) % cs != 0)) {
                    uint64_t l2 = std::min<uint64_t>(512, n - done - run);
                    if (std::memcmp(buf_old + done + run, buf_new + done + run, l2) == 0) break;
                    run += l2;
                }
                r.pieces.push_back({pos, run, done, old_zero ? kPieceZero : kPieceData, {}});
                len = run;
            }
            done += len;
        }
        return ok();
    }

    BlockNode &top_;
    BlockNode *old_, *new_, *prefix_;
    const RebaseOptions &o_;
    uint64_t size_ = 0, old_size_ = 0, new_size_ = 0, cs_ = 0, off_ = 0;
    float step_ = 0;
};

}  // namespace

Result<void> rebase_preserve(BlockNode &top, BlockNode *old_backing, BlockNode *new_backing, BlockNode *prefix_base,
                             const RebaseOptions &o) {
    RebaseJob job(top, old_backing, new_backing, prefix_base, o);
    PipelineOptions po;
    po.in_flight = o.in_flight;
    po.workers = o.workers;
    po.in_order = true;  // qemu-img's write order, hence its cluster layout
    po.buf_bytes = 2 * kIoBufSize;  // old and new backing side by side
    po.write_behind = o.write_behind;
    po.target = &top;
    return run_pipeline(job, po);
}

}  // namespace qimg::engine
