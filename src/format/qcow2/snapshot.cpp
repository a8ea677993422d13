// qcow2 internal snapshots (see snapshot.h): the snapshot table, and the
// Qcow2Node operations that create, apply, delete and temporarily load
// snapshots, plus the copy-on-write of L2 tables shared with snapshots.
//
// Refcounts: a snapshot holds one reference on every L2 table and data
// cluster its L1 table reaches (as QEMU's qcow2_update_snapshot_refcount
// counts them); an active L2 entry or L1 entry carries OFLAG_COPIED exactly
// when its cluster's refcount is 1.
//
// Crash safety: create writes the snapshot's L1 copy and raises the
// refcounts (made durable) before the header points at the new table; apply
// raises the snapshot's refcounts before the active L1 table is overwritten
// and lowers the old ones after; delete unpublishes the snapshot before
// lowering its refcounts. OFLAG_COPIED is cleared and flushed before
// refcounts rise and set only after they fell and were flushed, so that an
// interruption never leaves the flag on a shared cluster (QEMU would write
// into it in place): v3 images carry the dirty bit meanwhile as well, but
// compat=0.10 has none. An interruption leaks clusters, or leaves a flag
// missing on a cluster of refcount 1 (a copy on the next write), at worst.
#include "format/qcow2/snapshot.h"
#include "util/progname.h"

#include <algorithm>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>

#include "format/qcow2/header.h"
#include "format/qcow2/qcow2.h"
#include "util/bytes.h"
#include "util/endian.h"

namespace qimg::qcow2 {
namespace {

// Reads a byte stream of the image through a window, so that a table of
// many small entries costs few reads.
constexpr uint64_t kMaxRequestEnd = uint64_t(INT64_MAX) & ~((uint64_t{1} << 30) - 1);

class Cursor {
public:
    explicit Cursor(BlockNode &f) : file_(f) {}
    Result<void> read(uint64_t off, void *dst, size_t len) {
        uint8_t *d = static_cast<uint8_t *>(dst);
        // QEMU's request limit (BDRV_MAX_LENGTH): beyond it reads fail.
        if (off > kMaxRequestEnd || len > kMaxRequestEnd - off)
            return errno_error(EIO, "Failed to read snapshot table");
        while (len > 0) {
            if (off < win_off_ || off >= win_off_ + win_.size()) {
                win_off_ = off;
                win_.resize(std::min<uint64_t>(64 * 1024, kMaxRequestEnd - off));
                auto r = read_padded(file_, off, win_.data(), win_.size());
                if (!r) {
                    win_.clear();
                    return errno_error(r.error().code, "Failed to read snapshot table");
                }
            }
            size_t n = std::min<uint64_t>(len, win_off_ + win_.size() - off);
            std::memcpy(d, win_.data() + (off - win_off_), n);
            d += n;
            off += n;
            len -= n;
        }
        return ok();
    }

private:
    BlockNode &file_;
    std::vector<uint8_t> win_;
    uint64_t win_off_ = 0;
};

uint64_t round8(uint64_t v) { return (v + 7) & ~uint64_t{7}; }

// qcow2.txt "Snapshot table": the fixed part of an entry, then its extra
// data (the known fields first), then the ID and the name.
namespace entry {
constexpr Be64 kL1TableOffset{0};
constexpr Be32 kL1Size{8};
constexpr Be16 kIdSize{12}, kNameSize{14};
constexpr Be32 kDateSec{16}, kDateNsec{20};
constexpr Be64 kVmClockNsec{24};
constexpr Be32 kVmStateSize{32}, kExtraDataSize{36};
constexpr size_t kFixedSize = 40;
static_assert(kFixedSize == kSnapshotHeaderSize);
constexpr Be64 kExtraVmStateSize{0}, kExtraDiskSize{8}, kExtraIcount{16};
}  // namespace entry

std::string hex(uint64_t v) {
    char b[32];
    std::snprintf(b, sizeof b, "%#" PRIx64, v);
    return b;
}

}  // namespace

Result<SnapshotTable> read_snapshot_table(BlockNode &file, uint64_t snapshots_offset, uint32_t nb,
                                          uint64_t disk_size, SnapshotTableRepair *repair) {
    SnapshotTable t;
    if (nb == 0) return t;
    Cursor c(file);
    uint64_t offset = snapshots_offset, table_length = 0;
    t.list.reserve(std::min<uint32_t>(nb, 1024));
    for (uint32_t i = 0; i < nb; i++) {
        const uint64_t entry_start = offset;
        table_length = round8(table_length);
        offset = round8(offset);
        uint8_t b[entry::kFixedSize];
        QIMG_TRY(c.read(offset, b, sizeof b));
        offset += sizeof b;
        ByteReader fixed(b);
        Snapshot sn;
        sn.l1_table_offset = fixed.get(entry::kL1TableOffset);
        sn.l1_size = fixed.get(entry::kL1Size);
        const uint16_t id_size = fixed.get(entry::kIdSize), name_size = fixed.get(entry::kNameSize);
        sn.date_sec = fixed.get(entry::kDateSec);
        sn.date_nsec = fixed.get(entry::kDateNsec);
        sn.vm_clock_nsec = fixed.get(entry::kVmClockNsec);
        sn.vm_state_size = fixed.get(entry::kVmStateSize);
        sn.extra_data_size = fixed.get(entry::kExtraDataSize);
        bool truncate_extra = false;
        if (sn.extra_data_size > kMaxSnapshotExtraData) {
            if (!repair)
                return make_error(EFBIG, "Too much extra metadata in snapshot table entry " + std::to_string(i) +
                                             "\nYou can force-remove this extra metadata with qemu-img check -r all");
            std::fprintf(stderr, "Discarding too much extra metadata in snapshot table entry %u (%" PRIu32 " > %u)\n",
                         i, sn.extra_data_size, kMaxSnapshotExtraData);
            repair->extra_dropped++;
            truncate_extra = true;
        }
        uint8_t extra[kSnapshotExtraSize] = {};
        uint32_t known = std::min(kSnapshotExtraSize, sn.extra_data_size);
        QIMG_TRY(c.read(offset, extra, known));
        offset += known;
        // Only the fields the entry's extra data covers count.
        ByteReader known_extra(std::span<const uint8_t>(extra, known));
        if (known_extra.has(entry::kExtraVmStateSize)) sn.vm_state_size = known_extra.get(entry::kExtraVmStateSize);
        sn.disk_size = known_extra.has(entry::kExtraDiskSize) ? known_extra.get(entry::kExtraDiskSize) : disk_size;
        sn.icount = known_extra.has(entry::kExtraIcount) ? known_extra.get(entry::kExtraIcount) : UINT64_MAX;
        if (sn.extra_data_size > kSnapshotExtraSize) {
            const uint64_t extra_end = offset + (sn.extra_data_size - kSnapshotExtraSize);
            if (truncate_extra) sn.extra_data_size = kMaxSnapshotExtraData;
            sn.unknown_extra.resize(sn.extra_data_size - kSnapshotExtraSize);
            QIMG_TRY(c.read(offset, sn.unknown_extra.data(), sn.unknown_extra.size()));
            offset = extra_end;
        }
        sn.id.resize(id_size);
        QIMG_TRY(c.read(offset, sn.id.data(), id_size));
        offset += id_size;
        sn.name.resize(name_size);
        QIMG_TRY(c.read(offset, sn.name.data(), name_size));
        offset += name_size;
        // C strings in QEMU: an embedded NUL ends them.
        sn.id.resize(std::strlen(sn.id.c_str()));
        sn.name.resize(std::strlen(sn.name.c_str()));
        // Counts the extra data as kept (truncated), the offset as read.
        table_length += 40 + sn.extra_data_size + id_size + name_size;
        if (table_length > kMaxSnapshotsSize || offset - snapshots_offset > uint64_t(INT_MAX)) {
            if (!repair)
                return make_error(EFBIG, "Snapshot table is too big\nYou can force-remove all " +
                                             std::to_string(nb - i) +
                                             " overhanging snapshots with qemu-img check -r all");
            std::fprintf(stderr, "Discarding %u overhanging snapshots (snapshot table is too big)\n", nb - i);
            repair->overhanging += nb - i;
            offset = entry_start;
            break;
        }
        t.list.push_back(std::move(sn));
    }
    t.size = offset - snapshots_offset;
    return t;
}

Result<SnapshotTable> read_snapshot_table(BlockNode &file, const Header &h, uint64_t disk_size) {
    return read_snapshot_table(file, h.snapshots_offset, h.nb_snapshots, disk_size);
}

Result<std::vector<uint8_t>> serialize_snapshot_table(const std::vector<Snapshot> &list) {
    uint64_t size = 0;
    for (const Snapshot &sn : list) {
        size = round8(size) + entry::kFixedSize + std::max<uint64_t>(kSnapshotExtraSize, sn.extra_data_size) + sn.id.size() +
               sn.name.size();
        if (size > kMaxSnapshotsSize) return make_error(EFBIG, "Snapshot table is too big");
    }
    std::vector<uint8_t> out(size, 0);
    uint64_t off = 0;
    for (const Snapshot &sn : list) {
        off = round8(off);
        ByteWriter w(out);  // sized above for every entry
        w.put(entry::kL1TableOffset.at(off), sn.l1_table_offset);
        w.put(entry::kL1Size.at(off), sn.l1_size);
        w.put(entry::kIdSize.at(off), uint16_t(sn.id.size()));
        w.put(entry::kNameSize.at(off), uint16_t(sn.name.size()));
        w.put(entry::kDateSec.at(off), sn.date_sec);
        w.put(entry::kDateNsec.at(off), sn.date_nsec);
        w.put(entry::kVmClockNsec.at(off), sn.vm_clock_nsec);
        // Too big for 32 bits: older readers see a disk-only snapshot.
        w.put(entry::kVmStateSize.at(off), sn.vm_state_size <= 0xffffffffu ? uint32_t(sn.vm_state_size) : 0);
        w.put(entry::kExtraDataSize.at(off), std::max(kSnapshotExtraSize, sn.extra_data_size));
        off += entry::kFixedSize;
        w.put(entry::kExtraVmStateSize.at(off), sn.vm_state_size);
        w.put(entry::kExtraDiskSize.at(off), sn.disk_size);
        w.put(entry::kExtraIcount.at(off), sn.icount);
        off += kSnapshotExtraSize;
        if (sn.extra_data_size > kSnapshotExtraSize) {
            std::memcpy(out.data() + off, sn.unknown_extra.data(), sn.unknown_extra.size());
            off += sn.unknown_extra.size();
        }
        std::memcpy(out.data() + off, sn.id.data(), sn.id.size());
        off += sn.id.size();
        std::memcpy(out.data() + off, sn.name.data(), sn.name.size());
        off += sn.name.size();
    }
    return out;
}

Result<void> validate_snapshot_l1(const Snapshot &sn, uint64_t cluster_size) {
    return validate_table(sn.l1_table_offset, sn.l1_size, 8, kMaxL1Bytes, cluster_size, "Snapshot L1 table");
}

Result<void> validate_snapshot_l1_reported(const Snapshot &sn, uint64_t cluster_size) {
    auto v = validate_snapshot_l1(sn, cluster_size);
    if (v) return ok();
    report_error(v.error().message);
    return make_error(v.error().code, std::strerror(v.error().code));
}

std::string new_snapshot_id(const std::vector<Snapshot> &list) {
    unsigned long max = 0;
    for (const Snapshot &sn : list) max = std::max(max, std::strtoul(sn.id.c_str(), nullptr, 10));
    return std::to_string(max + 1);
}

int find_snapshot(const std::vector<Snapshot> &list, const std::string *id, const std::string *name) {
    if (!id && !name) return -1;
    for (size_t i = 0; i < list.size(); i++) {
        if (id && list[i].id != *id) continue;
        if (name && list[i].name != *name) continue;
        return int(i);
    }
    return -1;
}

int find_snapshot_by_id_or_name(const std::vector<Snapshot> &list, const std::string &s) {
    int i = find_snapshot(list, &s, nullptr);
    return i >= 0 ? i : find_snapshot(list, nullptr, &s);
}

// --- Qcow2Node --------------------------------------------------------------

Result<void> Qcow2Node::load_snapshots() {
    QIMG_ASSIGN(SnapshotTable t, read_snapshot_table(*file_, header_, header_.size));
    snapshots_ = std::move(t.list);
    snapshots_size_ = t.size;
    return ok();
}

Result<std::vector<SnapshotInfo>> Qcow2Node::snapshot_list() {
    std::lock_guard g(mu_);
    if (header_.has_data_file()) return make_error(ENOTSUP, "Operation not supported");
    std::vector<SnapshotInfo> out;
    for (const Snapshot &sn : snapshots_) {
        SnapshotInfo i;
        i.id = sn.id.substr(0, 127);    // QEMUSnapshotInfo.id_str is char[128]
        i.name = sn.name.substr(0, 255);  // and name char[256]
        i.vm_state_size = sn.vm_state_size;
        i.date_sec = sn.date_sec;
        i.date_nsec = sn.date_nsec;
        i.vm_clock_nsec = sn.vm_clock_nsec;
        i.icount = sn.icount;
        out.push_back(std::move(i));
    }
    return out;
}

// Reads a snapshot's L1 table (validated by the caller), zero-padded to `min_entries`.
Result<std::vector<uint64_t>> Qcow2Node::read_l1_locked(uint64_t offset, uint32_t entries, uint64_t min_entries) {
    std::vector<uint64_t> l1(std::max<uint64_t>(entries, min_entries), 0);
    if (entries) {
        std::vector<uint8_t> raw(uint64_t(entries) * 8);
        QIMG_TRY(read_padded(*file_, offset, raw.data(), raw.size()));
        for (uint64_t i = 0; i < entries; i++) l1[i] = be64(&raw[i * 8]);
    }
    return l1;
}

Result<void> Qcow2Node::write_active_l1_locked() {
    std::vector<uint8_t> raw(l1_table_.size() * 8);
    for (size_t i = 0; i < l1_table_.size(); i++) put_be64(&raw[i * 8], l1_table_[i]);
    if (!raw.empty()) QIMG_TRY(file_->write(header_.l1_table_offset, raw.data(), raw.size()));
    return file_->flush();
}

// The host range an L2 entry holds one reference on: its cluster, or a
// compressed cluster's bytes; length 0 when it holds none.
Result<std::pair<uint64_t, uint64_t>> Qcow2Node::l2_entry_ref_locked(const L2Entry &e, uint64_t l2_off) const {
    if (e.type != ClusterType::Compressed && (e.host & (cluster_size_ - 1)))
        return make_error(EIO, "Cluster allocation offset " + hex(e.host) + " unaligned (L2 offset: " + hex(l2_off) +
                                   ", L2 index: " + hex(e.index) + ")");
    return std::pair{e.host, e.bytes};
}

// The L2 table an L1 entry names (null when none), offset checked.
Result<std::shared_ptr<L2Table>> Qcow2Node::snapshot_l2_locked(uint64_t l1_entry, uint64_t l1_index) {
    uint64_t l2_off = l1_entry & kL1OffsetMask;
    if (!l2_off) return std::shared_ptr<L2Table>();
    if (l2_off & (cluster_size_ - 1))
        return make_error(EIO, "L2 table offset " + hex(l2_off) + " unaligned (L1 index: " + hex(l1_index) + ")");
    return l2_cache_->get(l2_off);
}

// Before refcounts rise (snapshot create and apply): OFLAG_COPIED is
// cleared in the entries of `l1` and of every L2 table it reaches, durably,
// with `active` also in the active L1 table on disk. An interruption after
// this leaves at worst a flag missing on a cluster whose refcount is still 1
// (a copy on the next write; check -r all sets it), never a flag on a
// cluster a snapshot shares, which a write would change under the snapshot.
Result<void> Qcow2Node::clear_copied_locked(std::vector<uint64_t> &l1, bool active) {
    bool l1_modified = false;
    QIMG_TRY(for_each_l2_table(l1, snapshot_l2_loader(), [&](uint64_t i, uint64_t l2_off, L2Table &t) -> Result<void> {
        bool dirty = false;
        (void)l2_layout_.for_each_entry(t, [&](const L2Entry &e) {
            if (!e.copied()) return;
            t[e.index * l2_entry_words_] = e.word & ~kOflagCopied;
            dirty = true;
        });
        // Written back by flush_metadata_locked() below, or earlier by an
        // eviction: either way before any refcount changes.
        if (dirty) l2_cache_->mark_dirty(l2_off);
        if (l1[i] & kOflagCopied) {
            l1[i] &= ~kOflagCopied;
            l1_modified = true;
        }
        return ok();
    }));
    QIMG_TRY(flush_metadata_locked());
    QIMG_TRY(file_->flush());
    if (active && l1_modified) QIMG_TRY(write_active_l1_locked());
    return ok();
}

// QEMU's qcow2_update_snapshot_refcount without its flag updates: adds
// `addend` (-1 or +1) to the refcount of every L2 table and data cluster
// `l1` reaches, durably. The COPIED flags go before a rise
// (clear_copied_locked) and after a fall (sync_copied_locked).
Result<void> Qcow2Node::update_snapshot_refcount_locked(const std::vector<uint64_t> &l1, int addend) {
    std::vector<uint64_t> dropped;  // clusters a -1 may have freed
    QIMG_TRY(walk_references_locked(
        l1,
        [&](uint64_t host, uint64_t bytes) -> Result<void> {
            QIMG_TRY(refcounts_->update(host, bytes, addend));
            if (addend < 0) dropped.push_back(host);
            return ok();
        },
        [&](uint64_t l2_off) -> Result<void> {
            QIMG_TRY(refcounts_->update(l2_off, cluster_size_, addend));
            QIMG_ASSIGN(uint64_t rc, refcounts_->get(l2_off >> cluster_bits_));
            if (rc == 0) {
                l2_cache_->drop(l2_off);  // freed: nothing may write it back
                if (addend < 0) dropped.push_back(l2_off);
            }
            return ok();
        }));
    QIMG_TRY(flush_metadata_locked());
    QIMG_TRY(file_->flush());
    // As QEMU's QCOW2_DISCARD_SNAPSHOT frees; callers drop references only
    // to clusters that nothing published names any more.
    return discard_freed_locked(dropped);
}

// Every L2 table and cluster `l1` reaches has a refcount block
// (Refcounts::check_counted): checked before a snapshot operation raises
// their refcounts, so that a corrupt entry fails it before it starts.
Result<void> Qcow2Node::check_references_counted_locked(const std::vector<uint64_t> &l1) {
    return walk_references_locked(
        l1, [&](uint64_t host, uint64_t bytes) { return refcounts_->check_counted(host, bytes); },
        [&](uint64_t l2_off) { return refcounts_->check_counted(l2_off, cluster_size_); });
}

// Every data cluster (a compressed one's byte range) an L2 table of `l1`
// references goes to `on_cluster(host, bytes)`, then the table itself to
// `on_table(l2_offset)`, in L1 order; the first error stops the walk.
Result<void> Qcow2Node::walk_references_locked(const std::vector<uint64_t> &l1,
                                               const std::function<Result<void>(uint64_t, uint64_t)> &on_cluster,
                                               const std::function<Result<void>(uint64_t)> &on_table) {
    return for_each_l2_table(l1, snapshot_l2_loader(), [&](uint64_t, uint64_t l2_off, L2Table &t) -> Result<void> {
        QIMG_TRY(l2_layout_.for_each_entry(t, [&](const L2Entry &e) -> Result<void> {
            QIMG_ASSIGN(auto ref, l2_entry_ref_locked(e, l2_off));
            if (ref.second) QIMG_TRY(on_cluster(ref.first, ref.second));
            return ok();
        }));
        return on_table(l2_off);
    });
}

// After refcounts fell (snapshot apply and delete), with them durable:
// OFLAG_COPIED is set on the active L2 and L1 entries exactly where the
// refcount is 1 (compressed clusters never carry it), L2 tables first. An
// interruption leaves at worst flags still missing.
Result<void> Qcow2Node::sync_copied_locked() {
    bool l1_modified = false;
    QIMG_TRY(for_each_l2_table(l1_table_, snapshot_l2_loader(), [&](uint64_t i, uint64_t l2_off, L2Table &t) -> Result<void> {
        bool dirty = false;
        QIMG_TRY(l2_layout_.for_each_entry(t, [&](const L2Entry &e) -> Result<void> {
            uint64_t refcount = 0;
            if (e.type != ClusterType::Compressed) {
                QIMG_ASSIGN(auto ref, l2_entry_ref_locked(e, l2_off));
                if (ref.second) {
                    QIMG_ASSIGN(refcount, refcounts_->get(ref.first >> cluster_bits_));
                }
            }
            const uint64_t want = refcount == 1 ? (e.word | kOflagCopied) : (e.word & ~kOflagCopied);
            if (want != e.word) {
                t[e.index * l2_entry_words_] = want;
                dirty = true;
            }
            return ok();
        }));
        if (dirty) l2_cache_->mark_dirty(l2_off);
        QIMG_ASSIGN(uint64_t rc, refcounts_->get(l2_off >> cluster_bits_));
        const uint64_t ne = rc == 1 ? (l2_off | kOflagCopied) : l2_off;
        if (ne != l1_table_[i]) {
            l1_table_[i] = ne;
            l1_modified = true;
        }
        return ok();
    }));
    QIMG_TRY(flush_metadata_locked());
    QIMG_TRY(file_->flush());
    if (l1_modified) QIMG_TRY(write_active_l1_locked());
    return ok();
}

// Publishes `list` as the snapshot table: the new table is written and
// durable before the header points at it; the old one is freed after.
Result<void> Qcow2Node::write_snapshots_locked(std::vector<Snapshot> list,
                                              const std::function<Result<void>(uint64_t, uint64_t)> &pre_write) {
    QIMG_ASSIGN(std::vector<uint8_t> raw, serialize_snapshot_table(list));
    uint64_t new_off = 0;
    if (!raw.empty()) {
        QIMG_ASSIGN(new_off, refcounts_->alloc_clusters((raw.size() + cluster_size_ - 1) / cluster_size_));
        QIMG_TRY(flush_metadata_locked());
        QIMG_TRY(file_->flush());
        // A refusal marks the image corrupt; like QEMU, which then stops
        // writing to it, the allocation (already durable) is left to leak.
        if (pre_write) QIMG_TRY(pre_write(new_off, raw.size()));
        QIMG_TRY(file_->write(new_off, raw.data(), raw.size()));
    }
    QIMG_TRY(file_->flush());
    QIMG_TRY(write_snapshot_table_pointer(*file_, uint32_t(list.size()), new_off));
    QIMG_TRY(file_->flush());
    uint64_t old_off = header_.snapshots_offset, old_size = snapshots_size_;
    header_.nb_snapshots = uint32_t(list.size());
    header_.snapshots_offset = new_off;
    snapshots_ = std::move(list);
    snapshots_size_ = raw.size();
    if (old_off && old_size) {
        QIMG_TRY(refcounts_->update(old_off, old_size, -1));
        // QEMU frees it with QCOW2_DISCARD_SNAPSHOT: the file layer punches
        // out every cluster that became free.
        std::vector<uint64_t> hosts;
        for (uint64_t c = old_off >> cluster_bits_; c <= (old_off + old_size - 1) >> cluster_bits_; c++) hosts.push_back(c << cluster_bits_);
        QIMG_TRY(discard_freed_locked(hosts));
    }
    return ok();
}

// Cached state that may describe clusters a snapshot operation freed.
void Qcow2Node::forget_freed_state_locked() {
    free_byte_offset_ = 0;
    metadata_prealloc_.reset();
    std::lock_guard z(decompressed_mu_);
    decompressed_cluster_.clear();
    decompressed_entry_ = 0;
}

Result<void> Qcow2Node::snapshot_create(const SnapshotInfo &info) {
    std::lock_guard g(mu_);
    if (snapshots_.size() >= kMaxSnapshots) return make_error(EFBIG, "Too many snapshots");
    if (header_.has_data_file()) return make_error(ENOTSUP, "Operation not supported");
    QIMG_TRY(prepare_write_locked());
    // A reference the refcounts cannot count is refused before anything
    // changes, so that the image is left as it was (no dirty bit to repair).
    QIMG_TRY(check_references_counted_locked(l1_table_));
    QIMG_TRY(mark_dirty_locked());
    QIMG_TRY(flush_metadata_locked());

    Snapshot sn;
    sn.id = new_snapshot_id(snapshots_);
    sn.name = info.name;
    sn.disk_size = header_.size;
    sn.vm_state_size = info.vm_state_size;
    sn.date_sec = info.date_sec;
    sn.date_nsec = info.date_nsec;
    sn.vm_clock_nsec = info.vm_clock_nsec;
    sn.icount = info.icount;
    sn.extra_data_size = kSnapshotExtraSize;

    // The snapshot's own copy of the active L1 table keeps the flags it has
    // now, as QEMU's does (byte parity; apply ignores them).
    const std::vector<uint64_t> l1_copy = l1_table_;
    // Every cluster the active table reaches is about to be shared.
    QIMG_TRY(clear_copied_locked(l1_table_, true));
    sn.l1_size = uint32_t(l1_copy.size());
    if (!l1_copy.empty()) {
        uint64_t bytes = l1_copy.size() * 8;
        QIMG_ASSIGN(sn.l1_table_offset, refcounts_->alloc_clusters((bytes + cluster_size_ - 1) / cluster_size_));
        std::vector<uint8_t> raw(bytes);
        for (size_t i = 0; i < l1_copy.size(); i++) put_be64(&raw[i * 8], l1_copy[i]);
        QIMG_TRY(file_->write(sn.l1_table_offset, raw.data(), raw.size()));
    }
    // One more reference on everything the active table reaches, durable
    // before the snapshot table names the copy.
    if (auto r = update_snapshot_refcount_locked(l1_table_, +1); !r) {
        // Left as QEMU leaves it (e.g. a refcount past refcount_bits, iotest
        // 112): the references raised so far leak, and the flags come back
        // where the refcount is still 1, so that check finds leaks only.
        (void)sync_copied_locked();
        return r;
    }

    std::vector<Snapshot> list = snapshots_;
    list.push_back(std::move(sn));
    QIMG_TRY(write_snapshots_locked(std::move(list)));
    QIMG_TRY(flush_metadata_locked());
    dirty_change_done_locked();
    return ok();
}

Result<void> Qcow2Node::snapshot_goto(const std::string &id) {
    const auto load_failed = [](int code) { return errno_error(code, "Failed to load snapshot"); };
    Snapshot sn;
    {
        std::lock_guard g(mu_);
        // bdrv_snapshot_goto refuses any node with dirty bitmaps before it
        // looks for the snapshot; for qemu-img those are the persistent
        // ones, enabled, disabled or inconsistent alike.
        if (!bitmaps_.empty()) return make_error(EBUSY, "Device has active dirty bitmaps");
        if (header_.has_data_file()) return load_failed(ENOTSUP);
        int idx = find_snapshot_by_id_or_name(snapshots_, id);
        if (idx < 0) return load_failed(ENOENT);
        sn = snapshots_[size_t(idx)];
        auto v = validate_snapshot_l1_reported(sn, cluster_size_);
        if (!v) return Err(v.error().prepended("Failed to load snapshot: "));
        QIMG_TRY(prepare_write_locked());
        QIMG_TRY(mark_dirty_locked());
    }
    if (sn.disk_size != length()) {
        auto r = truncate(sn.disk_size, Prealloc::Off, true);
        if (!r) return Err(r.error().prepended("Failed to load snapshot: "));
    }
    std::lock_guard g(mu_);
    QIMG_TRY(flush_metadata_locked());
    QIMG_TRY(grow_l1_locked(sn.l1_size));
    QIMG_ASSIGN(std::vector<uint64_t> sn_l1, read_l1_locked(sn.l1_table_offset, sn.l1_size, 0));
    // The snapshot's clusters are about to be shared with the active layer:
    // no flag on them (its L1 copy kept those of its creation) once its
    // references rise.
    QIMG_TRY(clear_copied_locked(sn_l1, false));
    QIMG_TRY(update_snapshot_refcount_locked(sn_l1, +1));
    // The active table now names the snapshot's clusters, without flags.
    std::vector<uint64_t> old = l1_table_;
    l1_table_ = sn_l1;
    l1_table_.resize(std::max(old.size(), sn_l1.size()), 0);
    QIMG_TRY(write_active_l1_locked());
    QIMG_TRY(update_snapshot_refcount_locked(old, -1));
    QIMG_TRY(sync_copied_locked());
    forget_freed_state_locked();
    dirty_change_done_locked();
    return ok();
}

Result<void> Qcow2Node::snapshot_delete(const std::string &id, const std::string &name) {
    std::lock_guard g(mu_);
    if (header_.has_data_file()) return make_error(ENOTSUP, "Operation not supported");
    int idx = find_snapshot(snapshots_, id.empty() ? nullptr : &id, name.empty() ? nullptr : &name);
    if (idx < 0) return make_error(ENOENT, "Can't find the snapshot");
    Snapshot sn = snapshots_[size_t(idx)];
    QIMG_TRY(validate_snapshot_l1(sn, cluster_size_));
    QIMG_TRY(prepare_write_locked());
    QIMG_TRY(mark_dirty_locked());
    QIMG_TRY(flush_metadata_locked());
    std::vector<Snapshot> list = snapshots_;
    list.erase(list.begin() + idx);
    {
        auto r = write_snapshots_locked(std::move(list));
        if (!r) return Err(errno_error(r.error().code, "Failed to remove snapshot from snapshot list"));
    }
    // Unpublished: from here on a failure only leaks clusters.
    auto r = read_l1_locked(sn.l1_table_offset, sn.l1_size, 0);
    if (r) {
        auto u = update_snapshot_refcount_locked(*r, -1);
        if (!u) r = Err(u.error());
    }
    if (!r) return Err(errno_error(r.error().code, "Failed to free the cluster and L1 table"));
    if (sn.l1_size) {
        QIMG_TRY(refcounts_->update(sn.l1_table_offset, uint64_t(sn.l1_size) * 8, -1));
        std::vector<uint64_t> hosts;
        for (uint64_t o = sn.l1_table_offset; o < sn.l1_table_offset + uint64_t(sn.l1_size) * 8; o += cluster_size_)
            hosts.push_back(o);
        QIMG_TRY(discard_freed_locked(hosts));
    }
    {
        auto u = sync_copied_locked();
        if (!u) return Err(errno_error(u.error().code, "Failed to update snapshot status in disk"));
    }
    QIMG_TRY(flush_metadata_locked());
    dirty_change_done_locked();
    forget_freed_state_locked();
    return ok();
}

Result<void> Qcow2Node::snapshot_load_tmp(const std::string *id, const std::string *name) {
    std::lock_guard g(mu_);
    if (!id && !name) return make_error(EINVAL, "snapshot_id and name are both NULL");
    if (!read_only_) return make_error(EINVAL, "Device is not readonly");
    int idx = find_snapshot(snapshots_, id, name);
    if (idx < 0) return make_error(ENOENT, "Can't find snapshot");
    const Snapshot &sn = snapshots_[size_t(idx)];
    QIMG_TRY(validate_snapshot_l1(sn, cluster_size_));
    auto l1 = read_l1_locked(sn.l1_table_offset, sn.l1_size, 0);
    if (!l1) return make_error(l1.error().code, "Failed to read l1 table for snapshot");
    l1_table_ = std::move(*l1);
    header_.l1_size = sn.l1_size;
    header_.l1_table_offset = sn.l1_table_offset;
    return ok();
}

// An L2 table shared with a snapshot (no OFLAG_COPIED in its L1 entry) is
// copied before it changes: the copy is on disk before the L1 entry points
// at it, and the old table loses our reference once that entry is durable.
Result<void> Qcow2Node::cow_l2_locked(uint64_t l1_index) {
    uint64_t old_off = l1_table_[l1_index] & kL1OffsetMask;
    if (old_off & (cluster_size_ - 1))
        return make_error(EIO, "L2 table offset " + hex(old_off) + " unaligned (L1 index: " + hex(l1_index) + ")");
    QIMG_ASSIGN(std::shared_ptr<L2Table> old, l2_cache_->get(old_off));
    auto copy = std::make_shared<L2Table>(*old);
    QIMG_ASSIGN(uint64_t n, refcounts_->alloc_clusters(1));
    QIMG_TRY(refcounts_->write_back());
    QIMG_TRY(file_->flush());
    QIMG_TRY(l2_cache_->write_table(n, *copy));
    QIMG_TRY(file_->flush());
    l1_table_[l1_index] = n | kOflagCopied;
    uint8_t e[8];
    put_be64(e, l1_table_[l1_index]);
    QIMG_TRY(file_->write(header_.l1_table_offset + l1_index * 8, e, 8));
    l2_cache_->put_new(n, copy);
    pending_frees_.emplace_back(old_off, cluster_size_);  // after the next flush makes the L1 entry durable
    return ok();
}

}  // namespace qimg::qcow2
