// qemu-img check of qcow2, the comparison phases: the expected refcounts
// against those on disk (leaks and corruptions, fixed under -r), then
// OFLAG_COPIED against the refcounts (QEMU's compare_refcounts and
// check_oflag_copied); and the metadata overlap guard every repair write
// passes (QEMU's qcow2_pre_write_overlap_check).
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "format/qcow2/checker.h"
#include "util/endian.h"

namespace qimg::qcow2 {

Result<uint64_t> Checker::get_refcount(uint64_t cluster) {
    auto r = node_.refcounts_->get(cluster);
    if (!r && r.error().message.rfind("Refblock offset", 0) == 0)
        node_.signal_corruption_locked(r.error().message, true);
    return r;
}

void Checker::compare(unsigned fix, bool &rebuild, int64_t &highest, CheckResult &res) {
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
            if (ti >= reftable.size() || !(reftable[ti] & kRefcountTableOffsetMask)) {
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

Result<void> Checker::check_oflag_copied(unsigned fix, CheckResult &res) {
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
        if ((e & kRefcountTableOffsetMask) && hit(e & kRefcountTableOffsetMask, cluster_size_)) return "refcount block";
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

}  // namespace qimg::qcow2
