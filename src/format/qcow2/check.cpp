// qcow2 check and repair (see check.h): the entry points, and the order of
// the phases as QEMU 7.2's qcow2_co_check_locked and qcow2_check_refcounts
// (block/qcow2-refcount.c) run them, so that the messages come out in the
// same order: snapshot table (check_snapshot_table.cpp), expected
// refcounts (check_references.cpp), comparison with the on-disk refcounts
// and its repairs (check_repair.cpp), refcount structure rebuild
// (check_rebuild.cpp), OFLAG_COPIED (check_repair.cpp), and the report.
// Messages go to stderr as QEMU prints them there.
//
// Crash safety of repairs: refcount fixes are written and flushed before
// any L2/L1 change that relies on them; a rebuilt refcount structure is
// written into free clusters and flushed before the header switches to it
// (the old structure then merely leaks, and the leak fix frees it).
#include "format/qcow2/check.h"

#include <cstdio>
#include <cstring>

#include "format/qcow2/checker.h"

namespace qimg::qcow2 {

Result<void> Checker::check_refcounts(unsigned fix, CheckResult &res) {
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
    CheckResult pre = res;
    int64_t highest = 0;
    compare(0, rebuild_needed, highest, res);

    if (rebuild_needed && (fix & kFixErrors)) {
        CheckResult old = res;
        int64_t fresh_leaks = 0;
        std::fprintf(stderr, "Rebuilding refcount structure\n");
        QIMG_TRY(rebuild(res));
        res.corruptions = 0;
        res.leaks = 0;
        rebuild_needed = false;
        expected_.assign(expected_.size());
        QIMG_TRY(calculate(0, rebuild_needed, res));
        if (fix & kFixLeaks) {
            CheckResult saved = res;
            res = CheckResult{};
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

Result<void> Checker::run(unsigned fix, CheckResult &res) {
    res = CheckResult{};
    // As qcow2_co_check_locked: the snapshot table's findings are kept apart
    // (their repair waits for trusted refcounts) and added in the end.
    CheckResult snap, rc;
    const auto add_counts = [&res](const CheckResult &src) {
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
    CheckResult res;
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
    CheckResult res;
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
