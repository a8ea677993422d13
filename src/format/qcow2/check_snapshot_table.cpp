// qemu-img check of the qcow2 snapshot table (QEMU's
// qcow2_check_read_snapshot_table and qcow2_check_fix_snapshot_table): read
// by the check itself, since a check-mode open skips it, and cut, truncated
// or rewritten under -r all.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "format/qcow2/checker.h"
#include "util/bytes.h"
#include "util/progname.h"

namespace qimg::qcow2 {

// The snapshot table as the header on disk has it (a check-mode open reads
// neither), with repairs under -r all: a count above QEMU's limit and a
// table past its size limit are cut (the header count is rewritten at once;
// the dropped entries then merely leak), too much extra data is truncated
// and, on v3, entries without disk_size are completed; the last two need the
// whole table rewritten, which fix_snapshot_table() does once the refcounts
// can be trusted.
Result<void> Checker::read_snapshot_table(unsigned fix, CheckResult &res) {
    // nb_snapshots and snapshots_offset are adjacent: one read of both.
    constexpr size_t kPointerStart = hdr::kNbSnapshots.offset;
    constexpr size_t kPointerEnd = hdr::kSnapshotsOffset.offset + decltype(hdr::kSnapshotsOffset)::size;
    uint8_t ptr[kPointerEnd - kPointerStart];
    if (auto r = file_.read(kPointerStart, ptr, sizeof ptr); !r) {
        res.check_errors++;
        std::fprintf(stderr, "ERROR failed to read the snapshot table pointer from the image header: %s\n",
                     std::strerror(r.error().code));
        return Err(r.error());
    }
    ByteReader pointer(ptr);
    uint32_t nb = pointer.get(Be32{hdr::kNbSnapshots.offset - kPointerStart});
    const uint64_t offset = pointer.get(Be64{hdr::kSnapshotsOffset.offset - kPointerStart});
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

Result<void> Checker::fix_snapshot_table(unsigned fix, CheckResult &res) {
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

}  // namespace qimg::qcow2
