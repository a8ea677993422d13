// qcow2 check and repair (see check.h). Follows the structure of QEMU 7.2's
// qcow2_check_refcounts (block/qcow2-refcount.c) so that the messages come
// out in the same order: snapshot table, expected refcounts (header, active
// L1/L2, snapshot L1/L2, snapshot table, refcount table, bitmaps, refcount
// blocks), comparison with the on-disk refcounts, refcount structure
// rebuild, OFLAG_COPIED. Messages go to stderr as QEMU prints them there.
//
// Crash safety of repairs: refcount fixes are written and flushed before
// any L2/L1 change that relies on them; a rebuilt refcount structure is
// written into free clusters and flushed before the header switches to it
// (the old structure then merely leaks, and the leak fix frees it).
#include "format/qcow2/check.h"
#include "format/qcow2/refcount_array.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "format/qcow2/qcow2.h"
#include "util/endian.h"
#include "util/progname.h"

namespace qimg::qcow2 {
namespace {

enum : unsigned { kFixLeaks = 1, kFixErrors = 2 };

constexpr uint64_t kL1ReservedBits = 0x7f000000000001ffull;
constexpr uint64_t kL2StdReservedBits = 0x3f000000000001feull;
constexpr uint64_t kReftOffsetMask = 0xfffffffffffffe00ull;
constexpr uint64_t kReftReservedMask = 0x1ffull;
constexpr uint64_t kBitmapAllAlloc = 0xffffffffull;
constexpr uint64_t kBitmapAllZeroes = 0xffffffff00000000ull;

// QEMU's BdrvCheckResult.
struct Res {
    int64_t corruptions = 0, leaks = 0, check_errors = 0;
    int64_t corruptions_fixed = 0, leaks_fixed = 0;
    int64_t image_end_offset = 0;
    int64_t total = 0, allocated = 0, fragmented = 0, compressed = 0;
};

}  // namespace

class Checker {
public:
    explicit Checker(Qcow2Node &n)
        : node_(n), file_(*n.file_), cluster_size_(n.cluster_size_), cluster_bits_(n.cluster_bits_), max_refcount_(n.refcounts_->max_refcount()) {}

    // QEMU's qcow2_co_check_locked.
    Result<void> run(unsigned fix, Res &res);

private:
    // QEMU's qcow2_check_read_snapshot_table and qcow2_check_fix_snapshot_table.
    Result<void> read_snapshot_table(unsigned fix, Res &res);
    Result<void> fix_snapshot_table(unsigned fix, Res &res);
    Result<void> inc(int64_t offset, int64_t size, Res &res);
    Result<void> check_l2(uint64_t l2_offset, bool frag, unsigned fix, bool active, Res &res);
    Result<bool> zero_l2_entry(uint64_t l2_offset, uint64_t index, uint64_t bitmap, bool active, Res &res);
    Result<void> check_l1(uint64_t l1_offset, uint64_t l1_size, bool frag, unsigned fix, bool active, Res &res);
    Result<void> check_bitmaps(Res &res);
    Result<void> check_refblocks(unsigned fix, bool &rebuild, Res &res);
    Result<void> calculate(unsigned fix, bool &rebuild, Res &res);
    Result<uint64_t> get_refcount(uint64_t cluster);
    void compare(unsigned fix, bool &rebuild, int64_t &highest, Res &res);
    Result<void> check_oflag_copied(unsigned fix, Res &res);
    Result<void> check_refcounts(unsigned fix, Res &res);
    // Rebuild (QEMU's rebuild_refcount_structure).
    uint64_t alloc_imrt(uint64_t count, uint64_t &first_free);
    Result<bool> write_refblocks(uint64_t first, uint64_t end, std::vector<uint64_t> &reftable);
    Result<void> rebuild(Res &res);
    std::vector<uint8_t> encode_refblock(uint64_t index) const;
    Result<void> write_incompat(uint64_t v);
    // QEMU's qcow2_check_metadata_overlap (overlap-check=cached): the name of
    // the metadata [offset, offset+size) overlaps, or nullptr.
    const char *overlap(uint64_t offset, uint64_t size, bool ign_active_l2) const;
    // qcow2_pre_write_overlap_check: on overlap signals corruption, EIO.
    Result<void> pre_write_check(uint64_t offset, uint64_t size, bool ign_active_l2);

    Qcow2Node &node_;
    BlockNode &file_;
    uint64_t cluster_size_;
    uint32_t cluster_bits_;
    uint64_t max_refcount_;
    RefcountArray expected_;  // expected refcount per host cluster
    std::vector<uint64_t> freed_;  // clusters whose refcount a repair dropped to 0
};

// The snapshot table as the header on disk has it (a check-mode open reads
// neither), with repairs under -r all: a count above QEMU's limit and a
// table past its size limit are cut (the header count is rewritten at once;
// the dropped entries then merely leak), too much extra data is truncated
// and, on v3, entries without disk_size are completed; the last two need the
// whole table rewritten, which fix_snapshot_table() does once the refcounts
// can be trusted.
Result<void> Checker::read_snapshot_table(unsigned fix, Res &res) {
    uint8_t ptr[12];
    if (auto r = file_.read(60, ptr, sizeof ptr); !r) {
        res.check_errors++;
        std::fprintf(stderr, "ERROR failed to read the snapshot table pointer from the image header: %s\n",
                     std::strerror(r.error().code));
        return Err(r.error());
    }
    uint32_t nb = be32(ptr);
    const uint64_t offset = be64(ptr + 4);
    uint32_t reduced = 0;
    if (nb > kMaxSnapshots && (fix & kFixErrors)) {
        std::fprintf(stderr, "Discarding %" PRIu64 " overhanging snapshots\n", uint64_t(nb) - kMaxSnapshots);
        reduced += uint32_t(nb - kMaxSnapshots);
        nb = uint32_t(kMaxSnapshots);
    }
    if (auto v = validate_table(offset, nb, kSnapshotHeaderSize, kSnapshotHeaderSize * kMaxSnapshots, cluster_size_,
                                "snapshot table");
        !v) {
        res.check_errors++;
        std::fprintf(stderr, "%s: ERROR %s\n", program_name().c_str(), v.error().message.c_str());
        if (nb > kMaxSnapshots)
            std::fprintf(stderr, "You can force-remove all %" PRIu64 " overhanging snapshots with qemu-img check -r all\n",
                         uint64_t(nb) - kMaxSnapshots);
        return Err(v.error());
    }
    SnapshotTableRepair rep;
    auto t = qcow2::read_snapshot_table(file_, offset, nb, node_.header_.size & ~uint64_t{511},
                                        (fix & kFixErrors) ? &rep : nullptr);
    if (!t) {
        res.check_errors++;
        std::fprintf(stderr, "%s: ERROR failed to read the snapshot table: %s\n", program_name().c_str(),
                     t.error().message.c_str());
        return Err(t.error());
    }
    reduced += rep.overhanging;
    node_.snapshots_ = std::move(t->list);
    node_.snapshots_size_ = t->size;
    node_.header_.snapshots_offset = offset;
    node_.header_.nb_snapshots = uint32_t(node_.snapshots_.size());
    res.corruptions += int64_t(reduced) + rep.extra_dropped;
    if (reduced) {
        // The count on disk must match before the refcounts are checked.
        auto w = write_header_field(file_, hdr::kNbSnapshots, node_.header_.nb_snapshots);
        if (w) w = file_.flush();
        if (!w) {
            res.check_errors++;
            std::fprintf(stderr, "ERROR failed to update the snapshot count in the image header: %s\n",
                         std::strerror(w.error().code));
            return Err(w.error());
        }
        res.corruptions_fixed += reduced;
        res.corruptions -= reduced;
    }
    // A v3 entry has at least vm_state_size_large and disk_size.
    if (node_.header_.version >= 3) {
        for (size_t i = 0; i < node_.snapshots_.size(); i++) {
            if (node_.snapshots_[i].extra_data_size >= 16) continue;
            res.corruptions++;
            std::fprintf(stderr, "%s snapshot table entry %zu is incomplete\n",
                         (fix & kFixErrors) ? "Repairing" : "ERROR", i);
        }
    }
    return ok();
}

Result<void> Checker::fix_snapshot_table(unsigned fix, Res &res) {
    if (!res.corruptions || !(fix & kFixErrors)) return ok();
    auto w = node_.write_snapshots_locked(node_.snapshots_, [this](uint64_t off, uint64_t size) {
        return pre_write_check(off, size, false);
    });
    if (!w) {
        res.check_errors++;
        std::fprintf(stderr, "ERROR failed to update snapshot table: %s\n", std::strerror(w.error().code));
        return Err(w.error());
    }
    res.corruptions_fixed += res.corruptions;
    res.corruptions = 0;
    return ok();
}

// QEMU's qcow2_inc_refcounts_imrt.
Result<void> Checker::inc(int64_t offset, int64_t size, Res &res) {
    if (size <= 0) return ok();
    int64_t file_len = int64_t(file_.length());
    if (offset + size - file_len >= int64_t(cluster_size_)) {
        std::fprintf(stderr,
                     "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
                     "offset 0x%" PRIx64 " size 0x%" PRIx64 "\n",
                     uint64_t(offset), uint64_t(size));
        res.corruptions++;
        return ok();
    }
    uint64_t start = uint64_t(offset) & ~(cluster_size_ - 1), last = uint64_t(offset + size - 1) & ~(cluster_size_ - 1);
    for (uint64_t c = start; c <= last; c += cluster_size_) {
        uint64_t k = c >> cluster_bits_;
        if (k >= expected_.size()) expected_.resize(k + 1);
        if (expected_.get(k) == max_refcount_) {
            std::fprintf(stderr, "ERROR: overflow cluster offset=0x%" PRIx64 "\n", c);
            std::fprintf(stderr,
                         "Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a "
                         "clean copy if the image cannot be opened for writing\n");
            res.corruptions++;
            continue;
        }
        expected_.set(k, expected_.get(k) + 1);
    }
    return ok();
}

Result<void> Checker::check_l2(uint64_t l2_offset, bool frag, unsigned fix, bool active, Res &res) {
    const unsigned w = node_.l2_entry_words_;
    std::vector<uint8_t> raw(cluster_size_);
    if (!read_padded(file_, l2_offset, raw.data(), cluster_size_)) {
        std::fprintf(stderr, "ERROR: I/O error in check_refcounts_l2\n");
        res.check_errors++;
        return make_error(EIO, "I/O error");
    }
    const bool data_file = node_.header_.has_data_file();
    uint64_t next_contiguous = 0;
    return node_.l2_layout_.for_each_entry(decode_l2_table(raw), [&](const L2Entry &entry) -> Result<void> {
        const uint64_t i = entry.index, bitmap = entry.bitmap;
        uint64_t e = entry.word;
        if (entry.type != ClusterType::Compressed && (e & kL2StdReservedBits)) {
            std::fprintf(stderr, "ERROR found l2 entry with reserved bits set: %" PRIx64 "\n", e);
            res.corruptions++;
        }
        switch (entry.type) {
        case ClusterType::Compressed: {
            if (e & kOflagCopied) {
                std::fprintf(stderr,
                             "ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for compressed clusters\n",
                             entry.host);
                e &= ~kOflagCopied;
                res.corruptions++;
            }
            if (data_file) {
                std::fprintf(stderr, "ERROR compressed cluster %d with data file, entry=0x%" PRIx64 "\n", int(i), e);
                res.corruptions++;
                break;
            }
            if (bitmap) {
                std::fprintf(stderr,
                             "ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%" PRIx64
                             "\n",
                             int(i), e);
                res.corruptions++;
                break;
            }
            QIMG_TRY(inc(int64_t(entry.host), int64_t(entry.bytes), res));
            if (frag) {
                res.allocated++;
                res.compressed++;
                res.fragmented++;
            }
            break;
        }
        case ClusterType::ZeroAlloc:
        case ClusterType::Normal: {
            const uint64_t offset = entry.host;
            if ((bitmap >> 32) & bitmap) {
                res.corruptions++;
                std::fprintf(stderr,
                             "ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster allocation bitmap\n",
                             offset);
            }
            if (offset & (cluster_size_ - 1)) {
                res.corruptions++;
                bool contains_data = w == 2 ? (bitmap & kBitmapAllAlloc) != 0 : !(e & kOflagZero);
                if (!contains_data) {
                    std::fprintf(stderr,
                                 "%s offset=%" PRIx64 ": Preallocated cluster is not properly aligned; L2 entry "
                                 "corrupted.\n",
                                 (fix & kFixErrors) ? "Repairing" : "ERROR", offset);
                    if (fix & kFixErrors) {
                        QIMG_ASSIGN(bool fixed, zero_l2_entry(l2_offset, i, bitmap, active, res));
                        if (fixed) return ok();
                    }
                } else {
                    std::fprintf(stderr,
                                 "ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; L2 entry corrupted.\n",
                                 offset);
                }
            }
            if (frag) {
                res.allocated++;
                if (next_contiguous && offset != next_contiguous) res.fragmented++;
                next_contiguous = offset + cluster_size_;
            }
            if (!data_file) QIMG_TRY(inc(int64_t(offset), int64_t(cluster_size_), res));
            break;
        }
        case ClusterType::ZeroPlain:
            break;
        case ClusterType::Unallocated:
            if (bitmap & kBitmapAllAlloc) {
                res.corruptions++;
                std::fprintf(stderr, "ERROR: Unallocated cluster has non-zero subcluster allocation map\n");
            }
            break;
        }
        return ok();
    });
}

// QEMU's fix_l2_entry_by_zero: the entry at `index` of the table at
// `l2_offset` becomes a plain zero cluster, written at once. True when it
// was (the corruption counts as fixed).
Result<bool> Checker::zero_l2_entry(uint64_t l2_offset, uint64_t index, uint64_t bitmap, bool active, Res &res) {
    const unsigned w = node_.l2_entry_words_;
    uint8_t ne[16];
    if (w == 2) {
        uint64_t b = (bitmap | (bitmap << 32)) & kBitmapAllZeroes;
        put_be64(ne, 0);
        put_be64(ne + 8, b);
    } else {
        put_be64(ne, kOflagZero);
    }
    if (!pre_write_check(l2_offset + index * w * 8, w * 8, active)) {
        std::fprintf(stderr, "ERROR: Overlap check failed\n");
        res.check_errors++;
        return make_error(EIO, std::strerror(EIO));
    }
    auto wr = file_.write(l2_offset + index * w * 8, ne, w * 8);
    if (wr) wr = file_.flush();
    node_.l2_cache_->drop(l2_offset);
    if (!wr) {
        std::fprintf(stderr, "ERROR: Failed to overwrite L2 table entry: %s\n", std::strerror(wr.error().code));
        res.check_errors++;
        return false;
    }
    res.corruptions--;
    res.corruptions_fixed++;
    return true;
}

Result<void> Checker::check_l1(uint64_t l1_offset, uint64_t l1_size, bool frag, unsigned fix, bool active,
                               Res &res) {
    if (!l1_size) return ok();
    QIMG_TRY(inc(int64_t(l1_offset), int64_t(l1_size * 8), res));
    std::vector<uint8_t> raw(l1_size * 8);
    if (!read_padded(file_, l1_offset, raw.data(), raw.size())) {
        std::fprintf(stderr, "ERROR: I/O error in check_refcounts_l1\n");
        res.check_errors++;
        return make_error(EIO, "I/O error");
    }
    for (uint64_t i = 0; i < l1_size; i++) {
        uint64_t e = be64(&raw[i * 8]);
        if (!e) continue;
        if (e & kL1ReservedBits) {
            std::fprintf(stderr, "ERROR found L1 entry with reserved bits set: %" PRIx64 "\n", e);
            res.corruptions++;
        }
        uint64_t l2 = e & kL1OffsetMask;
        QIMG_TRY(inc(int64_t(l2), int64_t(cluster_size_), res));
        if (l2 & (cluster_size_ - 1)) {
            std::fprintf(stderr, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted\n", l2);
            res.corruptions++;
        }
        QIMG_TRY(check_l2(l2, frag, fix, active, res));
    }
    return ok();
}

// QEMU's qcow2_check_bitmaps_refcounts.
Result<void> Checker::check_bitmaps(Res &res) {
    const auto &bm = node_.header_.bitmaps;
    if (!bm || bm->nb_bitmaps == 0) return ok();
    QIMG_TRY(inc(int64_t(bm->directory_offset), int64_t(bm->directory_size), res));
    const uint64_t size = bm->directory_size;
    std::vector<uint8_t> dir(size);
    bool okdir = size != 0 && read_padded(file_, bm->directory_offset, dir.data(), size).has_value();
    struct Tab {
        uint64_t off;
        uint32_t size;
    };
    std::vector<Tab> tabs;
    uint64_t off = 0;
    for (uint32_t i = 0; okdir && i < bm->nb_bitmaps; i++) {
        if (size - off < 24) {
            okdir = false;
            break;
        }
        const uint8_t *e = &dir[off];
        uint64_t len = (24 + uint64_t(be32(e + 20)) + be16(e + 18) + 7) & ~uint64_t{7};
        if (len > size - off) {
            okdir = false;
            break;
        }
        // QEMU's check_dir_entry limit (BME_MAX_TABLE_SIZE); tables larger
        // than the file cannot be valid either and are not read into memory.
        uint32_t tsize = be32(e + 8);
        if (tsize > 0x8000000u || uint64_t(tsize) * 8 > file_.length()) {
            okdir = false;
            break;
        }
        tabs.push_back({be64(e), tsize});
        off += len;
    }
    if (!okdir) {
        res.corruptions++;
        return make_error(EINVAL, "Invalid argument");
    }
    for (const Tab &t : tabs) {
        QIMG_TRY(inc(int64_t(t.off), int64_t(uint64_t(t.size) * 8), res));
        std::vector<uint8_t> raw(uint64_t(t.size) * 8);
        bool good = read_padded(file_, t.off, raw.data(), raw.size()).has_value();
        for (uint32_t i = 0; good && i < t.size; i++)
            if (!valid_bitmap_table_entry(be64(&raw[i * 8]), cluster_size_)) good = false;
        if (!good) {
            res.corruptions++;
            return make_error(EINVAL, "Invalid argument");
        }
        for (uint32_t i = 0; i < t.size; i++) {
            uint64_t o = be64(&raw[i * 8]) & kBmeTableOffsetMask;
            if (o) QIMG_TRY(inc(int64_t(o), int64_t(cluster_size_), res));
        }
    }
    return ok();
}

Result<void> Checker::check_refblocks(unsigned fix, bool &rebuild, Res &res) {
    const std::vector<uint64_t> table = node_.refcounts_->table();
    for (uint64_t i = 0; i < table.size(); i++) {
        uint64_t offset = table[i] & kReftOffsetMask, cluster = offset >> cluster_bits_;
        if (table[i] & kReftReservedMask) {
            std::fprintf(stderr, "ERROR refcount table entry %" PRId64 " has reserved bits set\n", int64_t(i));
            res.corruptions++;
            rebuild = true;
            continue;
        }
        if (offset & (cluster_size_ - 1)) {
            std::fprintf(stderr,
                         "ERROR refcount block %" PRId64 " is not cluster aligned; refcount table entry corrupted\n",
                         int64_t(i));
            res.corruptions++;
            rebuild = true;
            continue;
        }
        if (cluster >= expected_.size()) {
            res.corruptions++;
            std::fprintf(stderr, "%s refcount block %" PRId64 " is outside image\n",
                         (fix & kFixErrors) ? "Repairing" : "ERROR", int64_t(i));
            if (fix & kFixErrors) {
                Result<void> tr = make_error(EINVAL, "offset too large");
                if (offset <= uint64_t(INT64_MAX) - cluster_size_) {
                    tr = file_.truncate(offset + cluster_size_, Prealloc::Off, false);
                    if (!tr) std::fprintf(stderr, "%s: %s\n", program_name().c_str(), tr.error().message.c_str());
                }
                uint64_t nb = (file_.length() + cluster_size_ - 1) >> cluster_bits_;
                if (!tr || cluster >= nb) {
                    rebuild = true;
                    std::fprintf(stderr, "ERROR could not resize image: %s\n",
                                 std::strerror(tr ? EINVAL : tr.error().code));
                    continue;
                }
                if (nb > uint64_t(INT32_MAX)) {
                    // QEMU reallocates its expected-refcount array to the new
                    // file size here and fails with ENOMEM when it cannot; past
                    // 2^31 clusters (where its check refuses a file as too
                    // large) take that answer instead of walking such a range.
                    res.check_errors++;
                    return make_error(ENOMEM, std::strerror(ENOMEM));
                }
                if (nb > expected_.size()) expected_.resize(nb);
                res.corruptions--;
                res.corruptions_fixed++;
                QIMG_TRY(inc(int64_t(offset), int64_t(cluster_size_), res));
            }
            continue;
        }
        if (offset != 0) {
            QIMG_TRY(inc(int64_t(offset), int64_t(cluster_size_), res));
            if (expected_.get(cluster) != 1) {
                std::fprintf(stderr, "ERROR refcount block %" PRId64 " refcount=%" PRIu64 "\n", int64_t(i),
                             expected_.get(cluster));
                res.corruptions++;
                rebuild = true;
            }
        }
    }
    return ok();
}

Result<void> Checker::calculate(unsigned fix, bool &rebuild, Res &res) {
    const Header &h = node_.header_;
    QIMG_TRY(inc(0, int64_t(cluster_size_), res));
    QIMG_TRY(check_l1(h.l1_table_offset, h.l1_size, true, fix, true, res));
    if (h.has_data_file() && !node_.snapshots_.empty()) {
        std::fprintf(stderr, "ERROR %d snapshots in image with data file\n", int(node_.snapshots_.size()));
        res.corruptions++;
    }
    for (const Snapshot &s : node_.snapshots_) {
        if (s.l1_table_offset & (cluster_size_ - 1)) {
            std::fprintf(stderr,
                         "ERROR snapshot %s (%s) l1_offset=%#" PRIx64
                         ": L1 table is not cluster aligned; snapshot table entry corrupted\n",
                         s.id.c_str(), s.name.c_str(), s.l1_table_offset);
            res.corruptions++;
            continue;
        }
        if (s.l1_size > kMaxL1Bytes / 8) {
            std::fprintf(stderr,
                         "ERROR snapshot %s (%s) l1_size=%#" PRIx32
                         ": L1 table is too large; snapshot table entry corrupted\n",
                         s.id.c_str(), s.name.c_str(), s.l1_size);
            res.corruptions++;
            continue;
        }
        QIMG_TRY(check_l1(s.l1_table_offset, s.l1_size, false, fix, false, res));
    }
    QIMG_TRY(inc(int64_t(h.snapshots_offset), int64_t(node_.snapshots_size_), res));
    QIMG_TRY(inc(int64_t(node_.refcounts_->table_offset()), int64_t(node_.refcounts_->table().size() * 8), res));
    QIMG_TRY(check_bitmaps(res));
    return check_refblocks(fix, rebuild, res);
}

Result<uint64_t> Checker::get_refcount(uint64_t cluster) {
    auto r = node_.refcounts_->get(cluster);
    if (!r && r.error().message.rfind("Refblock offset", 0) == 0)
        node_.signal_corruption_locked(r.error().message, true);
    return r;
}

const char *Checker::overlap(uint64_t offset, uint64_t size, bool ign_active_l2) const {
    if (!size) return nullptr;
    const Header &h = node_.header_;
    if (offset < cluster_size_) return "qcow2_header";
    size = ((offset & (cluster_size_ - 1)) + size + cluster_size_ - 1) & ~(cluster_size_ - 1);
    offset &= ~(cluster_size_ - 1);
    auto hit = [&](uint64_t o, uint64_t len) { return len && offset < o + len && o < offset + size; };
    if (!node_.l1_table_.empty() && hit(h.l1_table_offset, node_.l1_table_.size() * 8)) return "active L1 table";
    const auto &rt = node_.refcounts_->table();
    if (!rt.empty() && hit(node_.refcounts_->table_offset(), rt.size() * 8)) return "refcount table";
    if (hit(h.snapshots_offset, node_.snapshots_size_)) return "snapshot table";
    for (const Snapshot &sn : node_.snapshots_)
        if (sn.l1_size && hit(sn.l1_table_offset, uint64_t(sn.l1_size) * 8)) return "inactive L1 table";
    if (!ign_active_l2)
        for (uint64_t e : node_.l1_table_)
            if ((e & kL1OffsetMask) && hit(e & kL1OffsetMask, cluster_size_)) return "active L2 table";
    for (uint64_t e : rt)
        if ((e & kReftOffsetMask) && hit(e & kReftOffsetMask, cluster_size_)) return "refcount block";
    if (h.bitmaps && hit(h.bitmaps->directory_offset, h.bitmaps->directory_size)) return "bitmap directory";
    return nullptr;
}

Result<void> Checker::pre_write_check(uint64_t offset, uint64_t size, bool ign_active_l2) {
    const char *what = overlap(offset, size, ign_active_l2);
    if (!what) return ok();
    node_.signal_corruption_locked(std::string("Preventing invalid write on metadata (overlaps with ") + what + ")",
                                   true);
    return make_error(EIO, std::strerror(EIO));
}

void Checker::compare(unsigned fix, bool &rebuild, int64_t &highest, Res &res) {
    highest = 0;
    bool dirty = false;
    const uint64_t per_block = (cluster_size_ * 8) >> node_.header_.refcount_order;
    const std::vector<uint64_t> &reftable = node_.refcounts_->table();
    for (uint64_t i = 0; i < expected_.size(); i++) {
        if (expected_.page_absent(i)) {
            // Nothing expected here and no refcount block on disk: every
            // refcount of the stretch is 0 on both sides (a hostile image
            // can make the file huge and almost all of it such stretches).
            uint64_t ti = i / per_block;
            if (ti >= reftable.size() || !(reftable[ti] & kReftOffsetMask)) {
                uint64_t next = (i | (RefcountArray::kPageEntries - 1)) + 1;
                if (ti < reftable.size()) next = std::min(next, (ti + 1) * per_block);
                i = next - 1;
                continue;
            }
        }
        auto r1 = get_refcount(i);
        if (!r1) {
            std::fprintf(stderr, "Can't get refcount for cluster %" PRId64 ": %s\n", int64_t(i),
                         std::strerror(r1.error().code));
            res.check_errors++;
            continue;
        }
        uint64_t a = *r1, b = expected_.get(i);
        if (a > 0 || b > 0) highest = int64_t(i);
        if (a == b) continue;
        int64_t *num_fixed = nullptr;
        if (a == 0)
            rebuild = true;
        else if (a > b && (fix & kFixLeaks))
            num_fixed = &res.leaks_fixed;
        else if (a < b && (fix & kFixErrors))
            num_fixed = &res.corruptions_fixed;
        std::fprintf(stderr, "%s cluster %" PRId64 " refcount=%" PRIu64 " reference=%" PRIu64 "\n",
                     num_fixed ? "Repairing" : a < b ? "ERROR" : "Leaked", int64_t(i), a, b);
        if (num_fixed) {
            int64_t delta = a > b ? -int64_t(a - b) : int64_t(b - a);
            if (node_.refcounts_->update(i << cluster_bits_, 1, delta)) {
                if (b == 0) freed_.push_back(i);
                (*num_fixed)++;
                dirty = true;
                continue;
            }
        }
        if (a < b)
            res.corruptions++;
        else
            res.leaks++;
    }
    if (dirty) {
        // The refcounts must be durable before anything relies on them.
        auto w = node_.refcounts_->write_back();
        if (w) w = file_.flush();
        if (!w) res.check_errors++;
        // QEMU discards clusters whose refcount drops to 0 (discard=always).
        for (uint64_t c : freed_) (void)file_.discard(c << cluster_bits_, cluster_size_);
    }
    freed_.clear();
}

Result<void> Checker::check_oflag_copied(unsigned fix, Res &res) {
    bool repair;
    if (fix & kFixErrors)
        repair = true;
    else if (fix & kFixLeaks)
        repair = !res.check_errors && !res.corruptions && !res.leaks;
    else
        repair = false;
    const unsigned w = node_.l2_entry_words_;
    const bool data_file = node_.header_.has_data_file();
    std::vector<uint8_t> raw(cluster_size_);
    for (uint64_t i = 0; i < node_.l1_table_.size(); i++) {
        uint64_t l1e = node_.l1_table_[i], l2 = l1e & kL1OffsetMask;
        if (!l2) continue;
        auto rc = get_refcount(l2 >> cluster_bits_);
        if (!rc) continue;
        if ((*rc == 1) != ((l1e & kOflagCopied) != 0)) {
            res.corruptions++;
            std::fprintf(stderr, "%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%" PRIx64 " refcount=%" PRIu64 "\n",
                         repair ? "Repairing" : "ERROR", int(i), l1e, *rc);
            if (repair) {
                uint64_t ne = *rc == 1 ? l1e | kOflagCopied : l1e & ~kOflagCopied;
                uint8_t b[8];
                put_be64(b, ne);
                auto wr = file_.write(node_.header_.l1_table_offset + i * 8, b, 8);
                if (wr) wr = file_.flush();
                if (!wr) {
                    res.check_errors++;
                    return Err(wr.error());
                }
                node_.l1_table_[i] = ne;
                res.corruptions--;
                res.corruptions_fixed++;
            }
        }
        auto rd = read_padded(file_, l2, raw.data(), cluster_size_);
        if (!rd) {
            std::fprintf(stderr, "ERROR: Could not read L2 table: %s\n", std::strerror(rd.error().code));
            res.check_errors++;
            return Err(rd.error());
        }
        L2Table table = decode_l2_table(raw);
        int64_t l2_dirty = 0;
        (void)node_.l2_layout_.for_each_entry(table, [&](const L2Entry &e) {
            if (e.type != ClusterType::Normal && e.type != ClusterType::ZeroAlloc) return;
            uint64_t refcount = 1;
            if (!data_file) {
                auto r = get_refcount(e.host >> cluster_bits_);
                if (!r) return;
                refcount = *r;
            }
            if ((refcount == 1) != e.copied()) {
                res.corruptions++;
                std::fprintf(stderr, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64 "\n",
                             repair ? "Repairing" : "ERROR", e.word, refcount);
                if (repair) {
                    table[e.index * w] = refcount == 1 ? e.word | kOflagCopied : e.word & ~kOflagCopied;
                    l2_dirty++;
                }
            }
        });
        if (l2_dirty > 0) {
            if (auto oc = pre_write_check(l2, cluster_size_, true); !oc) {
                std::fprintf(stderr, "ERROR: Could not write L2 table; metadata overlap check failed: %s\n",
                             std::strerror(EIO));
                res.check_errors++;
                return Err(oc.error());
            }
            raw = encode_l2_table(table);
            auto wr = file_.write(l2, raw.data(), cluster_size_);
            node_.l2_cache_->drop(l2);
            if (!wr) {
                std::fprintf(stderr, "ERROR: Could not write L2 table: %s\n", std::strerror(wr.error().code));
                res.check_errors++;
                return Err(wr.error());
            }
            res.corruptions -= l2_dirty;
            res.corruptions_fixed += l2_dirty;
        }
    }
    return ok();
}

uint64_t Checker::alloc_imrt(uint64_t count, uint64_t &first_free) {
    uint64_t cluster = first_free, contiguous = 0;
    bool first_gap = true;
    for (; cluster < expected_.size() && contiguous < count; cluster++) {
        if (!expected_.get(cluster)) {
            contiguous++;
            if (first_gap) {
                first_free = cluster;
                first_gap = false;
            }
        } else if (contiguous) {
            contiguous = 0;
        }
    }
    if (contiguous < count) expected_.resize(cluster + count - contiguous);
    cluster -= contiguous;
    for (uint64_t i = 0; i < count; i++) expected_.set(cluster + i, 1);
    return cluster << cluster_bits_;
}

std::vector<uint8_t> Checker::encode_refblock(uint64_t index) const {
    const uint32_t order = node_.header_.refcount_order;
    const uint64_t per = (cluster_size_ * 8) >> order;
    std::vector<uint8_t> d(cluster_size_, 0);
    for (uint64_t j = 0; j < per; j++) {
        uint64_t c = index * per + j;
        if (c >= expected_.size()) break;
        uint64_t v = expected_.get(c);
        if (!v) continue;
        switch (order) {
        case 0: d[j / 8] |= uint8_t((v & 1) << (j % 8)); break;
        case 1: d[j / 4] |= uint8_t((v & 3) << (2 * (j % 4))); break;
        case 2: d[j / 2] |= uint8_t((v & 15) << (4 * (j % 2))); break;
        case 3: d[j] = uint8_t(v); break;
        case 4: put_be16(&d[2 * j], uint16_t(v)); break;
        case 5: put_be32(&d[4 * j], uint32_t(v)); break;
        default: put_be64(&d[8 * j], v); break;
        }
    }
    return d;
}

// QEMU's rebuild_refcounts_write_refblocks: true when the reftable grew.
Result<bool> Checker::write_refblocks(uint64_t first, uint64_t end, std::vector<uint64_t> &reftable) {
    const uint64_t per = (cluster_size_ * 8) >> node_.header_.refcount_order;
    uint64_t first_free = 0;
    bool grown = false;
    for (uint64_t cluster = first; cluster < end; cluster++) {
        cluster = expected_.next_nonzero(cluster);
        if (cluster >= end) break;
        uint64_t index = cluster / per, start = index * per, refblock;
        if (reftable.size() > index && reftable[index]) {
            refblock = reftable[index];
        } else {
            if (first_free < start) first_free = start;
            refblock = alloc_imrt(1, first_free);
            if ((refblock >> cluster_bits_) >= end) end = (refblock >> cluster_bits_) + 1;
            if (reftable.size() <= index) {
                uint64_t bytes = ((index + 1) * 8 + cluster_size_ - 1) / cluster_size_ * cluster_size_;
                reftable.resize(bytes / 8, 0);
                grown = true;
            }
            reftable[index] = refblock;
        }
        if (auto oc = pre_write_check(refblock, cluster_size_, false); !oc)
            return Err(oc.error().prepended("ERROR writing refblock: "));
        std::vector<uint8_t> d = encode_refblock(index);
        auto w = file_.write(refblock, d.data(), cluster_size_);
        if (!w) return Err(w.error().prepended("ERROR writing refblock: "));
        cluster = start + per - 1;
    }
    return grown;
}

Result<void> Checker::rebuild(Res &res) {
    std::vector<uint64_t> reftable;
    auto fail = [&](const Error &e) -> Result<void> {
        std::fprintf(stderr, "%s: %s\n", program_name().c_str(), e.message.c_str());
        res.check_errors++;
        return Err(e);
    };
    auto g = write_refblocks(0, expected_.size(), reftable);
    if (!g) return fail(g.error());
    uint64_t reftable_offset = 0, reftable_clusters = 0;
    bool changed = true;
    while (changed) {
        uint64_t first_free = 0;
        reftable_clusters = (reftable.size() * 8 + cluster_size_ - 1) / cluster_size_;
        reftable_offset = alloc_imrt(reftable_clusters, first_free);
        uint64_t s = reftable_offset >> cluster_bits_;
        auto r = write_refblocks(s, s + reftable_clusters, reftable);
        if (!r) return fail(r.error());
        changed = *r;
    }
    std::vector<uint8_t> raw(reftable.size() * 8);
    for (size_t i = 0; i < reftable.size(); i++) put_be64(&raw[i * 8], reftable[i]);
    if (auto oc = pre_write_check(reftable_offset, raw.size(), false); !oc)
        return fail(oc.error().prepended("ERROR writing reftable: "));
    auto w = file_.write(reftable_offset, raw.data(), raw.size());
    if (!w) return fail(w.error().prepended("ERROR writing reftable: "));
    // Refblocks and table durable before the header points at them.
    w = file_.flush();
    if (!w) return fail(w.error().prepended("ERROR writing reftable: "));
    w = write_refcount_table_pointer(file_, reftable_offset, uint32_t(reftable_clusters));
    if (w) w = file_.flush();
    if (!w) return fail(w.error().prepended("ERROR setting reftable: "));
    node_.header_.refcount_table_offset = reftable_offset;
    node_.header_.refcount_table_clusters = uint32_t(reftable_clusters);
    QIMG_TRY(node_.reset_refcounts());
    return ok();
}

Result<void> Checker::check_refcounts(unsigned fix, Res &res) {
    uint64_t size = file_.length();
    uint64_t nb = (size + cluster_size_ - 1) >> cluster_bits_;
    if (nb > uint64_t(INT32_MAX)) {
        res.check_errors++;
        return make_error(EFBIG, "File too large");
    }
    res.total = int64_t(((node_.header_.size / 512 * 512) + cluster_size_ - 1) >> cluster_bits_);
    expected_.assign(nb);
    bool rebuild_needed = false;
    QIMG_TRY(calculate(fix, rebuild_needed, res));
    Res pre = res;
    int64_t highest = 0;
    compare(0, rebuild_needed, highest, res);

    if (rebuild_needed && (fix & kFixErrors)) {
        Res old = res;
        int64_t fresh_leaks = 0;
        std::fprintf(stderr, "Rebuilding refcount structure\n");
        QIMG_TRY(rebuild(res));
        res.corruptions = 0;
        res.leaks = 0;
        rebuild_needed = false;
        expected_.assign(expected_.size());
        QIMG_TRY(calculate(0, rebuild_needed, res));
        if (fix & kFixLeaks) {
            Res saved = res;
            res = Res{};
            compare(kFixLeaks, rebuild_needed, highest, res);
            if (rebuild_needed) std::fprintf(stderr, "ERROR rebuilt refcount structure is still broken\n");
            fresh_leaks = res.leaks;
            res = saved;
        }
        if (res.corruptions < old.corruptions) res.corruptions_fixed += old.corruptions - res.corruptions;
        if (res.leaks < old.leaks) res.leaks_fixed += old.leaks - res.leaks;
        res.leaks += fresh_leaks;
    } else if (fix) {
        if (rebuild_needed) {
            std::fprintf(stderr, "ERROR need to rebuild refcount structures\n");
            res.check_errors++;
            return make_error(EIO, "Input/output error");
        }
        if (res.leaks || res.corruptions) {
            res = pre;
            compare(fix, rebuild_needed, highest, res);
        }
    }
    QIMG_TRY(check_oflag_copied(fix, res));
    res.image_end_offset = (highest + 1) * int64_t(cluster_size_);
    return ok();
}

Result<void> Checker::write_incompat(uint64_t v) {
    QIMG_TRY(write_header_field(file_, hdr::kIncompatibleFeatures, v));
    QIMG_TRY(file_.flush());
    node_.header_.incompatible = v;
    return ok();
}

Result<void> Checker::run(unsigned fix, Res &res) {
    res = Res{};
    // As qcow2_co_check_locked: the snapshot table's findings are kept apart
    // (their repair waits for trusted refcounts) and added in the end.
    Res snap, rc;
    const auto add_counts = [&res](const Res &src) {
        res.corruptions += src.corruptions;
        res.leaks += src.leaks;
        res.check_errors += src.check_errors;
        res.corruptions_fixed += src.corruptions_fixed;
        res.leaks_fixed += src.leaks_fixed;
    };
    if (auto r = read_snapshot_table(fix, snap); !r) {
        add_counts(snap);
        return r;
    }
    auto r = check_refcounts(fix, rc);
    res = rc;
    if (r) r = fix_snapshot_table(fix, snap);
    add_counts(snap);
    QIMG_TRY(r);
    if (fix && res.check_errors == 0 && res.corruptions == 0) {
        const uint64_t inc = node_.header_.incompatible;
        if (inc & (kIncompatDirty | kIncompatCorrupt)) {
            // QEMU's qcow2_mark_clean + qcow2_mark_consistent.
            QIMG_TRY(node_.flush_metadata_locked());
            QIMG_TRY(file_.flush());
            QIMG_TRY(write_incompat(inc & ~(kIncompatDirty | kIncompatCorrupt)));
        }
    }
    return ok();
}

// --- Qcow2Node entry points ------------------------------------------------

Result<void> Qcow2Node::reset_refcounts() {
    refcounts_ = std::make_unique<Refcounts>(*file_, cluster_bits_, header_.refcount_order,
                                      [this](uint64_t off, uint32_t clusters) -> Result<void> {
                                          QIMG_TRY(write_refcount_table_pointer(*file_, off, clusters));
                                          header_.refcount_table_offset = off;
                                          header_.refcount_table_clusters = clusters;
                                          return file_->flush();
                                      });
    return refcounts_->load(header_.refcount_table_offset, header_.refcount_table_clusters);
}

Result<CheckReport> Qcow2Node::check(CheckRepair repair) {
    std::lock_guard g(mu_);
    if (!read_only_) QIMG_TRY(flush_metadata_locked());
    unsigned fix = repair == CheckRepair::All ? unsigned{kFixLeaks | kFixErrors} : repair == CheckRepair::Leaks ? unsigned{kFixLeaks} : 0u;
    if (fix && read_only_) return make_error(EROFS, "Read-only image");
    Checker c(*this);
    Res res;
    auto r = c.run(fix, res);
    if (!r) {
        int code = r.error().code ? r.error().code : EIO;
        return make_error(code, std::strerror(code));
    }
    CheckReport out;
    out.corruptions = res.corruptions;
    out.leaks = res.leaks;
    out.check_errors = res.check_errors;
    out.corruptions_fixed = res.corruptions_fixed;
    out.leaks_fixed = res.leaks_fixed;
    out.image_end_offset = res.image_end_offset;
    out.total_clusters = res.total;
    out.allocated_clusters = res.allocated;
    out.fragmented_clusters = res.fragmented;
    out.compressed_clusters = res.compressed;
    out.has_cluster_stats = true;
    return out;
}

Result<void> Qcow2Node::repair_dirty() {
    std::lock_guard g(mu_);
    Checker c(*this);
    Res res;
    auto r = c.run(kFixLeaks | kFixErrors, res);
    if (!r || res.check_errors) {
        // The open fails and QEMU never opens the node, so its dirty bit
        // stays: close() (from the destructor) must not mark an image
        // clean whose refcounts were not repaired (found by tests/crash).
        dirty_change_pending_ = true;
        int code = r ? EIO : (r.error().code ? r.error().code : EIO);
        return make_error(code, std::string("Could not repair dirty image: ") + std::strerror(code));
    }
    return ok();
}

}  // namespace qimg::qcow2
