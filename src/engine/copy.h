// The copy engine behind `qemu-img convert`: copies one or more sources
// (concatenated) into a target through any BlockNode, format-agnostic.
// Allocation status (block/status.h) decides what is read: zero extents are
// never read and become write_zeroes (or nothing on a known-zero target);
// data is scanned for zero runs (-S). Several requests are in flight on a
// thread pool with a fixed buffer pool; writes land in order unless
// `in_order` is false (-W).
//
// The planning follows qemu-img's convert_iteration_sectors() step for step
// (512-byte sectors, 2 MiB data requests, block-status splitting), so that
// the progress percentages printed by -p are the same as qemu-img's.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "block/node.h"
#include "engine/pipeline.h"

namespace qimg::engine {

inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint64_t kMaxBufSectors = 32768;            // 16 MiB, qemu-img's MAX_BUF_SECTORS
inline constexpr uint64_t kDefaultBufSectors = 4096;         // 2 MiB, qemu-img's IO_BUF_SIZE

// The size qemu sees for a node: its length rounded up to whole sectors
// (QEMU 7.2 keeps sizes in sectors; the tail reads as zeroes).
inline uint64_t sector_length(const BlockNode &n) { return (n.length() + kSectorSize - 1) / kSectorSize * kSectorSize; }

struct CopyOptions {
    unsigned in_flight = 0;       // -m: requests in flight (1..16); 0: default_in_flight()
    unsigned workers = 0;         // threads; 0 = one per request (see PipelineOptions)
    bool in_order = true;         // false with -W
    uint64_t min_sparse = 8;      // -S in sectors; 0: no zero detection, fully allocate
    bool target_is_zero = false;  // target reads as zeroes (fresh or --target-is-zero)
    bool target_has_backing = false;  // keep unallocated source extents unallocated
    // Sectors of a new target's backing file (-1: unknown or none). Past its
    // end, where the source reads zeroes the new target reads them too
    // through its short backing file, so they are left unallocated
    // (qemu-img's post_backing_zero).
    int64_t target_backing_sectors = -1;
    bool copy_offload = false;    // -C: no zero scanning inside data (copy as is)
    bool salvage = false;         // --salvage: unreadable sectors become zeroes
    bool quiet = false;           // no salvage warnings
    uint64_t rate_limit = 0;      // -r: bytes per second written, 0 = unlimited
    uint64_t buf_sectors = kDefaultBufSectors;
    // -c: whole clusters of `cluster_sectors` are compressed by the worker
    // threads (BlockNode::compress_cluster) and written with
    // write_compressed_data(); all-zero clusters are not written.
    bool compressed = false;
    uint64_t cluster_sectors = 0;
    CompressOptions compress;
    // Bounded page cache: at most about this many bytes of the target are
    // dirty or cached at once (PipelineOptions::write_behind; 0: off). The
    // commands pass default_write_behind() (pipeline.h).
    uint64_t write_behind = kFallbackWriteBehind;
    // Called from the dispatching thread only, with qemu-img's percentage.
    std::function<void(float)> on_progress;
    // Bytes of the planned work (data; zeroes too with -S 0) completed, and
    // their total; called from the worker threads after each write (and once
    // with 0 before the copy), concurrently: the callee serialises.
    std::function<void(uint64_t done, uint64_t total)> on_bytes;
    // "<text>" for warn_report (salvage).
    std::function<void(const std::string &)> on_warning;
};

// Copies the concatenation of `sources` (each of sector_length()) into
// `target` from offset 0. Errors carry qemu-img's convert messages
// ("error while reading at byte N: ...", "error while writing at byte N: ...",
// "error while reading block status at offset N: ..."); a failing
// end-of-compressed-writes signal gives an error with an empty message, which
// qemu-img does not print.
Result<void> copy_images(const std::vector<BlockNode *> &sources, BlockNode &target, const CopyOptions &opts);

// Helpers shared with compare and unit tests.
bool buffer_is_zero(const uint8_t *p, size_t len);
// qemu-img's is_allocated_sectors_min(): how many leading sectors of `buf`
// (`n` sectors) to treat alike; returns true if they are to be written as
// data. `min` is the -S threshold in sectors, `alignment` in sectors (power of 2).
bool allocated_sectors_min(const uint8_t *buf, int64_t n, int64_t *pnum, int64_t min, int64_t sector_num,
                           int64_t alignment);

}  // namespace qimg::engine
