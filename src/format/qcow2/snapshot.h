// qcow2 internal snapshots: the snapshot table (qcow2.txt: "Snapshots"),
// read with QEMU's limits and messages (qcow2_read_snapshots) and written
// as QEMU's qcow2_write_snapshots lays it out. The operations that change
// refcounts (create, apply, delete, temporary load) are Qcow2Node members
// defined in snapshot.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "block/node.h"

namespace qimg::qcow2 {

struct Header;

// Limits QEMU applies (block/qcow2.h).
inline constexpr uint64_t kMaxSnapshotsSize = 1024 * 65536;  // QCOW_MAX_SNAPSHOTS_SIZE
inline constexpr uint32_t kMaxSnapshotExtraData = 1024;       // QCOW_MAX_SNAPSHOT_EXTRA_DATA
inline constexpr uint32_t kSnapshotExtraSize = 24;            // vm_state_size_large, disk_size, icount

struct Snapshot {
    uint64_t l1_table_offset = 0;
    uint32_t l1_size = 0;
    std::string id, name;
    uint64_t vm_state_size = 0;
    uint32_t date_sec = 0, date_nsec = 0;
    uint64_t vm_clock_nsec = 0;
    uint64_t disk_size = 0;
    uint64_t icount = UINT64_MAX;
    uint32_t extra_data_size = 0;           // as read (all extra data, known and unknown)
    std::vector<uint8_t> unknown_extra;     // extra data past the known 24 bytes
};

struct SnapshotTable {
    std::vector<Snapshot> list;
    uint64_t size = 0;  // bytes the table occupies from snapshots_offset
};

// What a repairing read (qemu-img check -r all) cut off.
struct SnapshotTableRepair {
    uint32_t overhanging = 0;    // entries dropped off the end (table too big)
    uint32_t extra_dropped = 0;  // entries whose extra data was truncated
};

// Reads the `nb` entries at `offset` (bounds-checked by the caller, as
// read_header does). `disk_size` is the size reported for entries without
// that extra field. Errors carry QEMU's wording. With `repair`, as QEMU's
// qcow2_do_read_snapshots in check -r all: extra data past the limit is
// truncated and a table past the size limit is cut off at the entry that
// crosses it, each announced on stderr, instead of failing.
Result<SnapshotTable> read_snapshot_table(BlockNode &file, uint64_t offset, uint32_t nb, uint64_t disk_size,
                                          SnapshotTableRepair *repair = nullptr);
// The table the header `h` points at.
Result<SnapshotTable> read_snapshot_table(BlockNode &file, const Header &h, uint64_t disk_size);

// The table as qcow2_write_snapshots writes it (every entry with at least
// the 24 known bytes of extra data). EFBIG past QEMU's table size limit.
Result<std::vector<uint8_t>> serialize_snapshot_table(const std::vector<Snapshot> &list);

// QEMU's qcow2_validate_table for a snapshot's L1 table.
Result<void> validate_snapshot_l1(const Snapshot &sn, uint64_t cluster_size);
// The same for callers that, as in QEMU, report the reason at once
// (report_error) and pass on only its errno: "Invalid argument".
Result<void> validate_snapshot_l1_reported(const Snapshot &sn, uint64_t cluster_size);

// QEMU's find_new_snapshot_id: one more than the largest numeric ID.
std::string new_snapshot_id(const std::vector<Snapshot> &list);

// Index of the snapshot with this ID and/or name (empty = not compared), or -1.
int find_snapshot(const std::vector<Snapshot> &list, const std::string *id, const std::string *name);
// ID first, then name (find_snapshot_by_id_or_name).
int find_snapshot_by_id_or_name(const std::vector<Snapshot> &list, const std::string &s);

}  // namespace qimg::qcow2
