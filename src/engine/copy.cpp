// convert's copy (see copy.h) as a job of the request pipeline
// (pipeline.h): the planner follows qemu-img's convert_iteration_sectors(),
// requests are at most buf_sectors (2 MiB by default, 16 MiB at most), the
// workers read and zero-scan them and the pipeline writes them in order
// (or not, with -W). Write-behind (CopyOptions::write_behind) is the
// pipeline's.
//
// Compressed targets (-c): requests are single clusters, as in qemu-img;
// the worker that read a cluster also compresses it (so compression runs on
// every core), and only the allocation and write of the compressed bytes is
// ordered, which keeps the packed layout qemu-img produces.
#include "engine/copy.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "block/status.h"
#include "engine/pipeline.h"

namespace qimg::engine {

bool buffer_is_zero(const uint8_t *p, size_t len) {
    size_t i = 0;
    // 64 bytes per step, OR-ed without branches so that the compiler
    // vectorises it: a copy zero-scans every byte it reads (-S).
    for (; i + 64 <= len; i += 64) {
        uint64_t acc = 0;
        for (size_t k = 0; k < 64; k += 8) {
            uint64_t v;
            std::memcpy(&v, p + i + k, 8);
            acc |= v;
        }
        if (acc) return false;
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
        bool post_backing_zero = false;
        if (const int64_t tb = o_.target_backing_sectors; tb >= 0) {
            if (sector >= tb) post_backing_zero = true;
            else if (sector + n > tb) n = tb - sector;  // zeroes differ from there on
        }
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
            if (flags & kStatusZero) kind_ = post_backing_zero ? Kind::Backing : Kind::Zero;
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

    // Drops the sources' cached pages of bytes [from, to) of the concatenation.
    void drop_cache(uint64_t from, uint64_t to) const {
        uint64_t base = 0;
        for (const auto &p : parts_) {
            uint64_t end = base + static_cast<uint64_t>(p.sectors) * kSectorSize;
            uint64_t a = std::max(from, base), b = std::min(to, end);
            if (a < b) drop_chain_cache(p.node, a - base, b - a);
            base = end;
        }
    }

    // Starts reading sectors [sector, sector+n) of the concatenation
    // (BlockNode::CacheAdvice::WillNeed on each source).
    void prefetch(int64_t sector, int64_t n) const {
        uint64_t from = static_cast<uint64_t>(sector) * kSectorSize, to = from + static_cast<uint64_t>(n) * kSectorSize;
        uint64_t base = 0;
        for (const auto &p : parts_) {
            uint64_t end = base + static_cast<uint64_t>(p.sectors) * kSectorSize;
            uint64_t a = std::max(from, base), b = std::min(to, end);
            if (a < b) p.node->cache_advice(BlockNode::CacheAdvice::WillNeed, a - base, b - a);
            base = end;
        }
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

// convert as a pipeline job: requests in sectors of the concatenated sources.
class CopyJob final : public PipelineJob {
public:
    CopyJob(Planner &planner, BlockNode &target, const CopyOptions &o) : planner_(planner), target_(target), o_(o) {}

    // First pass: how much will be copied, for the percentage.
    Result<uint64_t> measure() {
        for (int64_t s = 0; s < planner_.total();) {
            QIMG_ASSIGN(int64_t n, planner_.next(s));
            if (counts(planner_.kind())) allocated_ += n;
            s += n;
        }
        planner_.reset();
        return static_cast<uint64_t>(allocated_) * kSectorSize;
    }

    Result<bool> plan(PipelineRequest &r) override {
        if (cursor_ >= planner_.total()) return false;
        QIMG_ASSIGN(int64_t n, planner_.next(cursor_));
        Kind kind = planner_.kind();
        if (!o_.min_sparse && kind == Kind::Zero) n = std::min<int64_t>(n, static_cast<int64_t>(o_.buf_sectors));
        r.offset = static_cast<uint64_t>(cursor_) * kSectorSize;
        r.length = static_cast<uint64_t>(n) * kSectorSize;
        r.kind = static_cast<int>(kind);
        r.counted = counts(kind);
        if (r.counted) {
            done_ += n;
            if (o_.on_progress) o_.on_progress(static_cast<float>(100.0 * done_ / allocated_));
            r.rate_bytes = r.length;
        }
        cursor_ += n;
        return true;
    }

    Result<void> read(PipelineRequest &r) override {
        Kind kind = static_cast<Kind>(r.kind);
        int64_t sector = sector_of(r), n = sectors_of(r);
        if (kind == Kind::Data && o_.copy_offload && !offload_off_.load()) {
            // qemu-img: the first failure turns offloading off for good
            // and the request is copied the ordinary way.
            if (planner_.copy_range(sector, n, target_)) kind = Kind::Done;
            else offload_off_ = true;
        }
        if (kind == Kind::Data) {
            if (auto rr = planner_.read(sector, n, r.buf); !rr) return failure(rr.error(), "reading", sector);
            if (o_.compressed) QIMG_TRY(compress(r, kind));
            else split(r);
        } else if (!o_.min_sparse && kind == Kind::Zero) {
            // -S 0 writes zeroes as data, so with -c they are compressed too
            // (qemu-img turns the request into BLK_DATA before writing).
            std::memset(r.buf, 0, static_cast<size_t>(r.length));
            kind = Kind::Data;
            if (o_.compressed) QIMG_TRY(compress(r, kind));
            else split(r);
        }
        r.kind = static_cast<int>(kind);
        if (kind == Kind::Data || kind == Kind::Done) r.streamed = r.length;
        return ok();
    }

    Result<void> write(PipelineRequest &r) override {
        if (auto wr = write_request(r); !wr) return failure(wr.error(), "writing", sector_of(r));
        return ok();
    }

    void drop_read_cache(uint64_t from, uint64_t to) override { planner_.drop_cache(from, to); }

    // Only data is read (offloaded copies read in the kernel).
    void prefetch(const PipelineRequest &r) override {
        if (static_cast<Kind>(r.kind) == Kind::Data && !o_.copy_offload)
            planner_.prefetch(sector_of(r), sectors_of(r));
    }

private:
    bool counts(Kind k) const { return k == Kind::Data || (!o_.min_sparse && k == Kind::Zero); }
    static int64_t sector_of(const PipelineRequest &r) { return static_cast<int64_t>(r.offset / kSectorSize); }
    static int64_t sectors_of(const PipelineRequest &r) { return static_cast<int64_t>(r.length / kSectorSize); }

    // -c, in the worker: an all-zero cluster becomes a zero request (not
    // written on a zero-initialised target), anything else is compressed.
    Result<void> compress(PipelineRequest &r, Kind &kind) {
        size_t len = static_cast<size_t>(r.length);
        if (o_.min_sparse && buffer_is_zero(r.buf, len)) {
            kind = Kind::Zero;
            return ok();
        }
        auto c = target_.compress_cluster(r.buf, len, o_.compress);
        if (!c) return failure(c.error(), "writing", sector_of(r));
        r.cdata = std::move(*c);
        return ok();
    }

    // qemu-img's convert_co_write(), split in two: the zero scan of a data
    // request runs here, in the worker that read it (in parallel), and the
    // write stage, which may be serial (in order), only issues the pieces.
    void split(PipelineRequest &r) const {
        r.pieces.clear();
        int64_t sector = sector_of(r), left = sectors_of(r);
        size_t at = 0;
        while (left > 0) {
            int64_t n = left;
            bool as_data = !o_.min_sparse || o_.copy_offload ||
                           allocated_sectors_min(r.buf + at, left, &n, static_cast<int64_t>(o_.min_sparse), sector,
                                                 alignment());
            uint64_t len = static_cast<uint64_t>(n) * kSectorSize;
            auto piece_kind = static_cast<int>(as_data ? Kind::Data : Kind::Zero);
            if (!r.pieces.empty() && r.pieces.back().kind == piece_kind) r.pieces.back().length += len;
            else r.pieces.push_back({static_cast<uint64_t>(sector) * kSectorSize, len, at, piece_kind, {}});
            sector += n;
            left -= n;
            at += len;
        }
    }

    Result<void> write_request(const PipelineRequest &r) {
        switch (static_cast<Kind>(r.kind)) {
        case Kind::Done:     // copied by offloading
        case Kind::Backing:  // unallocated in the source: left to the target's backing file
            return ok();
        case Kind::Zero:
            return write_zeroes(r.offset, r.length);
        case Kind::Data:
            break;
        }
        if (o_.compressed) return target_.write_compressed_data(r.offset, r.cdata, r.buf, r.length);
        for (const auto &p : r.pieces) {
            if (p.kind == static_cast<int>(Kind::Data)) QIMG_TRY(target_.write(p.offset, r.buf + p.buf_offset, p.length));
            else QIMG_TRY(write_zeroes(p.offset, p.length));
        }
        return ok();
    }

    Result<void> write_zeroes(uint64_t off, uint64_t len) {
        if (o_.target_is_zero) return ok();
        return target_.write_zeroes(off, len, kZeroMayUnmap);
    }

    int64_t alignment() const {
        // pow2floor(min_sparse), at least the target's request alignment in sectors.
        int64_t a = 1;
        while (a * 2 <= static_cast<int64_t>(o_.min_sparse)) a *= 2;
        int64_t t = (target_.request_alignment() + kSectorSize - 1) / kSectorSize;
        return std::max(a, t);
    }

    static Error failure(const Error &e, const char *what, int64_t sector) {
        return make_error(e.code, std::string("error while ") + what + " at byte " +
                                      std::to_string(sector * static_cast<int64_t>(kSectorSize)) + ": " +
                                      std::strerror(e.code));
    }

    Planner &planner_;
    BlockNode &target_;
    const CopyOptions &o_;
    int64_t cursor_ = 0, done_ = 0, allocated_ = 0;
    std::atomic<bool> offload_off_{false};
};

}  // namespace

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
    CopyJob job(planner, target, o);
    PipelineOptions po;
    QIMG_ASSIGN(po.total_bytes, job.measure());
    po.in_flight = o.in_flight;
    po.workers = o.workers;
    // Out of order when the order cannot show in the result (raw).
    po.in_order = o.in_order && target.layout_follows_write_order();
    po.buf_bytes = o.buf_sectors * kSectorSize;
    po.rate_limit = o.rate_limit;
    po.conflict_granule = write_granule(target);
    po.write_behind = o.write_behind;
    po.target = &target;
    po.on_bytes = o.on_bytes;
    if (o.on_bytes) o.on_bytes(0, po.total_bytes);
    QIMG_TRY(run_pipeline(job, po));
    // qemu-img's end-of-compressed-writes signal (the driver aligns its file).
    // qemu-img reports no message when it fails, only the exit status.
    if (o.compressed) {
        if (auto r = target.write_compressed(0, nullptr, 0); !r) return make_error(r.error().code, "");
    }
    return ok();
}

}  // namespace qimg::engine
