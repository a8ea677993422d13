// qcow2 preallocation for growing an image (create and resize), as QEMU's
// qcow2_co_truncate lays it out: metadata mode (and falloc/full with an
// external data file) through preallocate_co's allocation steps, and
// falloc/full in one data area after new refcount structures.
#include <algorithm>
#include <bit>
#include <climits>

#include "format/qcow2/qcow2.h"

namespace qimg::qcow2 {

// preallocation=falloc/full without a data file, laid out as QEMU does:
// new refcount structures right after the last used cluster, covering the
// data and its L2 tables; then one contiguous data area, preallocated in
// the file; then the L2 entries (L2 tables go wherever allocation finds
// room: the old refcount table's place, then after the data). The data area
// is new file space and reads as zeroes, so over a longer backing file
// (hide_backing) the new clusters only need their subclusters marked
// allocated (extended L2), as QEMU's subclusters_need_allocation.
Result<void> Qcow2Node::preallocate_area_locked(uint64_t from, uint64_t to, Prealloc p, bool hide_backing) {
    const uint64_t first_c = from >> cluster_bits_;
    const uint64_t nb_data = ((to + cluster_size_ - 1) >> cluster_bits_) - first_c;
    // Even with no data cluster (create with size 0) QEMU sets up the
    // refcount area for one L2 table and extends the file to it.
    const uint64_t nb_l2 = (nb_data + l2_entries_ - 1) / l2_entries_ + 1;
    QIMG_TRY(flush_metadata_locked());
    QIMG_ASSIGN(uint64_t used, refcounts_->used_end((file_->length() + cluster_size_ - 1) >> cluster_bits_));
    QIMG_ASSIGN(uint64_t data_c, refcounts_->refcount_area(used, nb_data + nb_l2, true));
    QIMG_ASSIGN(uint64_t got, refcounts_->alloc_clusters_at(data_c, nb_data));
    if (got != nb_data) return make_error(EIO, "Preallocated clusters are in use");
    QIMG_TRY(refcounts_->write_back());
    auto tr = file_->truncate((data_c + nb_data) << cluster_bits_, p, false);
    if (!tr) {
        (void)refcounts_->update(data_c << cluster_bits_, nb_data << cluster_bits_, -1);
        return make_error(tr.error().code, "Failed to resize underlying file: " + tr.error().message);
    }
    QIMG_TRY(file_->flush());
    for (uint64_t k = 0; k < nb_data; k++) {
        const uint64_t c = (first_c + k) << cluster_bits_, host = (data_c + k) << cluster_bits_;
        QIMG_ASSIGN(Slot s, l2_slot_for_write(c));
        uint64_t entry = (*s.table)[s.index * l2_entry_words_];
        // The partial cluster at the old end keeps what the guest saw there:
        // its own data, or the backing file's where it had none (QEMU's
        // cow_start), so it is copied into the preallocated cluster.
        if (entry != 0 || (c < from && backing_)) {
            std::vector<uint8_t> buf(cluster_size_, 0);
            const uint64_t vis = std::min<uint64_t>(cluster_size_, from - c);
            mu_.unlock();
            auto r = read_range_unlocked(c, buf.data(), vis);
            mu_.lock();
            QIMG_TRY(r);
            QIMG_TRY(file_->write(host, buf.data(), cluster_size_));
            QIMG_ASSIGN(s, l2_slot_for_write(c));
            entry = (*s.table)[s.index * l2_entry_words_];
            if (l2_entry_words_ == 2) (*s.table)[s.index * 2 + 1] = 0xffffffffull;
        } else if (l2_entry_words_ == 2 && hide_backing) {
            (*s.table)[s.index * 2 + 1] = 0xffffffffull;
        }
        (*s.table)[s.index * l2_entry_words_] = host | kOflagCopied;
        l2_cache_->mark_dirty(s.l2_offset);
        if (entry != 0) QIMG_TRY(free_later(entry));
    }
    return flush_metadata_locked();
}

// QEMU's cluster_needs_new_alloc: writing needs a fresh cluster unless the
// entry has a host cluster that only this L2 entry references.
bool Qcow2Node::needs_new_alloc(uint64_t entry) const {
    if (entry & kOflagCompressed) return true;
    if (l2_entry_words_ == 1 && (entry & kOflagZero) && !entry_host(entry)) return true;
    const bool copied = entry & kOflagCopied;
    if (!entry_host(entry) && !(header_.has_data_file() && copied)) return true;
    return !copied;
}

// QEMU's calculate_l2_meta: the copy-on-write regions around `bytes` at
// in-cluster offset `in` of the run `r` (first entry at `index` of `t`).
// Returns false when nothing needs linking (kept clusters, all written).
Result<bool> Qcow2Node::prealloc_cow_locked(PreallocRun &r, const L2Table &t, uint64_t index, uint64_t in,
                                            uint64_t bytes) const {
    const bool ext = l2_entry_words_ == 2, df = header_.has_data_file();
    const unsigned sc_bits = unsigned(std::countr_zero(subcluster_size_));
    const uint64_t cow_end_from = in + bytes;
    const uint64_t nb = (cow_end_from + cluster_size_ - 1) >> cluster_bits_;
    auto entry = [&](uint64_t i) { return t[(index + i) * l2_entry_words_]; };
    auto bitmap = [&](uint64_t i) { return ext ? t[(index + i) * l2_entry_words_ + 1] : uint64_t{0}; };
    bool skip = r.keep_old;
    for (uint64_t i = 0; i < nb; i++) {
        SubclusterType type;
        if (skip) {
            const uint64_t from = std::max(in, i << cluster_bits_), to = std::min(cow_end_from, (i + 1) << cluster_bits_);
            const unsigned first_sc = unsigned((from - (i << cluster_bits_)) >> sc_bits);
            const unsigned last_sc = unsigned((to - 1 - (i << cluster_bits_)) >> sc_bits);
            type = classify(entry(i), bitmap(i), first_sc, ext, df);
            unsigned cnt = 1;
            while (first_sc + cnt < subclusters_per_cluster_ &&
                   classify(entry(i), bitmap(i), first_sc + cnt, ext, df) == type)
                cnt++;
            if (type != SubclusterType::Normal || first_sc + cnt <= last_sc) skip = false;
        } else {
            type = classify(entry(i), bitmap(i), 0, ext, df);
        }
        if (type == SubclusterType::Invalid) return make_error(EIO, "Invalid cluster entry found");
    }
    if (skip) return false;

    const uint32_t alloc_bits = uint32_t(bitmap(0));
    unsigned sc = unsigned(in >> sc_bits);
    SubclusterType type = classify(entry(0), bitmap(0), sc, ext, df);
    r.cow_start_to = in;
    switch (type) {
    case SubclusterType::Normal:
        r.cow_start_from = r.keep_old ? in : ext ? uint64_t(std::min<unsigned>(sc, std::countr_zero(alloc_bits))) << sc_bits : 0;
        break;
    case SubclusterType::ZeroAlloc:
    case SubclusterType::UnallocatedAlloc:
        r.cow_start_from = r.keep_old || !ext ? uint64_t(sc) << sc_bits
                                              : uint64_t(std::min<unsigned>(sc, std::countr_zero(alloc_bits))) << sc_bits;
        break;
    case SubclusterType::Compressed: r.cow_start_from = 0; break;
    default: r.cow_start_from = uint64_t(sc) << sc_bits; break;
    }

    const uint64_t last = nb - 1;
    const uint32_t last_alloc_bits = uint32_t(bitmap(last));
    sc = unsigned(((in + bytes - 1) & (cluster_size_ - 1)) >> sc_bits);
    type = classify(entry(last), bitmap(last), sc, ext, df);
    const uint64_t to_cluster = (cow_end_from + cluster_size_ - 1) & ~(cluster_size_ - 1);
    const uint64_t to_sc = (cow_end_from + subcluster_size_ - 1) & ~(subcluster_size_ - 1);
    r.cow_end_from = cow_end_from;
    switch (type) {
    case SubclusterType::Normal:
    case SubclusterType::ZeroAlloc:
    case SubclusterType::UnallocatedAlloc:
        if (r.keep_old) {
            r.cow_end_to = type == SubclusterType::Normal ? cow_end_from : to_sc;
        } else {
            r.cow_end_to = to_cluster;
            if (ext)
                r.cow_end_to -= uint64_t(std::min<unsigned>(subclusters_per_cluster_ - sc - 1, std::countl_zero(last_alloc_bits)))
                                << sc_bits;
        }
        break;
    case SubclusterType::Compressed: r.cow_end_to = to_cluster; break;
    default: r.cow_end_to = to_sc; break;
    }
    return true;
}

// QEMU's qcow2_alloc_cluster_link_l2 for a preallocated run: the
// copy-on-write regions get the guest's current data (backing file or
// zeroes, which also sets the file length), the L2 entries point at the run
// (extended-L2 bitmaps stay: the subclusters still read as before), and
// replaced clusters are released.
Result<void> Qcow2Node::prealloc_link_locked(const PreallocRun &r) {
    auto cow = [&](uint64_t a, uint64_t b) -> Result<void> {
        if (a >= b) return ok();
        std::vector<uint8_t> buf(b - a);
        mu_.unlock();
        auto rr = read_range_unlocked(r.guest + a, buf.data(), buf.size());
        mu_.lock();
        QIMG_TRY(rr);
        return write_data(r.host + a, r.guest + a, buf.data(), buf.size());
    };
    QIMG_TRY(cow(r.cow_start_from, r.cow_start_to));
    QIMG_TRY(cow(r.cow_end_from, r.cow_end_to));
    // The file reaches the run before any L2 entry points at it (a table may
    // be written by a cache eviction): interrupted, the image must not map
    // clusters past its end, which qemu-img check counts as corruption. QEMU
    // extends the file only after the last step, to where that step ends;
    // growing it to where each run ends gives the same final length (found
    // by tests/crash).
    if (!header_.has_data_file() && r.host_end > data_file_->length())
        QIMG_TRY(data_file_->truncate(r.host_end, Prealloc::Off, false));
    for (uint64_t i = 0; i < r.clusters; i++) {
        QIMG_ASSIGN(Slot s, l2_slot_for_write(r.guest + i * cluster_size_));
        const uint64_t old = (*s.table)[s.index * l2_entry_words_];
        (*s.table)[s.index * l2_entry_words_] = (r.host + i * cluster_size_) | kOflagCopied;
        l2_cache_->mark_dirty(s.l2_offset);
        if (!r.keep_old && old) QIMG_TRY(free_later(old));
    }
    return ok();
}

// One step of QEMU's preallocate_co (qcow2_alloc_host_offset): from
// `offset`, kept clusters and new allocations for as long as they continue
// each other in the file; the L2 table of the next step is allocated on
// the way. Advances `offset`; returns the host offset where the step ends.
Result<uint64_t> Qcow2Node::prealloc_step_locked(uint64_t &offset, uint64_t to) {
    // QEMU's request limits (INT_MAX per step, BDRV_REQUEST_MAX_BYTES per allocation).
    to = std::min(to, offset + (uint64_t(INT_MAX) & ~(cluster_size_ - 1)));
    const uint64_t max_clusters = (uint64_t(INT_MAX) & ~uint64_t{511}) >> cluster_bits_;
    std::vector<PreallocRun> runs;
    uint64_t start = offset, next_host = 0;
    bool have_host = false;
    while (start < to) {
        const uint64_t in = start & (cluster_size_ - 1);
        QIMG_ASSIGN(Slot s, l2_slot_for_write(start));
        const L2Table &t = *s.table;
        const uint64_t nmax = std::min({(in + (to - start) + cluster_size_ - 1) >> cluster_bits_, l2_entries_ - s.index, max_clusters});
        auto entry = [&](uint64_t i) { return t[(s.index + i) * l2_entry_words_]; };
        PreallocRun r;
        r.guest = start - in;
        uint64_t n = 1;
        if (!needs_new_alloc(entry(0))) {
            r.host = entry_host(entry(0));
            if (have_host && r.host != next_host) break;
            while (n < nmax && !needs_new_alloc(entry(n)) && entry_host(entry(n)) == r.host + n * cluster_size_) n++;
            r.keep_old = true;
        } else {
            while (n < nmax && needs_new_alloc(entry(n))) n++;
            if (header_.has_data_file()) {
                r.host = r.guest;
            } else if (!have_host) {
                QIMG_ASSIGN(r.host, refcounts_->alloc_clusters(n));
            } else {
                QIMG_ASSIGN(n, refcounts_->alloc_clusters_at(next_host >> cluster_bits_, n));
                if (n == 0) break;
                r.host = next_host;
            }
        }
        r.clusters = n;
        const uint64_t bytes = std::min(to - start, n * cluster_size_ - in);
        r.host_end = r.host + in + bytes;
        QIMG_ASSIGN(bool link, prealloc_cow_locked(r, t, s.index, in, bytes));
        if (link) runs.push_back(r);
        have_host = true;
        next_host = r.host + in + bytes;
        start += bytes;
    }
    // Linked as QEMU walks its list of allocations: the newest first.
    for (auto it = runs.rbegin(); it != runs.rend(); ++it) QIMG_TRY(prealloc_link_locked(*it));
    offset = start;
    return next_host;
}

// Allocates data clusters for [from, to) (preallocation=metadata, or
// falloc/full with a data file), as QEMU's preallocate_co: the file then
// reaches the end of the last step.
Result<bool> Qcow2Node::preallocate_locked(uint64_t from, uint64_t to, Prealloc p, bool hide_backing) {
    if (!header_.has_data_file() && (p == Prealloc::Falloc || p == Prealloc::Full)) {
        QIMG_TRY(preallocate_area_locked(from, to, p, hide_backing));
        return true;
    }
    uint64_t host_end = 0;
    for (uint64_t off = from; off < to;) {
        QIMG_ASSIGN(host_end, prealloc_step_locked(off, to));
    }
    QIMG_TRY(flush_metadata_locked());
    BlockNode &df = *data_file_;
    if (host_end > df.length()) {
        Prealloc fp = p == Prealloc::Metadata ? Prealloc::Off : p;
        QIMG_TRY(df.truncate(host_end, fp, false));
    }
    return false;
}

}  // namespace qimg::qcow2
