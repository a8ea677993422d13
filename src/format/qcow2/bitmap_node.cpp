// The Qcow2Node side of persistent dirty bitmaps (bitmap.h): loading and
// validating them at open, qemu-img bitmap actions, recording guest writes
// in enabled bitmaps, and storing them.
//
// Read-write opens, as QEMU: every consistent bitmap is marked IN_USE in
// the published directory at once (QEMU's rule: an IN_USE bitmap was not
// saved cleanly); guest writes then set bits in memory in the enabled ones,
// and close() stores every one of them again (new data clusters, tables and
// directory, the old ones freed) without IN_USE, so the file comes out as
// QEMU leaves it. A removal republishes the directory at once. The bitmaps
// autoclear bit stays set throughout, so QEMU trusts every bitmap not
// marked IN_USE.
//
// Crash safety: every store writes new data clusters, new tables and a new
// directory to newly allocated clusters, makes them and their refcounts
// durable, then switches the header extension to the new directory, and
// only then frees the old clusters. An interruption leaks clusters at worst;
// the published bitmaps are always either the old or the new ones.
#include <algorithm>
#include <cstring>

#include "format/qcow2/qcow2.h"
#include "util/checked.h"
#include "util/endian.h"

namespace qimg::qcow2 {
namespace {

std::string inconsistent_message(const std::string &name) {
    return "Bitmap '" + name +
           "' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk";
}

}  // namespace

// A bitmap's table, read and validated (QEMU's bitmap_table_load). The
// directory checks bound its size (phys size limit) before this allocates.
Result<std::vector<uint64_t>> Qcow2Node::read_bitmap_table(const BitmapDirEntry &e) {
    std::vector<uint8_t> raw(uint64_t(e.table_size) * 8);
    QIMG_TRY(read_padded(*file_, e.table_offset, raw.data(), raw.size()));
    return parse_bitmap_table(raw, cluster_size_);
}

// Queues a published bitmap's clusters (data and table) for freeing.
void Qcow2Node::drop_bitmap_clusters(const BitmapDirEntry &e, const std::vector<uint64_t> &table,
                                     std::vector<BitmapDrop> &drops) const {
    for (uint64_t t : table)
        if (t & kBmeTableOffsetMask) drops.push_back({t & kBmeTableOffsetMask, cluster_size_, true});
    drops.push_back({e.table_offset, uint64_t(e.table_size) * 8, false});
}

// At open (QEMU's qcow2_load_dirty_bitmaps): the directory and every
// consistent bitmap's table are validated; data is read when first needed.
Result<void> Qcow2Node::load_bitmaps() {
    if (!header_.bitmaps) return ok();
    const BitmapsExtension &ext = *header_.bitmaps;
    if (ext.directory_size == 0) return make_error(EINVAL, "Requested bitmap directory size is zero");
    if (ext.directory_size > kMaxBitmapDirectorySize)
        return make_error(EINVAL, "Requested bitmap directory size is too big");
    std::vector<uint8_t> dir(ext.directory_size);
    if (auto r = read_padded(*file_, ext.directory_offset, dir.data(), dir.size()); !r)
        return errno_error(r.error().code, "Failed to read bitmap directory");
    QIMG_ASSIGN(auto entries, parse_bitmap_directory(dir, ext.nb_bitmaps, cluster_size_, header_.size));
    for (BitmapDirEntry &e : entries) {
        LoadedBitmap b;
        b.entry = std::move(e);
        b.enabled = b.entry.flags & kBmeFlagAuto;
        b.inconsistent = b.entry.flags & kBmeFlagInUse;
        if (!b.inconsistent) {
            auto t = read_bitmap_table(b.entry);
            if (!t)
                return Err(t.error().prepended("Could not read bitmap_table table from image for bitmap '" +
                                               b.entry.name + "': "));
            if (bitmap_table_entries(header_.size, b.entry.granularity_bits, cluster_size_) != b.entry.table_size)
                return make_error(EINVAL, "Could not read bitmap '" + b.entry.name + "' from image: Invalid argument");
            b.table = std::move(*t);
        }
        bitmaps_.push_back(std::move(b));
    }
    return ok();
}

// A read-write open, as QEMU's qcow2_load_dirty_bitmaps: every consistent
// bitmap is published IN_USE at once, whether or not the image changes,
// and close() stores each one again (new data clusters, tables and
// directory; the old ones freed), so that the file comes out as QEMU leaves
// it after any read-write use.
Result<void> Qcow2Node::claim_bitmaps() {
    std::lock_guard g(mu_);
    for (LoadedBitmap &b : bitmaps_)
        if (!b.inconsistent) b.bits_changed = true;
    auto r = start_bitmap_tracking_locked(true);
    if (!r) return errno_error(r.error().code, "Can't update bitmap directory");
    return ok();
}

Result<void> Qcow2Node::load_bitmap_data_locked(LoadedBitmap &b) {
    if (b.data_loaded || b.inconsistent) return ok();
    DirtyBits bits(header_.size, b.entry.granularity_bits);
    std::vector<uint8_t> &bytes = bits.bytes();
    std::vector<uint8_t> buf(cluster_size_);
    for (uint64_t i = 0; i < b.table.size() && i * cluster_size_ < bytes.size(); i++) {
        const uint64_t n = std::min<uint64_t>(cluster_size_, bytes.size() - i * cluster_size_);
        const uint64_t off = b.table[i] & kBmeTableOffsetMask;
        if (off) {
            if (auto r = read_padded(*file_, off, buf.data(), cluster_size_); !r)
                return errno_error(r.error().code, "Could not read bitmap '" + b.entry.name + "' from image");
            std::memcpy(bytes.data() + i * cluster_size_, buf.data(), n);
        } else if (b.table[i] & kBmeTableAllOnes) {
            std::memset(bytes.data() + i * cluster_size_, 0xff, n);
        }
    }
    bits.mask_tail();
    b.bits = std::move(bits);
    b.data_loaded = true;
    return ok();
}

Qcow2Node::LoadedBitmap *Qcow2Node::find_bitmap_locked(const std::string &name) {
    for (LoadedBitmap &b : bitmaps_)
        if (b.entry.name == name) return &b;
    return nullptr;
}

// Publishes IN_USE for the bitmaps that are about to change (enabled ones,
// or with `all` every consistent one) before the first change to the image.
Result<void> Qcow2Node::start_bitmap_tracking_locked(bool all) {
    bool need = false;
    for (LoadedBitmap &b : bitmaps_) {
        if (b.inconsistent || b.in_use || !(all || b.enabled)) continue;
        QIMG_TRY(load_bitmap_data_locked(b));
        b.in_use = true;
        need = true;
    }
    if (!need) return ok();
    if (bitmaps_need_store_) {
        QIMG_TRY(store_bitmaps_locked(true));
    } else {
        QIMG_TRY(publish_in_use_in_place_locked());
    }
    bitmaps_tracking_ = true;
    bitmaps_need_store_ = true;
    return ok();
}

// Sets IN_USE in the published directory itself, one 4-byte flags field per
// bitmap, so that data clusters written next are not laid out around a
// moved directory. Safe without the new-cluster dance: each field is
// aligned and never crosses a sector, so a torn write leaves every bitmap
// either as it was or IN_USE (inconsistent), both valid states, and the
// flush completes before any guest write is allowed.
Result<void> Qcow2Node::publish_in_use_in_place_locked() {
    uint64_t pos = header_.bitmaps->directory_offset;
    for (LoadedBitmap &b : bitmaps_) {
        const uint32_t flags = b.entry.flags | (b.in_use ? kBmeFlagInUse : 0);
        if (flags != b.entry.flags) {
            uint8_t f[bme::kFlags.size];
            ByteWriter(f).put(decltype(bme::kFlags){0}, flags);
            QIMG_TRY(file_->write(pos + bme::kFlags.offset, f, sizeof f));
        }
        pos += bitmap_dir_entry_size(b.entry.name.size());
    }
    QIMG_TRY(file_->flush());
    for (LoadedBitmap &b : bitmaps_)
        if (b.in_use) b.entry.flags |= kBmeFlagInUse;
    return ok();
}

void Qcow2Node::mark_bitmaps_dirty_locked(uint64_t off, uint64_t len) {
    if (!bitmaps_tracking_) return;
    for (LoadedBitmap &b : bitmaps_) {
        if (!b.enabled || b.inconsistent || !b.data_loaded) continue;
        b.bits.set(off, len);
        b.bits_changed = true;
        bitmaps_need_store_ = true;
    }
}

// QEMU's qcow2_truncate_bitmaps_check, then every bitmap follows the new size.
Result<void> Qcow2Node::resize_bitmaps_locked(uint64_t new_size) {
    for (const LoadedBitmap &b : bitmaps_)
        if (b.inconsistent) return make_error(ENOTSUP, inconsistent_message(b.entry.name));
    QIMG_TRY(start_bitmap_tracking_locked(true));
    for (LoadedBitmap &b : bitmaps_) {
        QIMG_TRY(load_bitmap_data_locked(b));
        b.bits.resize(new_size);
        b.bits_changed = true;
    }
    if (!bitmaps_.empty()) bitmaps_need_store_ = true;
    return ok();
}

// Writes the data clusters that hold set bits and a new table (QEMU's
// store_bitmap_data/store_bitmap layout); returns the table offset.
Result<uint64_t> Qcow2Node::write_bitmap_locked(const DirtyBits &bits, std::vector<uint64_t> &table,
                                                std::vector<std::pair<uint64_t, uint64_t>> &allocated) {
    const std::vector<uint8_t> &bytes = bits.bytes();
    table.assign(bitmap_table_entries(bits.image_size(), bits.granularity_bits(), cluster_size_), 0);
    std::vector<uint8_t> buf(cluster_size_);
    for (uint64_t i = 0; i < table.size(); i++) {
        const uint64_t start = i * cluster_size_, n = std::min<uint64_t>(cluster_size_, bytes.size() - start);
        if (std::all_of(bytes.begin() + start, bytes.begin() + start + n, [](uint8_t v) { return v == 0; })) continue;
        QIMG_ASSIGN(uint64_t off, refcounts_->alloc_clusters(1));
        allocated.emplace_back(off, cluster_size_);
        std::memcpy(buf.data(), bytes.data() + start, n);
        std::memset(buf.data() + n, 0, cluster_size_ - n);
        QIMG_TRY(file_->write(off, buf.data(), cluster_size_));
        table[i] = off;
    }
    const uint64_t tbytes = table.size() * 8;
    QIMG_ASSIGN(uint64_t toff, refcounts_->alloc_clusters(div_round_up(tbytes, cluster_size_)));
    allocated.emplace_back(toff, tbytes);
    std::vector<uint8_t> raw(tbytes);
    for (uint64_t i = 0; i < table.size(); i++) put_be64(&raw[i * 8], table[i]);
    QIMG_TRY(file_->write(toff, raw.data(), raw.size()));
    return toff;
}

// Publishes the bitmaps: changed data and tables, then a new directory, then
// the header extension, then frees what the old directory referenced.
// `keep_tracking`: bitmaps marked in_use are published IN_USE (before
// guest writes); otherwise IN_USE is cleared and tracking ends.
Result<void> Qcow2Node::store_bitmaps_locked(bool keep_tracking, bool directory_only) {
    std::vector<std::pair<uint64_t, uint64_t>> allocated;
    std::vector<BitmapDrop> drops = bitmap_drops_;
    auto undo = [&](Error e) -> Result<void> {
        for (auto [off, len] : allocated) (void)refcounts_->update(off, len, -1);
        return Err(std::move(e));
    };
    // On-disk bitmaps first, in directory order; new ones after them, the
    // most recently created first (the order QEMU stores them in).
    std::vector<size_t> order;
    for (size_t i = 0; i < bitmaps_.size(); i++)
        if (!bitmaps_[i].table.empty() || bitmaps_[i].inconsistent) order.push_back(i);
    for (size_t i = bitmaps_.size(); i-- > 0 && !directory_only;)
        if (bitmaps_[i].table.empty() && !bitmaps_[i].inconsistent) order.push_back(i);

    struct Pending {
        BitmapDirEntry entry;
        std::vector<uint64_t> table;
        bool rewritten = false;
    };
    std::vector<Pending> next(bitmaps_.size());
    std::vector<BitmapDirEntry> dir;
    for (size_t i : order) {
        LoadedBitmap &b = bitmaps_[i];
        Pending &p = next[i];
        p.entry = b.entry;
        if (!b.inconsistent && !directory_only) {
            if (b.bits_changed || b.table.empty()) {
                QIMG_TRY(load_bitmap_data_locked(b));
                auto t = write_bitmap_locked(b.bits, p.table, allocated);
                if (!t) return undo(t.error());
                p.entry.table_offset = *t;
                p.entry.table_size = uint32_t(p.table.size());
                p.rewritten = true;
                if (!b.table.empty()) drop_bitmap_clusters(b.entry, b.table, drops);
            }
            p.entry.flags = (b.enabled ? kBmeFlagAuto : 0) | (keep_tracking && b.in_use ? kBmeFlagInUse : 0);
        }
        dir.push_back(p.entry);
    }
    std::optional<BitmapsExtension> ext;
    if (!dir.empty()) {
        if (dir.size() > kMaxBitmaps) return undo(make_error(EINVAL, "Too many persistent bitmaps"));
        std::vector<uint8_t> raw = serialize_bitmap_directory(dir);
        if (raw.size() > kMaxBitmapDirectorySize) return undo(make_error(EINVAL, "Bitmap directory is too large"));
        auto off = refcounts_->alloc_clusters(div_round_up(raw.size(), cluster_size_));
        if (!off) return undo(off.error());
        allocated.emplace_back(*off, raw.size());
        if (auto r = file_->write(*off, raw.data(), raw.size()); !r) return undo(r.error());
        ext = BitmapsExtension{uint32_t(dir.size()), raw.size(), *off};
    }
    // New clusters and their refcounts are durable before the header points at them.
    if (auto r = refcounts_->write_back(); !r) return undo(r.error());
    if (auto r = file_->flush(); !r) return undo(r.error());
    const std::optional<BitmapsExtension> old_ext = header_.bitmaps;
    const uint64_t old_autoclear = header_.autoclear;
    header_.bitmaps = ext;
    if (ext) header_.autoclear |= kAutoclearBitmaps;
    else header_.autoclear &= ~kAutoclearBitmaps;
    if (auto r = write_header_locked(); !r) {
        header_.bitmaps = old_ext;
        header_.autoclear = old_autoclear;
        return undo(r.error());
    }
    // Published: the in-memory state follows, then the old clusters go.
    if (old_ext) drops.push_back({old_ext->directory_offset, old_ext->directory_size, false});
    std::vector<LoadedBitmap> kept;
    for (size_t i : order) {
        if (directory_only) break;
        LoadedBitmap &b = bitmaps_[i];
        b.entry = next[i].entry;
        if (next[i].rewritten) {
            b.table = std::move(next[i].table);
            b.bits_changed = false;
        }
        if (!keep_tracking) b.in_use = false;
        kept.push_back(std::move(b));
    }
    if (!directory_only) bitmaps_ = std::move(kept);
    bitmap_drops_.clear();
    if (!keep_tracking && !directory_only) {
        bitmaps_tracking_ = false;
        bitmaps_need_store_ = false;
    }
    for (const BitmapDrop &d : drops) {
        QIMG_TRY(refcounts_->update(d.offset, d.length, -1));
        if (!d.discard) continue;
        QIMG_ASSIGN(uint64_t rc, refcounts_->get(d.offset >> cluster_bits_));
        if (rc == 0) (void)file_->discard(d.offset, cluster_size_);
    }
    return refcounts_->write_back();
}

// --- qemu-img bitmap -------------------------------------------------------

Result<void> Qcow2Node::bitmap_action(const BitmapAction &a) {
    std::lock_guard g(mu_);
    if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");
    using Kind = BitmapAction::Kind;
    if (a.kind == Kind::Add) {
        if (find_bitmap_locked(a.name)) return make_error(EEXIST, "Bitmap already exists: " + a.name);
        auto fail = [&](const std::string &m) {
            return make_error(EINVAL, "Can't make bitmap '" + a.name + "' persistent in '" + a.node_name + "': " + m);
        };
        if (header_.version < 3) return fail("Cannot store dirty bitmaps in qcow2 v2 files");
        const uint64_t gran = a.granularity ? a.granularity : std::clamp<uint64_t>(cluster_size_, 4096, 65536);
        if (auto r = check_bitmap_constraints(a.name, gran, header_.size, cluster_size_); !r) return fail(r.error().message);
        uint64_t dir_size = bitmap_dir_entry_size(a.name.size());
        for (const LoadedBitmap &b : bitmaps_) dir_size += bitmap_dir_entry_size(b.entry.name.size());
        if (bitmaps_.size() + 1 > kMaxBitmaps) return fail("Maximum number of persistent bitmaps is already reached");
        if (dir_size > kMaxBitmapDirectorySize) return fail("Not enough space in the bitmap directory");
        LoadedBitmap b;
        b.entry.name = a.name;
        b.entry.granularity_bits = uint8_t(__builtin_ctzll(gran));
        b.entry.flags = kBmeFlagAuto;
        b.enabled = true;
        b.data_loaded = true;
        b.bits_changed = true;
        b.bits = DirtyBits(header_.size, b.entry.granularity_bits);
        bitmaps_.push_back(std::move(b));
        bitmaps_need_store_ = true;
        return ok();
    }
    LoadedBitmap *b = find_bitmap_locked(a.name);
    if (!b) return make_error(ENOENT, "Dirty bitmap '" + a.name + "' not found");
    switch (a.kind) {
    case Kind::Remove: {
        const bool published = !b->table.empty() || b->inconsistent;
        if (!b->table.empty()) {
            drop_bitmap_clusters(b->entry, b->table, bitmap_drops_);
        } else if (b->inconsistent) {
            // As QEMU's free_bitmap_clusters: an IN_USE bitmap's clusters
            // are freed only if its table is valid (else they leak).
            if (auto t = read_bitmap_table(b->entry)) drop_bitmap_clusters(b->entry, *t, bitmap_drops_);
        }
        bitmaps_.erase(bitmaps_.begin() + (b - bitmaps_.data()));
        // QEMU's qcow2_co_remove_persistent_dirty_bitmap republishes the
        // directory without it at once; the others are stored at close.
        if (published) return store_bitmaps_locked(true, true);
        break;
    }
    case Kind::Clear:
        if (b->inconsistent) return make_error(EINVAL, inconsistent_message(a.name));
        QIMG_TRY(load_bitmap_data_locked(*b));
        b->bits.clear();
        b->bits_changed = true;
        break;
    case Kind::Enable:
    case Kind::Disable:
        if (b->inconsistent) return make_error(EINVAL, inconsistent_message(a.name));
        b->enabled = a.kind == Kind::Enable;
        break;
    case Kind::Merge:
        QIMG_TRY(merge_bitmap_locked(a));
        break;
    case Kind::Add:
        break;
    }
    bitmaps_need_store_ = true;
    return ok();
}

// QEMU's block_dirty_bitmap_merge with one source, checked in its order:
// both names, the destination's state, the source's state, the sizes.
Result<void> Qcow2Node::merge_bitmap_locked(const BitmapAction &a) {
    LoadedBitmap *dst = find_bitmap_locked(a.name);
    BitmapBits src;
    if (a.src == nullptr || a.src == this) {
        LoadedBitmap *s = find_bitmap_locked(a.src_name);
        if (!s) return make_error(ENOENT, "Dirty bitmap '" + a.src_name + "' not found");
        src.in_use = s->inconsistent;
        if (!s->inconsistent) {
            QIMG_TRY(load_bitmap_data_locked(*s));
            src.image_size = s->bits.image_size();
            src.granularity = uint64_t{1} << s->bits.granularity_bits();
            src.bits = s->bits.bytes();
        }
    } else {
        QIMG_ASSIGN(src, a.src->bitmap_read(a.src_name));
    }
    if (dst->inconsistent) return make_error(EINVAL, inconsistent_message(a.name));
    if (src.in_use) return make_error(EINVAL, inconsistent_message(a.src_name));
    QIMG_TRY(load_bitmap_data_locked(*dst));
    if (src.image_size != dst->bits.image_size())
        return make_error(EINVAL, "Bitmaps are of different sizes (destination size is " +
                                      std::to_string(dst->bits.image_size()) + ", source size is " +
                                      std::to_string(src.image_size) + ") and can't be merged");
    DirtyBits s(src.image_size, uint32_t(__builtin_ctzll(src.granularity)));
    if (src.bits.size() != s.bytes().size()) return make_error(EINVAL, "Bitmap '" + a.src_name + "' is corrupted");
    s.bytes() = std::move(src.bits);
    dst->bits.merge(s);
    dst->bits_changed = true;
    return ok();
}

Result<std::vector<PersistentBitmapInfo>> Qcow2Node::bitmap_list() {
    std::lock_guard g(mu_);
    std::vector<PersistentBitmapInfo> out;
    for (const LoadedBitmap &b : bitmaps_)
        out.push_back({b.entry.name, uint64_t{1} << b.entry.granularity_bits, b.enabled, b.inconsistent});
    return out;
}

Result<BitmapBits> Qcow2Node::bitmap_read(const std::string &name) {
    std::lock_guard g(mu_);
    LoadedBitmap *b = find_bitmap_locked(name);
    if (!b) return make_error(ENOENT, "Dirty bitmap '" + name + "' not found");
    BitmapBits out;
    out.granularity = uint64_t{1} << b->entry.granularity_bits;
    out.image_size = header_.size;
    out.in_use = b->inconsistent;
    if (b->inconsistent) return out;
    QIMG_TRY(load_bitmap_data_locked(*b));
    out.image_size = b->bits.image_size();
    out.bits = b->bits.bytes();
    return out;
}

}  // namespace qimg::qcow2
