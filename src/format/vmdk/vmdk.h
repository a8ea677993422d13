// Internal interface of the vmdk driver: the extent model shared by open
// (vmdk.cpp), the sparse-extent code (sparse.cpp) and create (create.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block/driver.h"
#include "block/table_cache.h"

namespace qimg::vmdk {

inline constexpr uint32_t kMagicVmdk4 = 0x4b444d56;  // "KDMV", big-endian
inline constexpr uint32_t kMagicCowd = 0x434f5744;   // "COWD"
inline constexpr uint64_t kGdAtEnd = UINT64_MAX;
inline constexpr uint32_t kFlagNlDetect = 1u << 0;
inline constexpr uint32_t kFlagRgd = 1u << 1;
inline constexpr uint32_t kFlagZeroGrain = 1u << 2;
inline constexpr uint32_t kFlagCompress = 1u << 16;
inline constexpr uint32_t kFlagMarker = 1u << 17;
inline constexpr uint16_t kCompressDeflate = 1;
inline constexpr uint32_t kGteZeroed = 1;
inline constexpr uint32_t kMarkerEos = 0, kMarkerGt = 1, kMarkerGd = 2, kMarkerFooter = 3;
inline constexpr uint64_t kMaxClusterSectors = 0x200000;  // 1 GiB grains
inline constexpr uint64_t kMaxL1Entries = 32u << 20;
inline constexpr uint64_t kExtentMaxSectors = uint64_t(1) << 32;

using GrainTable = std::vector<uint32_t>;
using SeGrainTable = std::vector<uint64_t>;  // seSparse: 8-byte entries

// One extent: a FLAT/VMFS window of a file, or a hosted sparse (VMDK4
// "KDMV") or VMFS sparse (VMDK3 "COWD") file.
struct Extent {
    NodePtr file;
    std::string type;  // the descriptor's type; empty for a monolithic sparse file
    bool flat = false;
    bool compressed = false;
    bool has_marker = false;
    bool zero_grain = false;
    int version = 0;
    uint64_t sectors = 0;       // guest sectors of this extent
    uint64_t start_sector = 0;  // first guest sector
    uint64_t flat_start = 0;    // FLAT: byte offset of the data in the file
    // Sparse extents: the grain directory (QEMU's L1) and tables (L2).
    uint64_t gd_offset = 0, rgd_offset = 0;  // bytes; rgd 0: none
    uint32_t l1_size = 0, l2_size = 0;
    uint64_t cluster_sectors = 0;  // flat: the whole extent
    uint64_t l1_entry_sectors = 0;
    std::vector<uint32_t> gd, rgd;  // in sectors
    std::unique_ptr<TableCache<GrainTable>> gts;  // keyed by byte offset
    // seSparse (ESXi deltas, sesparse.cpp): 8-byte directory and table
    // entries naming tables and grains by index in their regions; read-only.
    bool sesparse = false;
    uint64_t se_tables_sector = 0, se_grains_sector = 0;
    std::vector<uint64_t> se_gd;
    std::unique_ptr<TableCache<SeGrainTable>> se_gts;
    uint64_t next_cluster_sector = 0;  // where the next grain goes (writes)
    // streamOptimized: the trailer (tables, footer, end-of-stream marker)
    // is on disk and current (no grain appended since); the header's
    // directory offset says "at the end" (readers take the footer's); this
    // session appended grains (the trailer is rewritten at close).
    bool stream_finished = false;
    bool header_gd_at_end = false;
    bool appended = false;

    uint64_t end_sector() const { return start_sector + sectors; }
    uint64_t cluster_bytes() const { return cluster_sectors * 512; }
};

// Where a guest offset lives.
struct Mapping {
    enum Kind { Unallocated, Zeroed, Allocated } kind = Unallocated;
    uint64_t host = 0;        // Allocated: the grain's (or flat window's) byte offset
    uint64_t in_cluster = 0;  // offset of the guest byte inside it
    uint64_t avail = 0;       // bytes to the end of the grain (or extent)
};

// seSparse extents (sesparse.cpp). sesparse_extent reads and checks the
// headers of `file` into an extent (not yet added: its tables are loaded by
// sesparse_init_tables once it is); sesparse_map fills `m`'s kind and host
// for byte `rel` of the extent (in_cluster and avail are the caller's).
inline constexpr const char *kSeSparseReadOnly = "No write support for seSparse images available";
Result<Extent> sesparse_extent(NodePtr file, const std::string &type);
Result<void> sesparse_init_tables(Extent &e);
Result<void> sesparse_map(Extent &e, uint64_t rel, Mapping &m);

// qemu-img create -f vmdk (create.cpp).
std::vector<CreateOption> create_options();
Result<void> create(CreateRequest &req);

}  // namespace qimg::vmdk
