// The qed driver: QEMU Enhanced Disk images (qed_spec.txt), read and
// written as qemu-img 7.2 does: two levels of tables (L1, L2) of cluster
// offsets, zero clusters, a backing file, the need-check bit and QEMU's
// consistency check.
//
// Write ordering. QEMU sets the need-check bit around allocating writes
// (without a backing file) and checks the image on the next read-write
// open. qimg orders its writes instead, so the bit is never needed: new
// data clusters (and new L2 tables, placed after them as QEMU places them)
// are written first, and the entries naming them are kept in memory (the
// L2 table cache, dirty L1 entries) until the next flush, which makes the
// data durable, writes the L2 tables, makes them durable, then writes the
// L1 entries. A kill at any point leaves every entry on disk naming data
// written before it; clusters written but not yet named are leaks at the
// end of the file, which QEMU's check reports as leaks and allocation
// skips (it starts at the end of the file). An image that has the bit set
// (QEMU was killed) is checked and repaired on a read-write open, as QEMU
// does.
//
// Hostile images: every table and cluster offset is checked against the
// header clusters and the file's end before use (qed_spec.txt
// "Consistency checking"); the L1 table must lie in the file, so its size
// is bounded by the file's, and the L2 cache holds a bounded number of
// bytes whatever the table size.
//
// Concurrency: the header, the L1 table, the L2 table cache, the end of
// the file and the dirty state are guarded by mu_. An allocated cluster
// never moves, so its data is read and rewritten outside the lock; an
// allocating write holds the lock until its data is written and its entry
// is in the cache.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/open.h"
#include "block/table_cache.h"
#include "format/qed/header.h"
#include "format/qed/qed.h"
#include "util/checked.h"
#include "util/endian.h"

namespace qimg::qed {
namespace {

using Table = std::vector<uint64_t>;

// Bytes of L2 tables kept in memory (QEMU keeps 512 tables whatever their size).
constexpr uint64_t kL2CacheBytes = 64ull << 20;

class QedNode final : public BlockNode {
public:
    QedNode(NodePtr file, const Header &h, uint64_t file_size, Table l1)
        : h_(h), cs_(h.cluster_size), file_size_(file_size), l1_(std::move(l1)),
          l2_(size_t(std::max<uint64_t>(2, kL2CacheBytes / h.table_bytes())),
              TableCache<Table>::Io{[this](uint64_t off) { return load_table(off); },
                                    [this](uint64_t off, const Table &t) { return store_table(off, t); },
                                    [this] { return file_->flush(); }}) {
        file_ = std::move(file);
        l1_dirty_.assign(l1_.size(), false);
    }
    ~QedNode() override {
        if (!read_only_) (void)flush_metadata();
    }

    std::string_view driver_name() const override { return "qed"; }
    uint64_t length() const override {
        std::lock_guard g(mu_);
        return h_.image_size;
    }
    uint32_t cluster_size() const override { return uint32_t(cs_); }
    bool has_zero_init() const override { return true; }
    // Not the need-check bit: QEMU reports a qed image as clean once it is
    // open (a read-write open checks and clears the bit; on a read-only one
    // the first drain clears it in memory, so info never shows it set).
    bool is_dirty() const override { return false; }

    Result<void> read(uint64_t off, void *buf, size_t len) override;
    Result<void> write(uint64_t off, const void *buf, size_t len) override;
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override;
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override;
    Result<void> flush() override {
        QIMG_TRY(flush_metadata());
        return BlockNode::flush();
    }
    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override;
    Result<CheckReport> check(CheckRepair repair) override;
    Result<void> change_backing_file(const std::string &name, const std::string &format) override;

    // On a read-write open of an image QEMU left with the need-check bit.
    Result<void> repair_on_open();

private:
    Result<std::shared_ptr<Table>> load_table(uint64_t off) {
        std::vector<uint8_t> raw(h_.table_bytes());
        file_->debug_event(BlkdebugEvent::L2Load);
        QIMG_TRY(read_padded(*file_, off, raw.data(), raw.size()));
        auto t = std::make_shared<Table>(h_.table_entries());
        for (size_t i = 0; i < t->size(); ++i) (*t)[i] = le64(raw.data() + 8 * i);
        return t;
    }
    Result<void> store_table(uint64_t off, const Table &t) {
        std::vector<uint8_t> raw(t.size() * 8);
        for (size_t i = 0; i < t.size(); ++i) put_le64(raw.data() + 8 * i, t[i]);
        file_->debug_event(BlkdebugEvent::L2Update);
        return file_->write(off, raw.data(), raw.size());
    }
    Result<void> check_range(uint64_t off, uint64_t len) const {
        if (!range_fits(off, len, h_.image_size)) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }
    size_t in_cluster(uint64_t off, uint64_t len) const {
        return size_t(std::min<uint64_t>(len, cs_ - off % cs_));
    }
    uint64_t l2_index(uint64_t off) const { return (off / cs_) % h_.table_entries(); }

    // What a guest offset maps to. Holds mu_.
    struct Mapping {
        enum Kind { Unallocated, Zero, Data } kind = Unallocated;
        uint64_t host = 0;  // Data: the cluster's offset
    };
    Result<Mapping> map_locked(uint64_t off);
    // Bytes from `off` (at most len) of the same kind, Data clusters
    // consecutive in the file. Holds mu_.
    Result<uint64_t> run_locked(uint64_t off, uint64_t len, Mapping *first);

    Result<std::shared_ptr<Table>> l2_for_write_locked(uint64_t off, uint64_t *l2_off, bool *fresh);
    Result<uint64_t> allocate_run_locked(uint64_t off, const uint8_t *in, uint64_t len, bool zero);
    Result<void> fill_cluster(uint64_t start, const Mapping &m, uint8_t *out);
    Result<void> flush_metadata();
    Result<void> write_header_locked(const std::string *backing);

    Header h_;
    uint64_t cs_;
    mutable std::mutex mu_;
    uint64_t file_size_;  // the end of the last cluster: where the next one goes
    Table l1_;
    std::vector<bool> l1_dirty_;
    TableCache<Table> l2_;
    bool dirty_ = false;
};

Result<QedNode::Mapping> QedNode::map_locked(uint64_t off) {
    Mapping m;
    uint64_t l2_off = l1_[(off / h_.l2_span()) % h_.table_entries()];
    if (l2_off == 0) return m;
    if (!valid_table_offset(h_, file_size_, l2_off)) return make_error(EINVAL, "qed: invalid L2 table offset");
    QIMG_ASSIGN(auto t, l2_.get(l2_off));
    uint64_t e = (*t)[l2_index(off)];
    if (e == 0) return m;
    if (e == kZeroCluster) {
        m.kind = Mapping::Zero;
        return m;
    }
    if (!valid_cluster_offset(h_, file_size_, e)) return make_error(EINVAL, "qed: invalid cluster offset");
    m.kind = Mapping::Data;
    m.host = e;
    return m;
}

Result<uint64_t> QedNode::run_locked(uint64_t off, uint64_t len, Mapping *first) {
    QIMG_ASSIGN(*first, map_locked(off));
    uint64_t pos = off + in_cluster(off, len);
    uint64_t expect = first->host + cs_;
    while (pos < off + len) {
        QIMG_ASSIGN(Mapping m, map_locked(pos));
        if (m.kind != first->kind || (m.kind == Mapping::Data && m.host != expect)) break;
        pos += in_cluster(pos, off + len - pos);
        expect += cs_;
    }
    return pos - off;
}

Result<void> QedNode::read(uint64_t off, void *buf, size_t len) {
    QIMG_TRY(check_range(off, len));
    auto *out = static_cast<uint8_t *>(buf);
    while (len > 0) {
        Mapping m;
        uint64_t n;
        {
            std::lock_guard g(mu_);
            QIMG_ASSIGN(n, run_locked(off, len, &m));
        }
        if (m.kind == Mapping::Data) {
            file_->debug_event(BlkdebugEvent::ReadAio);
            QIMG_TRY(read_padded(*file_, m.host + off % cs_, out, n));
        } else if (m.kind == Mapping::Unallocated && backing_) {
            QIMG_TRY(read_padded(*backing_, off, out, n));
        } else {
            std::memset(out, 0, n);
        }
        off += n, out += n, len -= n;
    }
    return ok();
}

// The content the cluster starting at `start` reads as now (for the parts
// of a new cluster a write does not cover).
Result<void> QedNode::fill_cluster(uint64_t start, const Mapping &m, uint8_t *out) {
    std::memset(out, 0, cs_);
    if (m.kind != Mapping::Unallocated || !backing_ || start >= h_.image_size) return ok();
    return read_padded(*backing_, start, out, size_t(std::min<uint64_t>(cs_, h_.image_size - start)));
}

// The L2 table covering `off`; a new one (zeroes, in the cache only) when
// the L1 entry is empty, its place chosen by the caller (after the data).
Result<std::shared_ptr<Table>> QedNode::l2_for_write_locked(uint64_t off, uint64_t *l2_off, bool *fresh) {
    uint64_t idx = (off / h_.l2_span()) % h_.table_entries();
    *fresh = l1_[idx] == 0;
    if (!*fresh) {
        *l2_off = l1_[idx];
        if (!valid_table_offset(h_, file_size_, *l2_off)) return make_error(EINVAL, "qed: invalid L2 table offset");
        return l2_.get(*l2_off);
    }
    return std::make_shared<Table>(h_.table_entries(), 0);
}

// Writes [off, off+n) for the run of clusters from off's on, in off's L2
// table, that hold no data (unallocated or zero): as new clusters at the
// end of the file, or (`zero`) as zero-cluster entries. A new L2 table
// goes after the data, as QEMU puts it. Returns n.
Result<uint64_t> QedNode::allocate_run_locked(uint64_t off, const uint8_t *in, uint64_t len, bool zero) {
    uint64_t l2_off = 0;
    bool fresh;
    QIMG_ASSIGN(auto t, l2_for_write_locked(off, &l2_off, &fresh));
    const uint64_t table_end = (off / h_.l2_span() + 1) * h_.l2_span();
    const uint64_t run_start = off / cs_ * cs_;
    uint64_t pos = off;
    std::vector<Mapping> old;
    while (pos < off + len && pos < table_end) {
        uint64_t e = (*t)[l2_index(pos)];
        if (e != 0 && e != kZeroCluster) break;
        old.push_back(Mapping{e == 0 ? Mapping::Unallocated : Mapping::Zero, 0});
        pos += in_cluster(pos, off + len - pos);
    }
    const uint64_t n = pos - off;
    const uint64_t run_bytes = old.size() * cs_;
    uint64_t at = file_size_;
    if (!zero) {
        if (!range_fits(at, run_bytes + h_.table_bytes(), uint64_t(INT64_MAX))) return make_error(EFBIG, "File too large");
        const uint8_t *data = in;
        std::vector<uint8_t> buf;
        if (off != run_start || n != run_bytes) {
            buf.resize(run_bytes);
            if (off != run_start) QIMG_TRY(fill_cluster(run_start, old.front(), buf.data()));
            if ((off + n) % cs_ && (old.size() > 1 || off == run_start))
                QIMG_TRY(fill_cluster(run_start + run_bytes - cs_, old.back(), buf.data() + run_bytes - cs_));
            std::memcpy(buf.data() + (off - run_start), in, n);
            data = buf.data();
        }
        file_->debug_event(BlkdebugEvent::ClusterAlloc);
        file_->debug_event(BlkdebugEvent::WriteAio);  // the data write, as QEMU announces it
        QIMG_TRY(file_->write(at, data, run_bytes));
        file_size_ = at + run_bytes;
    }
    for (size_t i = 0; i < old.size(); ++i) (*t)[l2_index(run_start + i * cs_)] = zero ? kZeroCluster : at + i * cs_;
    if (fresh) {
        l2_off = file_size_;
        if (!range_fits(l2_off, h_.table_bytes(), uint64_t(INT64_MAX))) return make_error(EFBIG, "File too large");
        file_size_ += h_.table_bytes();
        // Written now (so the file covers it), named by the L1 at the next flush.
        QIMG_TRY(store_table(l2_off, *t));
        l2_.put_new(l2_off, t);
        uint64_t idx = (off / h_.l2_span()) % h_.table_entries();
        l1_[idx] = l2_off;
        l1_dirty_[idx] = true;
    }
    l2_.mark_dirty(l2_off);
    dirty_ = true;
    return n;
}

Result<void> QedNode::write(uint64_t off, const void *buf, size_t len) {
    QIMG_TRY(check_range(off, len));
    auto *in = static_cast<const uint8_t *>(buf);
    while (len > 0) {
        Mapping m;
        uint64_t n;
        {
            std::lock_guard g(mu_);
            QIMG_ASSIGN(n, run_locked(off, len, &m));
            if (m.kind != Mapping::Data) { QIMG_ASSIGN(n, allocate_run_locked(off, in, len, false)); }
        }
        if (m.kind == Mapping::Data) {
            file_->debug_event(BlkdebugEvent::WriteAio);
            QIMG_TRY(file_->write(m.host + off % cs_, in, n));
        }
        off += n, in += n, len -= n;
    }
    return ok();
}

// Whole clusters without data become zero clusters (as QEMU's zero
// writes make them); data clusters and partial clusters get zeroes written.
Result<void> QedNode::write_zeroes(uint64_t off, uint64_t len, unsigned flags) {
    (void)flags;
    QIMG_TRY(check_range(off, len));
    while (len > 0) {
        uint64_t head = off % cs_ ? in_cluster(off, len) : 0;
        uint64_t whole = head ? 0 : len / cs_ * cs_;
        if (whole == 0) {
            size_t n = head ? head : size_t(len);
            std::vector<uint8_t> z(n, 0);
            QIMG_TRY(write(off, z.data(), n));
            off += n, len -= n;
            continue;
        }
        Mapping m;
        uint64_t n;
        {
            std::lock_guard g(mu_);
            QIMG_ASSIGN(n, run_locked(off, whole, &m));
            if (m.kind == Mapping::Unallocated) { QIMG_ASSIGN(n, allocate_run_locked(off, nullptr, whole, true)); }
        }
        if (m.kind == Mapping::Data) {
            file_->debug_event(BlkdebugEvent::WriteAio);
            QIMG_TRY(file_->write_zeroes(m.host, n, 0));
        }
        off += n, len -= n;
    }
    return ok();
}

Result<BlockStatus> QedNode::block_status(uint64_t off, uint64_t len) {
    BlockStatus s;
    std::lock_guard g(mu_);
    if (off >= h_.image_size) return s;
    len = std::min(len, h_.image_size - off);
    Mapping m;
    QIMG_ASSIGN(s.bytes, run_locked(off, len, &m));
    if (m.kind == Mapping::Zero) s.flags = kStatusZero | kStatusAllocated;
    if (m.kind == Mapping::Data) {
        s.flags = kStatusData | kStatusAllocated | kStatusOffsetValid;
        s.host_offset = m.host + off % cs_;
        s.host_node = file_.get();
    }
    return s;
}

// Data first, then the L2 tables, then the L1 entries naming new ones,
// each step durable before the next (see the top comment).
Result<void> QedNode::flush_metadata() {
    std::lock_guard g(mu_);
    if (!dirty_) return ok();
    if (l2_.dirty()) QIMG_TRY(l2_.write_back());  // flushes the data first (Io::before_write)
    if (std::find(l1_dirty_.begin(), l1_dirty_.end(), true) != l1_dirty_.end()) {
        QIMG_TRY(file_->flush());
        for (size_t i = 0; i < l1_.size(); ++i) {
            if (!l1_dirty_[i]) continue;
            uint8_t b[8];
            put_le64(b, l1_[i]);
            file_->debug_event(BlkdebugEvent::L1Update);
            QIMG_TRY(file_->write(h_.l1_table_offset + 8 * i, b, sizeof b));
            l1_dirty_[i] = false;
        }
    }
    dirty_ = false;
    return ok();
}

// The header (and, when given, a new backing file name after it), written
// and made durable.
Result<void> QedNode::write_header_locked(const std::string *backing) {
    std::vector<uint8_t> b(kHeaderSize + (backing ? backing->size() : 0));
    HeaderBytes hb = encode_header(h_);
    std::memcpy(b.data(), hb.data(), hb.size());
    if (backing && !backing->empty()) std::memcpy(b.data() + kHeaderSize, backing->data(), backing->size());
    QIMG_TRY(file_->write(0, b.data(), b.size()));
    return file_->flush();
}

Result<void> QedNode::truncate(uint64_t new_size, Prealloc prealloc, bool) {
    if (prealloc != Prealloc::Off)
        return make_error(ENOTSUP, "Unsupported preallocation mode '" + std::string(prealloc_name(prealloc)) + "'");
    std::lock_guard g(mu_);
    if (!valid_image_size(new_size, cs_, h_.table_size)) return make_error(EINVAL, "Invalid image size specified");
    if (new_size < h_.image_size) return make_error(ENOTSUP, "Shrinking images is currently not supported");
    uint64_t old = h_.image_size;
    h_.image_size = new_size;
    auto r = write_header_locked(nullptr);
    if (!r) {
        h_.image_size = old;
        return Err(r.error().prepended("Failed to update the image size: "));
    }
    return ok();
}

Result<void> QedNode::change_backing_file(const std::string &name, const std::string &format) {
    QIMG_TRY(flush_metadata());
    std::lock_guard g(mu_);
    if (!name.empty() && h_.compat_features) return make_error(ENOTSUP, "Operation not supported");
    Header nh = h_;
    nh.features &= ~(kFeatureBacking | kFeatureBackingRaw);
    if (!name.empty()) {
        nh.features |= kFeatureBacking;
        if (format == "raw") nh.features |= kFeatureBackingRaw;
    }
    nh.backing_filename_offset = kHeaderSize;
    nh.backing_filename_size = uint32_t(name.size());
    if (kHeaderSize + name.size() > nh.header_bytes()) return make_error(ENOSPC, "No space left on device");
    Header old = h_;
    h_ = nh;
    auto r = write_header_locked(&name);
    if (!r) {
        h_ = old;
        return r;
    }
    set_backing_names(name, name.empty() ? "" : format, name.empty() ? "" : resolve_recorded_name(*this, name));
    return ok();
}

// QEMU's qed check: every table and cluster offset valid and referenced
// once, leaks counted (never repaired); a repair clears invalid entries.
// A clean result clears the need-check bit.
Result<CheckReport> QedNode::check(CheckRepair repair) {
    QIMG_TRY(flush_metadata());
    std::lock_guard g(mu_);
    const bool fix = repair != CheckRepair::None;
    CheckReport rep;
    rep.has_cluster_stats = true;
    rep.total_clusters = int64_t((h_.image_size + cs_ - 1) / cs_);
    const uint64_t nclusters = file_size_ / cs_;
    std::vector<bool> used(nclusters, false);
    auto mark = [&](uint64_t off, uint64_t n) {
        bool clean = true;
        for (uint64_t c = off / cs_; n--; ++c) {
            if (c < nclusters && used[c]) rep.corruptions++, clean = false;
            if (c < nclusters) used[c] = true;
        }
        return clean;
    };
    mark(h_.l1_table_offset, h_.table_size);
    bool l1_fixed = false;
    for (size_t i = 0; i < l1_.size(); ++i) {
        uint64_t l2_off = l1_[i];
        if (l2_off == 0) continue;
        if (!valid_table_offset(h_, file_size_, l2_off)) {
            if (fix) l1_[i] = 0, rep.corruptions_fixed++, l1_fixed = true;
            else rep.corruptions++;
            continue;
        }
        if (!mark(l2_off, h_.table_size)) continue;
        auto t = l2_.get(l2_off);
        if (!t) {
            rep.check_errors++;
            continue;
        }
        bool fixed = false;
        uint64_t last = 0;
        for (uint64_t &e : **t) {
            if (e == 0 || e == kZeroCluster) continue;
            rep.allocated_clusters++;
            if (last && last + cs_ != e) rep.fragmented_clusters++;
            last = e;
            if (!valid_cluster_offset(h_, file_size_, e)) {
                if (fix) e = 0, rep.corruptions_fixed++, fixed = true;
                else rep.corruptions++;
                continue;
            }
            mark(e, 1);
        }
        if (fixed) {
            auto w = store_table(l2_off, **t);
            if (!w) rep.check_errors++;
        }
    }
    if (l1_fixed) {
        std::vector<uint8_t> raw(l1_.size() * 8);
        for (size_t i = 0; i < l1_.size(); ++i) put_le64(raw.data() + 8 * i, l1_[i]);
        if (!file_->write(h_.l1_table_offset, raw.data(), raw.size())) rep.check_errors++;
    }
    if (rep.check_errors) return rep;
    for (uint64_t c = h_.header_size; c < nclusters; ++c)
        if (!used[c]) rep.leaks++;
    if (fix && rep.corruptions == 0 && (h_.features & kFeatureNeedCheck)) {
        QIMG_TRY(file_->flush());
        h_.features &= ~kFeatureNeedCheck;
        QIMG_TRY(write_header_locked(nullptr));
    }
    return rep;
}

Result<void> QedNode::repair_on_open() {
    auto r = check(CheckRepair::All);
    if (!r || r->check_errors) return make_error(EINVAL, "Image corrupted");
    return ok();
}

int qed_probe(std::span<const uint8_t> head, const std::string &) {
    return head.size() >= kHeaderSize && le32(head.data()) == kMagic ? 100 : 0;
}

Result<NodePtr> qed_open(OpenRequest &req) {
    BlockNode &file = *req.file;
    HeaderBytes hb{};
    auto rr = read_padded(file, 0, hb.data(), hb.size());
    if (!rr) return make_error(rr.error().code, "Failed to read QED header");
    uint64_t flen = file.length();
    QIMG_ASSIGN(Header h, parse_header(hb, flen));
    uint64_t file_size = flen / h.cluster_size * h.cluster_size;
    std::string backing;
    if (h.features & kFeatureBacking) {
        std::string name(h.backing_filename_size, '\0');
        auto br = read_padded(file, h.backing_filename_offset, name.data(), name.size());
        if (!br) return make_error(br.error().code, "Failed to read backing filename");
        backing = std::string(name.c_str());
    }
    // Unknown autoclear bits are cleared on a read-write open (qed_spec.txt).
    if (h.autoclear_features && req.flags.read_write) {
        h.autoclear_features = 0;
        HeaderBytes nb = encode_header(h);
        auto w = file.write(0, nb.data(), nb.size());
        if (!w) return make_error(w.error().code, "Failed to update header");
        QIMG_TRY(file.flush());
    }
    // valid_table_offset put the L1 table inside the file: its size is
    // bounded by the file's.
    std::vector<uint8_t> raw(h.table_bytes());
    auto lr = file.read(h.l1_table_offset, raw.data(), raw.size());
    if (!lr) return make_error(lr.error().code, "Failed to read L1 table");
    Table l1(h.table_entries());
    for (size_t i = 0; i < l1.size(); ++i) l1[i] = le64(raw.data() + 8 * i);
    auto node = std::make_shared<QedNode>(req.file, h, file_size, std::move(l1));
    node->set_read_only(!req.flags.read_write);
    if (!backing.empty())
        node->set_backing_names(backing, (h.features & kFeatureBackingRaw) ? "raw" : "",
                                resolve_recorded_name(*node, backing));
    if ((h.features & kFeatureNeedCheck) && req.flags.read_write && !req.flags.check) QIMG_TRY(node->repair_on_open());
    return NodePtr(node);
}

const Driver *make_qed_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "qed";
        d.probe = qed_probe;
        d.open = qed_open;
        d.create = qed_create;
        d.create_options = qed_create_options();
        d.supports_backing = true;
        d.supports_check = true;
        return d;
    }();
    return &d;
}

}  // namespace
}  // namespace qimg::qed

namespace qimg {
QIMG_REGISTER_DRIVER(qed::make_qed_driver);
}  // namespace qimg
