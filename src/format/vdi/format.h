// VDI on-disk structures (VirtualBox's VDI 1.1 layout, as QEMU's
// block/vdi.c and VirtualBox's VDICore.h describe it): the 512-byte
// little-endian header at offset 0 and the block map. Pure functions, shared
// by the driver, create and the unit tests.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "util/bytes.h"
#include "util/result.h"

namespace qimg::vdi {

constexpr size_t kHeaderSize = 512;
constexpr uint32_t kSignature = 0xbeda107f;
constexpr uint32_t kVersion11 = 0x00010001;
constexpr uint32_t kTypeDynamic = 1, kTypeStatic = 2;
constexpr uint32_t kSectorSize = 512;
constexpr uint32_t kBlockSize = 1u << 20;  // the only block size qemu-img accepts
// Block map entries: a block index, or one of these.
constexpr uint32_t kUnallocated = 0xffffffff;  // never written: reads as zeroes
constexpr uint32_t kDiscarded = 0xfffffffe;    // dropped: reads as zeroes
constexpr bool is_allocated(uint32_t e) { return e < kDiscarded; }
// qemu-img's limits: a block map of at most 2 GiB - 512 bytes.
constexpr uint32_t kMaxBlocks = uint32_t((0x80000000ull - 512) / 4);
constexpr uint64_t kMaxDiskSize = uint64_t(kMaxBlocks) * kBlockSize;
// The text qemu-img writes at the start of the header.
constexpr const char *kText = "<<< QEMU VM Virtual Disk Image >>>\n";

namespace hdr {
constexpr size_t text = 0;  // 64 bytes
constexpr Le32 signature{0x40};
constexpr Le32 version{0x44};
constexpr Le32 header_size{0x48};
constexpr Le32 image_type{0x4c};
constexpr Le32 image_flags{0x50};
constexpr size_t description = 0x54;  // 256 bytes
constexpr Le32 offset_bmap{0x154};
constexpr Le32 offset_data{0x158};
constexpr Le32 cylinders{0x15c};
constexpr Le32 heads{0x160};
constexpr Le32 sectors{0x164};
constexpr Le32 sector_size{0x168};
constexpr Le64 disk_size{0x170};
constexpr Le32 block_size{0x178};
constexpr Le32 block_extra{0x17c};
constexpr Le32 blocks_in_image{0x180};
constexpr Le32 blocks_allocated{0x184};
constexpr size_t uuid_image = 0x188;  // 16 bytes each
constexpr size_t uuid_last_snap = 0x198;
constexpr size_t uuid_link = 0x1a8;
constexpr size_t uuid_parent = 0x1b8;
}  // namespace hdr

using HeaderBytes = std::array<uint8_t, kHeaderSize>;

struct Header {
    uint32_t image_type = 0;
    uint32_t offset_bmap = 0, offset_data = 0;
    uint64_t disk_size = 0;  // rounded up to whole sectors, as qemu-img does
    uint32_t blocks_in_image = 0, blocks_allocated = 0;
    // The block map's bytes on disk: whole sectors.
    uint64_t bmap_bytes() const { return (uint64_t(blocks_in_image) * 4 + kSectorSize - 1) / kSectorSize * kSectorSize; }
};

// "0x" and lowercase hex digits, as qemu-img's vdi messages print offsets.
std::string hex64(uint64_t v);

bool has_signature(std::span<const uint8_t> head);
// Parses and validates the header: qemu-img's checks, in its order and
// words (ENOTSUP for what it does not support, EINVAL for a bad signature).
Result<Header> parse_header(std::span<const uint8_t, kHeaderSize> b);

}  // namespace qimg::vdi
