// The parallels driver's on-disk header and entry points shared between its
// files (docs: QEMU's docs/interop/parallels.txt, "Parallels Expandable
// Image File Format"). All numbers little-endian.
#pragma once

#include <cstdint>

#include "block/driver.h"
#include "util/bytes.h"

namespace qimg::parallels {

constexpr size_t kHeaderSize = 64;
constexpr const char *kMagicV1 = "WithoutFreeSpace";  // BAT entries in sectors
constexpr const char *kMagicV2 = "WithouFreSpacExt";  // BAT entries in clusters
constexpr uint32_t kVersion = 2;
constexpr uint32_t kInUse = 0x746f6e59;  // set while open read-write
constexpr uint32_t kDefaultCluster = 1u << 20;
constexpr uint32_t kHeads = 16, kSectorsPerCylinder = 32;  // qemu-img's geometry

namespace hdr {
constexpr size_t magic = 0;  // 16 bytes
constexpr Le32 version{16};
constexpr Le32 heads{20};
constexpr Le32 cylinders{24};
constexpr Le32 tracks{28};  // cluster size in sectors
constexpr Le32 bat_entries{32};
constexpr Le64 nb_sectors{36};
constexpr Le32 inuse{44};
constexpr Le32 data_off{48};  // sectors
constexpr Le32 flags{52};
constexpr Le64 ext_off{56};  // sectors
}  // namespace hdr

Result<void> parallels_create(CreateRequest &req);
std::vector<CreateOption> parallels_create_options();

}  // namespace qimg::parallels
