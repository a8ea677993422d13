// qemu-img check of qcow2, first phase: the expected refcount of every host
// cluster, counted from the header, the active and snapshot L1/L2 tables,
// the snapshot table, the refcount table, the bitmaps and the refcount
// blocks (QEMU's calculate_refcounts), with the problems each structure
// shows reported on the way. Unaligned preallocated zero clusters are
// repaired here, as QEMU does, because the count must not include them.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "format/qcow2/checker.h"
#include "util/endian.h"
#include "util/progname.h"

namespace qimg::qcow2 {

// QEMU's qcow2_inc_refcounts_imrt.
Result<void> Checker::inc(int64_t offset, int64_t size, CheckResult &res) {
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

// The L1 step is check's own rather than for_each_l2_table() (l1l2.h):
// every non-zero entry is counted and its table read, reserved bits and
// unaligned offsets included, where the node's walks refuse such entries.
Result<void> Checker::check_l1(uint64_t l1_offset, uint64_t l1_size, bool frag, unsigned fix, bool active,
                               CheckResult &res) {
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
        if (e & kL1ReservedMask) {
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

Result<void> Checker::check_l2(uint64_t l2_offset, bool frag, unsigned fix, bool active, CheckResult &res) {
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
        if (entry.type != ClusterType::Compressed && (e & kL2StdReservedMask)) {
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
                bool contains_data = w == 2 ? (bitmap & kL2BitmapAllAllocated) != 0 : !(e & kOflagZero);
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
            if (bitmap & kL2BitmapAllAllocated) {
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
Result<bool> Checker::zero_l2_entry(uint64_t l2_offset, uint64_t index, uint64_t bitmap, bool active, CheckResult &res) {
    const unsigned w = node_.l2_entry_words_;
    uint8_t ne[16];
    if (w == 2) {
        uint64_t b = (bitmap | (bitmap << 32)) & kL2BitmapAllZero;
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

// QEMU's qcow2_check_bitmaps_refcounts.
Result<void> Checker::check_bitmaps(CheckResult &res) {
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
        if (size - off < kBmeDirEntryFixed) {
            okdir = false;
            break;
        }
        ByteReader e(std::span<const uint8_t>(dir).subspan(off, kBmeDirEntryFixed));
        uint64_t len = bitmap_dir_entry_size(uint64_t(e.get(bme::kExtraDataSize)) + e.get(bme::kNameSize));
        if (len > size - off) {
            okdir = false;
            break;
        }
        // QEMU's check_dir_entry limit (BME_MAX_TABLE_SIZE); tables larger
        // than the file cannot be valid either and are not read into memory.
        uint32_t tsize = e.get(bme::kTableSize);
        if (tsize > kBmeMaxTableSize || uint64_t(tsize) * 8 > file_.length()) {
            okdir = false;
            break;
        }
        tabs.push_back({e.get(bme::kTableOffset), tsize});
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

Result<void> Checker::check_refblocks(unsigned fix, bool &rebuild, CheckResult &res) {
    const std::vector<uint64_t> table = node_.refcounts_->table();
    for (uint64_t i = 0; i < table.size(); i++) {
        uint64_t offset = table[i] & kRefcountTableOffsetMask, cluster = offset >> cluster_bits_;
        if (table[i] & kRefcountTableReservedMask) {
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

Result<void> Checker::calculate(unsigned fix, bool &rebuild, CheckResult &res) {
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
    // The LUKS header and key material (the crypto header extension).
    if (h.crypto_header && h.crypto_header->length)
        QIMG_TRY(inc(int64_t(h.crypto_header->offset), int64_t(h.crypto_header->length), res));
    QIMG_TRY(check_bitmaps(res));
    return check_refblocks(fix, rebuild, res);
}

}  // namespace qimg::qcow2
