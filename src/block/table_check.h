// Validation of an on-disk table (an array of fixed-size entries at a file
// offset) before it is allocated or read: its size bounded, its offset
// aligned, the whole table below a limit (the file size, or INT64_MAX), and
// whether two extents overlap. qcow2 L1/refcount/snapshot tables and bitmap
// directories, vmdk grain directories, vhdx BAT and region tables are all
// such tables. Every fault is reported, so that each format gives its own
// message in the order its reference implementation checks them.
#pragma once

#include <cstdint>
#include <optional>

#include "util/checked.h"

namespace qimg {

struct TableLimits {
    uint64_t max_bytes = UINT64_MAX;         // largest table accepted
    uint64_t alignment = 1;                  // the offset must be a multiple of it (non-zero)
    uint64_t end_limit = uint64_t(INT64_MAX);  // the table must end at or below it
};

struct TableCheck {
    bool too_large = false;      // entries * entry_size overflows or exceeds max_bytes
    bool misaligned = false;     // offset not a multiple of alignment
    bool out_of_bounds = false;  // offset + size past end_limit (or not computable)
    bool ok() const { return !too_large && !misaligned && !out_of_bounds; }
};

constexpr TableCheck check_table(uint64_t offset, uint64_t entries, uint64_t entry_size, const TableLimits &lim) {
    TableCheck c;
    std::optional<uint64_t> bytes = checked_mul(entries, entry_size);
    c.too_large = !bytes || *bytes > lim.max_bytes;
    c.misaligned = lim.alignment == 0 || offset % lim.alignment != 0;
    c.out_of_bounds = !bytes || !range_fits(offset, *bytes, lim.end_limit);
    return c;
}

// Whether [a, a + a_len) and [b, b + b_len) share a byte (empty extents
// overlap nothing; extents reaching past UINT64_MAX are clipped there).
constexpr bool extents_overlap(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len) {
    if (a_len == 0 || b_len == 0) return false;
    uint64_t a_end = checked_add(a, a_len).value_or(UINT64_MAX);
    uint64_t b_end = checked_add(b, b_len).value_or(UINT64_MAX);
    return a < b_end && b < a_end;
}

}  // namespace qimg
