// VHD on-disk structures (Microsoft's "Virtual Hard Disk Image Format
// Specification"; libyal/libvhdi's "Virtual Hard Disk (VHD) image format"):
// the 512-byte footer, the 1024-byte dynamic disk header and the CHS
// geometry, all big-endian. Pure functions, shared by the driver, create
// and the unit tests.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "util/bytes.h"
#include "util/result.h"

namespace qimg::vpc {

constexpr size_t kFooterSize = 512;
constexpr size_t kDynHeaderSize = 1024;
constexpr uint32_t kTypeFixed = 2, kTypeDynamic = 3, kTypeDifferencing = 4;
constexpr uint64_t kChsMaxC = 65535, kChsMaxH = 16, kChsMaxS = 255;
// qemu-img's limits: 2040 GiB, and the largest CHS product.
constexpr uint64_t kMaxSectors = 0xff000000;
constexpr uint64_t kMaxGeometry = kChsMaxC * kChsMaxH * kChsMaxS;
constexpr uint32_t kUnallocated = 0xffffffff;
// Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC, the VHD epoch.
constexpr uint64_t kTimestampBase = 946684800;
constexpr uint32_t kDefaultBlockSize = 2 * 1024 * 1024;
// The first sector that is not metadata in an image qemu-img creates:
// footer copy, dynamic header, then the BAT.
constexpr uint64_t kCreatedBatOffset = 3 * 512;

namespace footer {
constexpr size_t cookie = 0;  // "conectix"
constexpr Be32 features{8};
constexpr Be32 version{12};
constexpr Be64 data_offset{16};
constexpr Be32 timestamp{24};
constexpr size_t creator_app = 28;  // 4 bytes
constexpr Be16 creator_major{32};
constexpr Be16 creator_minor{34};
constexpr size_t creator_os = 36;  // 4 bytes
constexpr Be64 orig_size{40};
constexpr Be64 current_size{48};
constexpr Be16 cylinders{56};
constexpr U8 heads{58};
constexpr U8 sectors{59};
constexpr Be32 disk_type{60};
constexpr Be32 checksum{64};
constexpr size_t uuid = 68;  // 16 bytes
}  // namespace footer

namespace dyn {
constexpr size_t cookie = 0;  // "cxsparse"
constexpr Be64 data_offset{8};
constexpr Be64 table_offset{16};
constexpr Be32 version{24};
constexpr Be32 max_table_entries{28};
constexpr Be32 block_size{32};
constexpr Be32 checksum{36};
}  // namespace dyn

using FooterBytes = std::array<uint8_t, kFooterSize>;

// The one's complement of the byte sum of `b`, with the 4 bytes at
// `checksum_at` counted as zero.
uint32_t checksum(std::span<const uint8_t> b, size_t checksum_at);

struct Footer {
    uint64_t data_offset = 0;
    uint64_t current_size = 0;
    uint16_t cylinders = 0;
    uint8_t heads = 0, sectors = 0;
    uint32_t disk_type = 0;
    std::array<char, 4> creator_app{};
};
bool has_footer_cookie(std::span<const uint8_t> b);
// Parses a footer whose cookie was checked; verifies its checksum as
// qemu-img does ("Incorrect header checksum").
Result<Footer> parse_footer(std::span<const uint8_t> b);

struct Geometry {
    uint16_t cylinders = 0;
    uint8_t heads = 0, sectors = 0;
    uint64_t total() const { return uint64_t(cylinders) * heads * sectors; }
};
// The VHD specification's CHS algorithm as QEMU extends it (more than 16
// heads are never used; sizes past 127 GiB get 255 sectors per track):
// the geometry for `total_sectors`, which may round down.
Geometry geometry_for(uint64_t total_sectors);

// QEMU's size rule on open: sectors from the CHS product for images made by
// Virtual PC and old qemu ("vpc ", "qemu", anything unknown), from
// current_size for Hyper-V ("win "), disk2vhd ("d2v "), XenServer ("tap\0"),
// XenConverter ("CTXS") and qemu with force_size ("qem2"), and from
// current_size whenever the geometry is the largest CHS one. `calc`: the
// force_size_calc open option ("", "chs", "current_size").
uint64_t disk_sectors(const Footer &f, const std::string &calc);

// What create makes of a requested size (already a multiple of 512): the
// geometry and the sector count (QEMU's calculate_rounded_image_size). The
// size grows to the next CHS product unless force_size; EFBIG past 2040 GiB.
struct Rounded {
    Geometry geo;
    uint64_t sectors = 0;
};
Result<Rounded> rounded_size(uint64_t size, bool force_size);

}  // namespace qimg::vpc
