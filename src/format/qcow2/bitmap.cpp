// qcow2 persistent dirty bitmaps (see bitmap.h): directory and table
// parsing and validation, and DirtyBits. The node side is bitmap_node.cpp.
#include "format/qcow2/bitmap.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "block/table_check.h"
#include "format/qcow2/header.h"
#include "util/checked.h"
#include "util/endian.h"

namespace qimg::qcow2 {
namespace {

// QEMU's check_dir_entry: the fields of one entry against the image.
bool dir_entry_valid(const BitmapDirEntry &e, uint8_t type, uint64_t cluster_size, uint64_t image_size) {
    // QEMU checks neither the table's end nor the file size here.
    const TableCheck table =
        check_table(e.table_offset, e.table_size, 8, {uint64_t{kBmeMaxTableSize} * 8, cluster_size});
    if (e.table_size == 0 || e.table_offset == 0 || table.misaligned || table.too_large ||
        e.granularity_bits > kBmeMaxGranularityBits || e.granularity_bits < kBmeMinGranularityBits ||
        (e.flags & kBmeReservedFlags) || e.name.size() > kBmeMaxNameSize || type != kBitmapTypeDirtyTracking)
        return false;
    const uint64_t phys = uint64_t(e.table_size) * cluster_size;
    if (phys > kBmeMaxPhysSize) return false;
    // A consistent bitmap must cover the whole image; an IN_USE one may be
    // stale after a resize.
    if (!(e.flags & kBmeFlagInUse) && image_size > ((phys * 8) << e.granularity_bits)) return false;
    return true;
}

}  // namespace

uint64_t bitmap_dir_entry_size(uint64_t name_len) { return (kBmeDirEntryFixed + name_len + 7) & ~uint64_t{7}; }

uint64_t bitmap_table_entries(uint64_t image_size, uint32_t gbits, uint64_t cluster_size) {
    uint64_t bits = div_round_up(image_size, uint64_t{1} << gbits);
    return div_round_up(div_round_up(bits, 8), cluster_size);
}

Result<std::vector<BitmapDirEntry>> parse_bitmap_directory(std::span<const uint8_t> dir, uint32_t nb_bitmaps,
                                                           uint64_t cluster_size, uint64_t image_size) {
    if (dir.empty()) return make_error(EINVAL, "Requested bitmap directory size is zero");
    if (dir.size() > kMaxBitmapDirectorySize) return make_error(EINVAL, "Requested bitmap directory size is too big");
    std::vector<BitmapDirEntry> out;
    std::set<std::string> names;
    const Error broken = make_error(EINVAL, "Broken bitmap directory");
    uint64_t off = 0;
    while (off < dir.size()) {
        if (dir.size() - off < kBmeDirEntryFixed) return Err(broken);
        if (out.size() + 1 > nb_bitmaps)
            return make_error(EINVAL, "More bitmaps found than specified in header extension");
        const uint8_t *p = dir.data() + off;
        ByteReader fixed(dir.subspan(off, kBmeDirEntryFixed));
        BitmapDirEntry e;
        e.table_offset = fixed.get(bme::kTableOffset);
        e.table_size = fixed.get(bme::kTableSize);
        e.flags = fixed.get(bme::kFlags);
        const uint8_t type = fixed.get(bme::kType);
        e.granularity_bits = fixed.get(bme::kGranularityBits);
        const uint16_t name_size = fixed.get(bme::kNameSize);
        const uint32_t extra = fixed.get(bme::kExtraDataSize);
        const uint64_t len = bitmap_dir_entry_size(uint64_t(name_size) + extra);
        if (len > dir.size() - off) return Err(broken);
        if (extra != 0) return make_error(EINVAL, "Bitmap extra data is not supported");
        e.name.assign(reinterpret_cast<const char *>(p + kBmeDirEntryFixed), name_size);
        if (!dir_entry_valid(e, type, cluster_size, image_size))
            return make_error(EINVAL, "Bitmap '" + std::string(e.name.c_str()) + "' doesn't satisfy the constraints");
        // QEMU creates one in-memory bitmap per entry and refuses a second
        // of the same name.
        if (!names.insert(e.name).second) return make_error(EINVAL, "Bitmap already exists: " + e.name);
        out.push_back(std::move(e));
        off += len;
    }
    if (out.size() != nb_bitmaps) return make_error(EINVAL, "Less bitmaps found than specified in header extension");
    return out;
}

std::vector<uint8_t> serialize_bitmap_directory(const std::vector<BitmapDirEntry> &list) {
    uint64_t size = 0;
    for (const BitmapDirEntry &e : list) size += bitmap_dir_entry_size(e.name.size());
    std::vector<uint8_t> out(size, 0);
    uint64_t off = 0;
    for (const BitmapDirEntry &e : list) {
        ByteWriter w(out);  // sized above for every entry
        w.put(bme::kTableOffset.at(off), e.table_offset);
        w.put(bme::kTableSize.at(off), e.table_size);
        w.put(bme::kFlags.at(off), e.flags);
        w.put(bme::kType.at(off), kBitmapTypeDirtyTracking);
        w.put(bme::kGranularityBits.at(off), e.granularity_bits);
        w.put(bme::kNameSize.at(off), uint16_t(e.name.size()));
        w.put(bme::kExtraDataSize.at(off), 0);
        w.bytes(off + kBmeDirEntryFixed, e.name.data(), e.name.size());
        off += bitmap_dir_entry_size(e.name.size());
    }
    return out;
}

bool valid_bitmap_table_entry(uint64_t entry, uint64_t cluster_size) {
    if (entry & kBmeTableReservedMask) return false;
    uint64_t off = entry & kBmeTableOffsetMask;
    if (off == 0) return true;
    // With an offset, bit 0 (all ones) is reserved.
    return !(entry & kBmeTableAllOnes) && (off % cluster_size) == 0;
}

Result<std::vector<uint64_t>> parse_bitmap_table(std::span<const uint8_t> raw, uint64_t cluster_size) {
    std::vector<uint64_t> t(raw.size() / 8);
    for (size_t i = 0; i < t.size(); i++) {
        t[i] = be64(raw.data() + i * 8);
        if (!valid_bitmap_table_entry(t[i], cluster_size)) return make_error(EINVAL, "Invalid argument");
    }
    return t;
}

Result<void> check_bitmap_constraints(const std::string &name, uint64_t granularity, uint64_t image_size,
                                      uint64_t cluster_size) {
    const uint32_t gbits = uint32_t(__builtin_ctzll(granularity));
    if (gbits > kBmeMaxGranularityBits) return make_error(EINVAL, "Granularity exceeds maximum (2147483648 bytes)");
    if (gbits < kBmeMinGranularityBits) return make_error(EINVAL, "Granularity is under minimum (512 bytes)");
    const uint64_t bytes = div_round_up(div_round_up(image_size, granularity), 8);
    if (bytes > kBmeMaxPhysSize || bytes > uint64_t(kBmeMaxTableSize) * cluster_size)
        return make_error(EINVAL, "Too much space will be occupied by the bitmap. Use larger granularity");
    if (name.size() > kBmeMaxNameSize) return make_error(EINVAL, "Name length exceeds maximum (1023 characters)");
    return ok();
}

// --- DirtyBits ---------------------------------------------------------------

DirtyBits::DirtyBits(uint64_t image_size, uint32_t gbits) : size_(image_size), gbits_(gbits) {
    bytes_.assign(div_round_up(bit_count(), 8), 0);
}

uint64_t DirtyBits::bit_count() const { return div_round_up(size_, uint64_t{1} << gbits_); }

void DirtyBits::set(uint64_t off, uint64_t len) {
    if (len == 0 || off >= size_) return;
    const uint64_t end = std::min(size_, off + std::min(len, size_ - off));
    uint64_t a = off >> gbits_, b = ((end - 1) >> gbits_) + 1;  // bits [a, b)
    while (a < b && (a & 7)) {
        bytes_[a >> 3] |= uint8_t(1u << (a & 7));
        a++;
    }
    if (b - a >= 8) {
        std::memset(bytes_.data() + (a >> 3), 0xff, (b - a) >> 3);
        a += (b - a) & ~uint64_t{7};
    }
    for (; a < b; a++) bytes_[a >> 3] |= uint8_t(1u << (a & 7));
}

void DirtyBits::clear() { std::fill(bytes_.begin(), bytes_.end(), 0); }

bool DirtyBits::any() const {
    return std::any_of(bytes_.begin(), bytes_.end(), [](uint8_t b) { return b != 0; });
}

void DirtyBits::merge(const DirtyBits &src) {
    if (src.gbits_ == gbits_ && src.size_ == size_) {
        for (size_t i = 0; i < bytes_.size(); i++) bytes_[i] |= src.bytes_[i];
        return;
    }
    for (size_t i = 0; i < src.bytes_.size(); i++) {
        if (!src.bytes_[i]) continue;
        for (unsigned b = 0; b < 8; b++)
            if (src.bytes_[i] & (1u << b)) set((uint64_t(i) * 8 + b) << src.gbits_, uint64_t{1} << src.gbits_);
    }
}

void DirtyBits::resize(uint64_t image_size) {
    size_ = image_size;
    bytes_.resize(div_round_up(bit_count(), 8), 0);
    mask_tail();
}

void DirtyBits::mask_tail() {
    uint64_t bits = bit_count();
    if (bits & 7) bytes_.back() &= uint8_t((1u << (bits & 7)) - 1);
}

}  // namespace qimg::qcow2
