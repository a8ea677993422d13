// qcow2 resize (QEMU's qcow2_co_truncate): growing the L1 table, the
// preallocation modes, zeroing a grown area that a longer backing file
// would otherwise show through, and shrinking (cropped clusters dropped, L2
// tables past the end freed, empty refcount blocks dropped, file tail cut).
//
// Crash safety: every step drops references only after what replaces them
// is on disk (L2 entries before the clusters they pointed at are freed, L1
// entries before their L2 tables are freed, the refcount table before its
// blocks are freed); the new size is published last, as in QEMU.
#include <algorithm>

#include "format/qcow2/qcow2.h"
#include "util/endian.h"

namespace qimg::qcow2 {

Result<void> Qcow2Node::truncate(uint64_t new_size, Prealloc prealloc, bool exact) {
    std::lock_guard g(mu_);
    return truncate_locked(new_size, prealloc, exact);
}

Result<void> Qcow2Node::truncate_locked(uint64_t new_size, Prealloc prealloc, bool exact) {
    if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");
    if (new_size % 512) return make_error(EINVAL, "The new size must be a multiple of 512");
    // v2 did not require the snapshot size, so a resize could not be undone.
    if (!snapshots_.empty() && header_.version < 3) return make_error(ENOTSUP, "Can't resize a v2 image which has snapshots");
    QIMG_TRY(prepare_write_locked());
    if (new_size != header_.size) QIMG_TRY(resize_bitmaps_locked(new_size));
    const uint64_t old = header_.size;
    const uint32_t shift = cluster_bits_ + l2_index_bits_;
    const uint64_t new_l1 = (new_size + (uint64_t{1} << shift) - 1) >> shift;
    if (new_size < old) {
        if (prealloc != Prealloc::Off)
            return make_error(EINVAL, "Preallocation can't be used for shrinking an image");
        // The smaller size is published before the clusters past it are
        // dropped (QEMU drops them first): interrupted, the image then has
        // its new size and leaked clusters, never its old size with the
        // tail's data gone (found by tests/crash).
        auto pw = write_header_field(*file_, hdr::kSize, new_size);
        if (pw) pw = file_->flush();
        if (!pw) return Err(pw.error().prepended("Failed to update the image size: "));
        // The header in memory follows: a later header write (the bitmaps
        // stored at close after a failed step) must not restore the old
        // size over the dropped tail (found by tests/crash).
        header_.size = new_size;
        QIMG_TRY(shrink_locked(old, new_size));
    } else {
        if (new_l1 > kMaxL1Bytes / 8) return make_error(EFBIG, "Failed to grow the L1 table: File too large");
        QIMG_TRY(grow_l1_locked(new_l1));
        // A raw data file keeps its L2 tables fully allocated (create
        // enforces preallocation=metadata), so the grown part gets them too.
        if (header_.data_file_raw() && prealloc == Prealloc::Off) prealloc = Prealloc::Metadata;
    }
    // A longer backing file must not show through the grown part.
    bool hide_backing = new_size > old && backing_ && backing_->length() > old;
    if (prealloc == Prealloc::Off) {
        if (header_.has_data_file()) QIMG_TRY(data_file_->truncate(new_size, Prealloc::Off, exact));
    } else {
        QIMG_ASSIGN(bool zeroed, preallocate_locked(old, new_size, prealloc, hide_backing));
        if (zeroed) hide_backing = false;
    }
    if (hide_backing) QIMG_TRY(zero_grown_area_locked(old, new_size));
    QIMG_TRY(flush_metadata_locked());
    auto w = write_header_field(*file_, hdr::kSize, new_size);
    if (w) w = file_->flush();
    if (!w) return Err(w.error().prepended("Failed to update the image size: "));
    header_.size = new_size;
    return ok();
}

// qcow2_subcluster_zeroize over [old_size, new_size) as bdrv_co_truncate asks
// with BDRV_REQ_ZERO_WRITE: whole (sub)clusters get the zero flag, the
// unaligned head is written as zeroes.
Result<void> Qcow2Node::zero_grown_area_locked(uint64_t old_size, uint64_t new_size) {
    const auto failed = [](int code) { return errno_error(code, "Failed to zero out new clusters"); };
    const uint64_t zero_start = (old_size + subcluster_size_ - 1) / subcluster_size_ * subcluster_size_;
    if (header_.data_file_raw()) QIMG_TRY(data_file_->write_zeroes(old_size, new_size - old_size, 0));
    if (header_.version < 3) return failed(ENOTSUP);  // v2 has no zero flag (and here a backing file)
    const uint64_t saved = header_.size;
    header_.size = new_size;  // the area is written before the size is published
    auto body = [&]() -> Result<void> {
        if (zero_start < new_size) {
            uint64_t pos = zero_start;
            // Subclusters up to the next cluster boundary, then whole clusters.
            uint64_t head_end = std::min(new_size, (pos + cluster_size_ - 1) & ~(cluster_size_ - 1));
            if (pos < head_end) {
                uint64_t len = std::min(head_end, (new_size + subcluster_size_ - 1) / subcluster_size_ * subcluster_size_) - pos;
                QIMG_TRY(zero_subclusters_locked(pos, len));
                pos = head_end;
            }
            for (; pos < new_size; pos += cluster_size_) QIMG_TRY(zero_or_discard_cluster_locked(pos, true, false));
        }
        if (zero_start > old_size) {
            std::vector<uint8_t> z(std::min(zero_start, new_size) - old_size, 0);
            QIMG_TRY(write_cluster_locked(old_size, z.data(), z.size()));
        }
        return ok();
    };
    auto r = body();
    header_.size = saved;
    if (!r) return failed(r.error().code ? r.error().code : EIO);
    return ok();
}

// QEMU's qcow2_cluster_discard(full) of the cropped clusters, one L2 table
// at a time as its get_cluster_table() walks them: an L1 entry without a
// table of its own (none yet, or one shared with a snapshot) gets one first,
// even where nothing is to be dropped. That is why qemu-img's shrunk files
// keep a zeroed L2 table for the last L1 entry and why the file may grow
// before its tail is cut, and qimg reproduces it (same file length, image
// end offset and disk size). Tables of L1 entries past the new L1 size are
// freed right after (qcow2_shrink_l1_table), so for those the allocation is
// only accounted for: the clusters are taken from the refcounts, as QEMU's
// zeroed tables are, and listed in `scratch_l2`; the file's new length
// (QEMU writes them) comes back in `grown_to`. The L2 entries of tables
// shared with a snapshot that lose this image's reference come back in
// `shared_drops`. This is a walk over a guest range, part of a table at a
// time, whose tables change under it (allocated where missing, copied when
// shared), not the whole-table walk of for_each_l2_table() (l1l2.h).
Result<void> Qcow2Node::drop_cropped_clusters_locked(uint64_t old, uint64_t new_size, std::vector<uint64_t> &scratch_l2,
                                                     std::vector<uint64_t> &shared_drops, uint64_t &grown_to) {
    const uint32_t shift = cluster_bits_ + l2_index_bits_;
    const uint64_t new_l1 = (new_size + (uint64_t{1} << shift) - 1) >> shift;
    const uint64_t start = (new_size + cluster_size_ - 1) & ~(cluster_size_ - 1);
    std::vector<uint64_t> freed_hosts;
    for (uint64_t c = start; c < old;) {
        const uint64_t l1_index = c >> shift;
        if (l1_index >= l1_table_.size()) break;
        const uint64_t end = std::min(old, (l1_index + 1) << shift);
        const uint64_t l1e = l1_table_[l1_index];
        if (l1_index >= new_l1 && !(l1e & kOflagCopied)) {
            QIMG_ASSIGN(uint64_t n, refcounts_->alloc_clusters(1));
            scratch_l2.push_back(n);
            grown_to = std::max(grown_to, n + cluster_size_);
            // A table shared with a snapshot: QEMU's copy drops this L1
            // entry's references to its clusters here; qimg drops them once
            // the L1 entry is gone on disk (shrink_l1), which changes no
            // placement since the snapshot still holds them.
            if (const uint64_t l2_off = l1e & kL1OffsetMask) {
                QIMG_ASSIGN(std::shared_ptr<L2Table> t, l2_cache_->get(l2_off));
                for (; c < end; c += cluster_size_) {
                    const uint64_t e = (*t)[((c >> cluster_bits_) & (l2_entries_ - 1)) * l2_entry_words_];
                    if ((e & kOflagCompressed) || entry_host(e)) shared_drops.push_back(e);
                }
            }
            c = end;
            continue;
        }
        QIMG_ASSIGN(Slot s, l2_slot_for_write(c));
        for (; c < end; c += cluster_size_) {
            const uint64_t idx = (c >> cluster_bits_) & (l2_entries_ - 1);
            const uint64_t e = (*s.table)[idx * l2_entry_words_];
            if (e == 0 && (l2_entry_words_ == 1 || (*s.table)[idx * 2 + 1] == 0)) continue;
            (*s.table)[idx * l2_entry_words_] = 0;
            if (l2_entry_words_ == 2) (*s.table)[idx * 2 + 1] = 0;
            l2_cache_->mark_dirty(s.l2_offset);
            QIMG_TRY(free_later(e));
            if (!header_.has_data_file()) {
                const uint64_t host = l2_layout_.decode(e, 0, idx).host;
                if (host) freed_hosts.push_back(host & ~(cluster_size_ - 1));
            }
        }
        // L2 table written (and synced) before its clusters are freed; freed
        // now, as QEMU frees them, they are where the next table goes.
        QIMG_TRY(flush_metadata_locked());
        QIMG_TRY(discard_freed_locked(freed_hosts));
        freed_hosts.clear();
    }
    return ok();
}

// The cropped clusters, qcow2_shrink_l1_table, qcow2_shrink_reftable and the
// file tail cut.
Result<void> Qcow2Node::shrink_locked(uint64_t old, uint64_t new_size) {
    const uint32_t shift = cluster_bits_ + l2_index_bits_;
    const uint64_t new_l1 = (new_size + (uint64_t{1} << shift) - 1) >> shift;
    // QEMU frees the cropped clusters and L2 tables with QCOW2_DISCARD_ALWAYS:
    // the file layer punches out each host cluster that became free.
    std::vector<uint64_t> freed_hosts;
    const auto discard_freed = [&]() -> Result<void> {
        QIMG_TRY(discard_freed_locked(freed_hosts));
        freed_hosts.clear();
        return ok();
    };
    std::vector<uint64_t> scratch_l2, shared_drops;
    uint64_t grown_to = 0;
    if (auto r = drop_cropped_clusters_locked(old, new_size, scratch_l2, shared_drops, grown_to); !r)
        return Err(r.error().prepended("Failed to discard cropped clusters: "));
    if (new_l1 < l1_table_.size()) {
        auto shrink_l1 = [&]() -> Result<void> {
            const uint64_t n = l1_table_.size() - new_l1;
            std::vector<uint8_t> zero(n * 8, 0);
            QIMG_TRY(file_->write(header_.l1_table_offset + new_l1 * 8, zero.data(), zero.size()));
            QIMG_TRY(file_->flush());
            for (uint64_t i = l1_table_.size(); i-- > new_l1;) {
                const uint64_t l2 = l1_table_[i] & kL1OffsetMask;
                l1_table_[i] = 0;
                if (!l2) continue;
                l2_cache_->drop(l2);
                QIMG_TRY(refcounts_->update(l2, cluster_size_, -1));
                freed_hosts.push_back(l2);
            }
            for (uint64_t l2 : scratch_l2) {
                QIMG_TRY(refcounts_->update(l2, cluster_size_, -1));
                freed_hosts.push_back(l2);
            }
            for (uint64_t e : shared_drops) QIMG_TRY(free_later(e));
            QIMG_TRY(flush_metadata_locked());
            return discard_freed();
        };
        auto r = shrink_l1();
        if (!r) return Err(r.error().prepended("Failed to reduce the number of L2 tables: "));
    }
    {
        auto r = refcounts_->drop_empty_blocks();
        if (r) r = refcounts_->write_back();
        if (r) r = file_->flush();
        if (!r) return Err(r.error().prepended("Failed to discard unused refblocks: "));
    }
    forget_freed_state_locked();
    // The scratch tables QEMU wrote may have grown the file: its length
    // then ends at a cluster that is free again, and the cut below applies.
    const uint64_t file_len = std::max(file_->length(), grown_to);
    auto last = refcounts_->last_used_cluster((file_len + cluster_size_ - 1) >> cluster_bits_);
    if (!last) return Err(last.error().prepended("Failed to find the last cluster: "));
    const uint64_t keep = uint64_t(*last + 1) << cluster_bits_;
    if (keep < file_len) {
        // Not fatal (QEMU only warns): the image is consistent either way.
        (void)file_->truncate(keep, Prealloc::Off, false);
    }
    return ok();
}

}  // namespace qimg::qcow2
