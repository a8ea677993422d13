// Backing-chain maintenance on a qcow2 node: changing the recorded backing
// file (qemu-img rebase) and emptying the image after a commit (QEMU's
// qcow2_make_empty). Both keep the image readable and its guest data intact
// if interrupted at any point; see the comments on each step.
#include <algorithm>
#include <cstring>

#include "block/open.h"
#include "format/qcow2/qcow2.h"
#include "util/endian.h"

namespace qimg::qcow2 {

Result<void> Qcow2Node::change_backing_file(const std::string &name, const std::string &fmt) {
    // A raw external data file must stand alone (QEMU: -EINVAL).
    if (!name.empty() && header_.data_file_raw()) return make_error(EINVAL, "Invalid argument");
    if (name.size() > kMaxBackingNameLength) return make_error(EINVAL, "Invalid argument");
    if (read_only_) return make_error(EROFS, "Read-only file system");
    return set_backing_file(name, fmt);
}

Result<void> Qcow2Node::make_empty() {
    std::lock_guard g(mu_);
    if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");
    QIMG_TRY(prepare_write_locked());
    QIMG_TRY(flush_metadata_locked());
    if (has_initial_layout_locked()) return reset_to_initial_layout_locked();
    return unmap_all_locked();
}

// QEMU empties v3 images without snapshots, bitmaps or a data file by
// resetting them to the layout of a fresh image (header, refcount table,
// one refcount block, L1 table; file truncated after them). It does that
// by overwriting those clusters under the dirty bit, which leaves broken
// refcounts if interrupted. qimg reaches the same layout in place only when
// the image already has it (every image qemu-img create made whose L1 and
// refcount table never grew), where each step keeps the image consistent.
bool Qcow2Node::has_initial_layout_locked() const {
    const uint64_t l1_clusters = (uint64_t(l1_table_.size()) * 8 + cluster_size_ - 1) / cluster_size_;
    const uint64_t refblock_entries = cluster_size_ * 8 / header_.refcount_bits();
    return header_.version >= 3 && snapshots_.empty() && !header_.bitmaps && !header_.has_data_file() && header_.crypt_method == 0 &&
           3 + l1_clusters <= refblock_entries && header_.refcount_table_offset == cluster_size_ &&
           header_.refcount_table_clusters == 1 && !refcounts_->table().empty() && refcounts_->table()[0] == 2 * cluster_size_ &&
           header_.l1_table_offset == 3 * cluster_size_;
}

Result<void> Qcow2Node::reset_to_initial_layout_locked() {
    const uint64_t l1_clusters = (uint64_t(l1_table_.size()) * 8 + cluster_size_ - 1) / cluster_size_;
    const uint64_t used = 3 + l1_clusters;
    // 1. An all-zero L1 table: reads fall through to the backing file. From
    //    here on every L2 table and data cluster is merely leaked.
    for (uint64_t e : l1_table_)
        if (e & kL1OffsetMask) l2_cache_->drop(e & kL1OffsetMask);
    {
        std::vector<uint8_t> zero(l1_clusters * cluster_size_, 0);
        file_->debug_event(BlkdebugEvent::L1Update);
        QIMG_TRY(file_->write(header_.l1_table_offset, zero.data(), zero.size()));
        QIMG_TRY(file_->flush());
        std::fill(l1_table_.begin(), l1_table_.end(), 0);
    }
    // 2. The refcount table keeps only the first block: the others (and
    //    the clusters they count, all unreferenced now) are leaked.
    const std::vector<uint64_t> &table = refcounts_->table();
    if (std::any_of(table.begin() + 1, table.end(), [](uint64_t e) { return e != 0; })) {
        std::vector<uint8_t> rt(cluster_size_, 0);
        put_be64(rt.data(), 2 * cluster_size_);
        QIMG_TRY(file_->write(cluster_size_, rt.data(), rt.size()));
        QIMG_TRY(file_->flush());
    }
    // 3. The first block counts only the metadata clusters, in one write.
    {
        std::vector<uint8_t> block(cluster_size_, 0);
        const unsigned bits = header_.refcount_bits();
        for (uint64_t i = 0; i < used; i++) {
            uint64_t bit = i * bits;
            switch (bits) {
            case 1: case 2: case 4: block[bit / 8] |= uint8_t(1u << (bit % 8)); break;
            case 8: block[i] = 1; break;
            case 16: put_be16(&block[i * 2], 1); break;
            case 32: put_be32(&block[i * 4], 1); break;
            default: put_be64(&block[i * 8], 1); break;
            }
        }
        QIMG_TRY(file_->write(2 * cluster_size_, block.data(), block.size()));
        QIMG_TRY(file_->flush());
    }
    // 4. Nothing past the metadata is referenced or counted any more.
    QIMG_TRY(file_->truncate(used * cluster_size_, Prealloc::Off, false));
    free_byte_offset_ = 0;
    metadata_prealloc_.reset();
    {
        std::lock_guard z(decompressed_mu_);
        decompressed_cluster_.clear();
    }
    return reset_refcounts();
}

// Every other image: all L2 entries become unallocated (QEMU's fallback, a
// full discard of every cluster), through the ordinary L2 update path:
// tables first, refcount decrements after they are on disk.
Result<void> Qcow2Node::unmap_all_locked() {
    const uint64_t span = uint64_t{1} << (cluster_bits_ + l2_index_bits_);
    // The table visited may be replaced by a copy on the first change (one
    // shared with a snapshot, l2_slot_for_write): the entries not reached yet
    // are the same in both, so the walk reads on in the one it holds.
    QIMG_TRY(for_each_l2_table(l1_table_, active_l2_loader(), [&](uint64_t i, uint64_t, L2Table &t) -> Result<void> {
        return l2_layout_.for_each_entry(t, [&](const L2Entry &e) -> Result<void> {
            if (e.word == 0 && e.bitmap == 0) return ok();
            QIMG_ASSIGN(Slot s, l2_slot_for_write(i * span + (e.index << cluster_bits_)));
            (*s.table)[s.index * l2_entry_words_] = 0;
            if (l2_entry_words_ == 2) (*s.table)[s.index * 2 + 1] = 0;
            l2_cache_->mark_dirty(s.l2_offset);
            if (e.type == ClusterType::Compressed || entry_host(e.word)) QIMG_TRY(free_later(e.word));
            return ok();
        });
    }));
    QIMG_TRY(flush_metadata_locked());
    return file_->flush();
}

}  // namespace qimg::qcow2
