// qcow2 persistent dirty bitmaps (qcow2.txt: "Bitmaps extension"): the
// bitmap directory and bitmap tables with QEMU's validation
// (block/qcow2-bitmap.c), and the in-memory dirty bits a bitmap holds while
// the image is open. The Qcow2Node operations that load, track and store
// them live in bitmap.cpp.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/bytes.h"
#include "util/result.h"

namespace qimg::qcow2 {

// qcow2.txt: "Bitmap directory" flags and limits QEMU applies.
inline constexpr uint32_t kBmeFlagInUse = 1u << 0;
inline constexpr uint32_t kBmeFlagAuto = 1u << 1;
inline constexpr uint32_t kBmeReservedFlags = 0xfffffffcu;
inline constexpr uint32_t kBmeMinGranularityBits = 9, kBmeMaxGranularityBits = 31;
inline constexpr uint32_t kBmeMaxTableSize = 0x8000000;   // entries
inline constexpr uint64_t kBmeMaxPhysSize = 0x20000000;   // bytes of bitmap data
inline constexpr uint32_t kBmeMaxNameSize = 1023;
inline constexpr uint8_t kBitmapTypeDirtyTracking = 1;
inline constexpr uint64_t kBmeDirEntryFixed = 24;
// The fixed part of a directory entry by byte offset (qcow2.txt: "Bitmap
// directory"); the name follows it.
namespace bme {
inline constexpr Be64 kTableOffset{0};
inline constexpr Be32 kTableSize{8}, kFlags{12};
inline constexpr U8 kType{16}, kGranularityBits{17};
inline constexpr Be16 kNameSize{18};
inline constexpr Be32 kExtraDataSize{20};
}  // namespace bme
// qcow2.txt: "Bitmap table"
inline constexpr uint64_t kBmeTableReservedMask = 0xff000000000001feull;
inline constexpr uint64_t kBmeTableOffsetMask = 0x00fffffffffffe00ull;
inline constexpr uint64_t kBmeTableAllOnes = 1;

struct BitmapDirEntry {
    uint64_t table_offset = 0;
    uint32_t table_size = 0;  // entries
    uint32_t flags = 0;
    uint8_t granularity_bits = 16;
    std::string name;
};

// Bytes one directory entry takes on disk (fixed part + name, 8-aligned).
uint64_t bitmap_dir_entry_size(uint64_t name_len);

// Number of bitmap table entries (data clusters) a bitmap of `image_size`
// bytes at granularity 2^gbits needs.
uint64_t bitmap_table_entries(uint64_t image_size, uint32_t gbits, uint64_t cluster_size);

// QEMU's bitmap_list_load + check_dir_entry, with their messages: every
// entry of `dir` (as read from disk) checked against the cluster size and
// the image size, the entry count against `nb_bitmaps`, names unique.
Result<std::vector<BitmapDirEntry>> parse_bitmap_directory(std::span<const uint8_t> dir, uint32_t nb_bitmaps,
                                                           uint64_t cluster_size, uint64_t image_size);
std::vector<uint8_t> serialize_bitmap_directory(const std::vector<BitmapDirEntry> &list);

// QEMU's check_table_entry.
bool valid_bitmap_table_entry(uint64_t entry, uint64_t cluster_size);
// Decodes a big-endian table and validates each entry (EINVAL).
Result<std::vector<uint64_t>> parse_bitmap_table(std::span<const uint8_t> raw, uint64_t cluster_size);

// QEMU's check_constraints_on_bitmap (granularity range, data size, name).
Result<void> check_bitmap_constraints(const std::string &name, uint64_t granularity, uint64_t image_size,
                                      uint64_t cluster_size);

// The dirty bits of one bitmap: bit i covers bytes [i << gbits, (i+1) << gbits)
// of the image; stored as on disk, least significant bit first in each byte.
class DirtyBits {
public:
    DirtyBits() = default;
    DirtyBits(uint64_t image_size, uint32_t gbits);

    uint64_t image_size() const { return size_; }
    uint32_t granularity_bits() const { return gbits_; }
    uint64_t bit_count() const;
    // Serialised form: ceil(bit_count / 8) bytes.
    std::vector<uint8_t> &bytes() { return bytes_; }
    const std::vector<uint8_t> &bytes() const { return bytes_; }

    // Marks every granule touching [off, off+len) (clipped to the image).
    void set(uint64_t off, uint64_t len);
    void clear();
    bool any() const;
    // ORs `src` in; granularities may differ (a source bit dirties every
    // destination granule its range touches). Sizes must be equal.
    void merge(const DirtyBits &src);
    // Follows an image resize: bits past the new end are dropped, new ones clean.
    void resize(uint64_t image_size);
    // Zeroes the bits past bit_count() in the last byte (loaded data may carry some).
    void mask_tail();

private:
    uint64_t size_ = 0;
    uint32_t gbits_ = 16;
    std::vector<uint8_t> bytes_;
};

}  // namespace qimg::qcow2
