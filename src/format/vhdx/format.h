// VHDX on-disk structures (Microsoft's "VHDX Format Specification" v1.00;
// libyal/libvhdi's "Virtual Hard Disk version 2 (VHDX) image format"), as
// pure functions over bytes so that each one is unit-tested without a file.
//
// Layout: a 1 MiB header section (file type identifier "vhdxfile" at 0, two
// 4 KiB headers at 64 KiB and 128 KiB, two 64 KiB region tables at 192 KiB
// and 256 KiB), then regions anywhere in the file at 1 MiB multiples: the
// log (named by the headers), the BAT and the metadata region (named by the
// region table). All integers are little-endian; GUIDs are stored as
// Microsoft lays them out (first three fields little-endian).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "util/bytes.h"
#include "util/result.h"

namespace qimg::vhdx {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, TiB = MiB * MiB;

constexpr uint64_t kHeader1Offset = 64 * KiB;
constexpr uint64_t kHeader2Offset = 128 * KiB;
constexpr uint64_t kRegionTableOffset = 192 * KiB;
constexpr uint64_t kRegionTable2Offset = 256 * KiB;
constexpr uint64_t kHeaderSectionEnd = 1 * MiB;
constexpr size_t kHeaderSize = 4 * KiB;       // the checksum covers all of it
constexpr size_t kRegionTableSize = 64 * KiB;  // likewise
constexpr size_t kMetadataTableSize = 64 * KiB;
constexpr uint32_t kLogSectorSize = 4 * KiB;
constexpr uint64_t kLogMinSize = 1 * MiB;
constexpr uint32_t kBlockSizeMin = 1 * MiB, kBlockSizeMax = 256 * MiB;
constexpr uint64_t kMaxImageSize = 64 * TiB;
constexpr uint64_t kMaxSectorsPerBlock = 1ull << 23;  // sectors one bitmap block covers

using Guid = std::array<uint8_t, 16>;

// The GUID "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" in its on-disk form.
constexpr Guid make_guid(uint32_t a, uint16_t b, uint16_t c, uint64_t d) {
    Guid g{};
    for (int i = 0; i < 4; ++i) g[i] = uint8_t(a >> (8 * i));
    for (int i = 0; i < 2; ++i) g[4 + i] = uint8_t(b >> (8 * i));
    for (int i = 0; i < 2; ++i) g[6 + i] = uint8_t(c >> (8 * i));
    for (int i = 0; i < 8; ++i) g[8 + i] = uint8_t(d >> (8 * (7 - i)));
    return g;
}
constexpr Guid kBatGuid = make_guid(0x2dc27766, 0xf623, 0x4200, 0x9d64115e9bfd4a08);
constexpr Guid kMetadataGuid = make_guid(0x8b7ca206, 0x4790, 0x4b9a, 0xb8fe575f050f886e);
constexpr Guid kFileParamsGuid = make_guid(0xcaa16737, 0xfa36, 0x4d43, 0xb3b633f0aa44e76b);
constexpr Guid kVirtualSizeGuid = make_guid(0x2fa54224, 0xcd1b, 0x4876, 0xb2115dbed83bf4b8);
constexpr Guid kPage83Guid = make_guid(0xbeca12ab, 0xb2e6, 0x4523, 0x93efc309e000c746);
constexpr Guid kLogicalSectorGuid = make_guid(0x8141bf1d, 0xa96f, 0x4709, 0xba47f233a8faab5f);
constexpr Guid kPhysicalSectorGuid = make_guid(0xcda348c7, 0x445d, 0x4471, 0x9cc9e9885251c556);
constexpr Guid kParentLocatorGuid = make_guid(0xa8d35f2d, 0xb30b, 0x454d, 0xabf7d3d84834ab0c);

inline bool is_zero(const Guid &g) {
    for (uint8_t b : g)
        if (b) return false;
    return true;
}

// --- headers ------------------------------------------------------------
namespace hdr {
constexpr Le32 signature{0};  // "head"
constexpr Le32 checksum{4};
constexpr Le64 sequence{8};
constexpr size_t file_write_guid = 16, data_write_guid = 32, log_guid = 48;
constexpr Le16 log_version{64};
constexpr Le16 version{66};
constexpr Le32 log_length{68};
constexpr Le64 log_offset{72};
}  // namespace hdr
constexpr uint32_t kHeaderSignature = 0x64616568;  // "head"

struct Header {
    uint64_t sequence = 0;
    Guid file_write_guid{}, data_write_guid{}, log_guid{};
    uint16_t log_version = 0, version = 0;
    uint32_t log_length = 0;
    uint64_t log_offset = 0;
};

// CRC-32C of `b` with its 4-byte checksum field at `crc_at` counted as zero.
uint32_t checksum(std::span<const uint8_t> b, size_t crc_at);
// Whether the header block is valid (checksum, signature, version 1).
std::optional<Header> parse_header(std::span<const uint8_t> block);
void store_header(std::span<uint8_t> block, const Header &h);  // with its checksum

// The current header of the two: the valid one, or of two valid ones the
// higher sequence number (equal numbers only when both are the same
// header). nullopt: none, "No valid VHDX header found". `index` is 0 or 1.
struct ActiveHeader {
    Header h;
    int index = 0;
};
std::optional<ActiveHeader> pick_header(std::span<const uint8_t> h1, std::span<const uint8_t> h2);

// --- region table -------------------------------------------------------
constexpr uint32_t kRegionSignature = 0x69676572;  // "regi"
constexpr size_t kRegionEntrySize = 32;
constexpr uint32_t kMaxRegionEntries = 2047;

struct Region {
    uint64_t offset = 0;
    uint32_t length = 0;
};
struct Regions {
    Region bat, metadata;
    std::vector<Region> all;  // every region, the log first (overlap checks)
};
// Parses the region table block; `log` is the log region from the header.
// Errors are errno values with a message for report_error() where QEMU
// prints one (an overlap), empty otherwise.
struct RegionError {
    int err = 0;
    std::string report;
};
Result<Regions> parse_regions(std::span<const uint8_t> block, Region log, RegionError *why);
// Whether a region table block is whole: its signature and checksum hold
// (what tells a damaged copy from one whose contents are wrong).
bool region_table_sealed(std::span<const uint8_t> block);

// Whether [start, start+len) overlaps a region; the message QEMU prints then.
std::optional<std::string> region_overlap(const std::vector<Region> &regions, uint64_t start, uint64_t len);

// --- metadata -----------------------------------------------------------
constexpr uint64_t kMetadataSignature = 0x617461646174656dull;  // "metadata"
constexpr size_t kMetadataEntrySize = 32;
constexpr uint32_t kMetaRequired = 0x04;
constexpr uint32_t kParamLeaveAllocated = 0x01, kParamHasParent = 0x02;

struct MetaItem {
    uint32_t offset = 0, length = 0;  // offset from the region start
    bool present = false;
};
struct MetaTable {
    MetaItem params, size, page83, logical, physical, parent;
};
// Errors: EINVAL (bad signature, table too long, duplicate), ENOTSUP
// (an unknown required item, a required item missing).
Result<MetaTable> parse_metadata_table(std::span<const uint8_t> block);

struct Params {
    uint32_t block_size = 0, data_bits = 0;
    uint64_t size = 0;
    uint32_t logical_sector = 0, physical_sector = 0;
    Guid page83{};
    uint32_t chunk_ratio = 0;  // payload blocks per sector bitmap block
    uint64_t bat_entries = 0;  // payload and bitmap entries the disk needs
};
// Checks the values QEMU checks, in its order (EINVAL / ENOTSUP), and
// derives chunk ratio and BAT size.
Result<Params> check_params(Params p);

// --- BAT ----------------------------------------------------------------
enum BlockState : uint8_t {
    kNotPresent = 0,
    kUndefined = 1,
    kZero = 2,
    kUnmapped = 3,
    kUnmappedV095 = 5,
    kFullyPresent = 6,
    kPartiallyPresent = 7,
};
constexpr uint64_t kBatStateMask = 0x7;
constexpr uint64_t kBatOffsetMask = 0xfffffffffff00000ull;  // 1 MiB units
// How QEMU reads a payload block in each state: as zeroes (not present,
// undefined, zero, unmapped), from the file (fully present), or not at all
// (partially present: a differencing disk's; the reserved values).
enum class BlockKind { Zeroes, Data, Fault };
constexpr BlockKind block_kind(uint64_t entry) {
    switch (entry & kBatStateMask) {
    case kNotPresent:
    case kUndefined:
    case kZero:
    case kUnmapped:
    case kUnmappedV095: return BlockKind::Zeroes;
    case kFullyPresent: return BlockKind::Data;
    default: return BlockKind::Fault;
    }
}

// A random GUID for a new image or session.
Result<Guid> random_guid();

// BAT index of payload block `block`: a sector bitmap entry follows every
// `chunk_ratio` payload entries.
constexpr uint64_t bat_index(uint64_t block, uint32_t chunk_ratio) { return block + block / chunk_ratio; }

}  // namespace qimg::vhdx
