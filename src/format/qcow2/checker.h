// The state of one qemu-img check of a qcow2 node (see check.h), shared by
// the files of the check, one concern each: check.cpp (entry points and the
// order of the phases), check_snapshot_table.cpp, check_references.cpp
// (the expected refcounts), check_repair.cpp (comparison with the refcounts
// on disk, OFLAG_COPIED, the overlap guard of repair writes) and
// check_rebuild.cpp (a new refcount structure). Included by those alone.
#pragma once

#include <cstdint>
#include <vector>

#include "format/qcow2/qcow2.h"
#include "format/qcow2/refcount_array.h"

namespace qimg::qcow2 {

// What a check may repair (qemu-img check -r leaks / -r all).
inline constexpr unsigned kFixLeaks = 1, kFixErrors = 2;

// QEMU's BdrvCheckResult.
struct CheckResult {
    int64_t corruptions = 0, leaks = 0, check_errors = 0;
    int64_t corruptions_fixed = 0, leaks_fixed = 0;
    int64_t image_end_offset = 0;
    int64_t total = 0, allocated = 0, fragmented = 0, compressed = 0;
};

class Checker {
public:
    explicit Checker(Qcow2Node &n)
        : node_(n), file_(*n.file_), cluster_size_(n.cluster_size_), cluster_bits_(n.cluster_bits_),
          max_refcount_(n.refcounts_->max_refcount()) {}

    // QEMU's qcow2_co_check_locked.
    Result<void> run(unsigned fix, CheckResult &res);

private:
    // check.cpp
    Result<void> check_refcounts(unsigned fix, CheckResult &res);
    Result<void> write_incompat(uint64_t v);
    // check_snapshot_table.cpp: QEMU's qcow2_check_read_snapshot_table and
    // qcow2_check_fix_snapshot_table.
    Result<void> read_snapshot_table(unsigned fix, CheckResult &res);
    Result<void> fix_snapshot_table(unsigned fix, CheckResult &res);
    // check_references.cpp
    Result<void> inc(int64_t offset, int64_t size, CheckResult &res);
    Result<void> check_l1(uint64_t l1_offset, uint64_t l1_size, bool frag, unsigned fix, bool active,
                          CheckResult &res);
    Result<void> check_l2(uint64_t l2_offset, bool frag, unsigned fix, bool active, CheckResult &res);
    Result<bool> zero_l2_entry(uint64_t l2_offset, uint64_t index, uint64_t bitmap, bool active, CheckResult &res);
    Result<void> check_bitmaps(CheckResult &res);
    Result<void> check_refblocks(unsigned fix, bool &rebuild, CheckResult &res);
    Result<void> calculate(unsigned fix, bool &rebuild, CheckResult &res);
    // check_repair.cpp
    Result<uint64_t> get_refcount(uint64_t cluster);
    void compare(unsigned fix, bool &rebuild, int64_t &highest, CheckResult &res);
    Result<void> check_oflag_copied(unsigned fix, CheckResult &res);
    // QEMU's qcow2_check_metadata_overlap (overlap-check=cached): the name of
    // the metadata [offset, offset+size) overlaps, or nullptr.
    const char *overlap(uint64_t offset, uint64_t size, bool ign_active_l2) const;
    // qcow2_pre_write_overlap_check: on overlap signals corruption, EIO.
    Result<void> pre_write_check(uint64_t offset, uint64_t size, bool ign_active_l2);
    // check_rebuild.cpp: QEMU's rebuild_refcount_structure.
    uint64_t alloc_imrt(uint64_t count, uint64_t &first_free);
    std::vector<uint8_t> encode_refblock(uint64_t index) const;
    Result<bool> write_refblocks(uint64_t first, uint64_t end, std::vector<uint64_t> &reftable);
    Result<void> rebuild(CheckResult &res);

    Qcow2Node &node_;
    BlockNode &file_;
    uint64_t cluster_size_;
    uint32_t cluster_bits_;
    uint64_t max_refcount_;
    // The expected refcount of every host cluster (QEMU's in-memory
    // refcount table, "imrt").
    RefcountArray expected_;
    std::vector<uint64_t> freed_;  // clusters whose refcount a repair dropped to 0
};

}  // namespace qimg::qcow2
