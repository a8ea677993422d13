// block/table_check.h: table extents as hostile headers give them.
#include <gtest/gtest.h>

#include "block/table_check.h"

namespace qimg {
namespace {

TEST(TableCheck, AcceptsATableInsideItsLimits) {
    EXPECT_TRUE(check_table(0x10000, 16, 8, {1024, 0x10000, 1 << 20}).ok());
    EXPECT_TRUE(check_table(0, 0, 8, {}).ok());
    // Ending exactly at the limit is fine.
    EXPECT_TRUE(check_table(1024, 128, 8, {UINT64_MAX, 512, 2048}).ok());
}

TEST(TableCheck, ReportsEveryFault) {
    TableCheck c = check_table(0x10001, 200, 8, {1024, 0x10000, 0x10100});
    EXPECT_TRUE(c.too_large);
    EXPECT_TRUE(c.misaligned);
    EXPECT_TRUE(c.out_of_bounds);
    EXPECT_FALSE(c.ok());
    c = check_table(4096, 1, 8, {UINT64_MAX, 4096, 4100});
    EXPECT_FALSE(c.too_large);
    EXPECT_FALSE(c.misaligned);
    EXPECT_TRUE(c.out_of_bounds);
}

TEST(TableCheck, OverflowingSizesAndOffsets) {
    // entries * entry_size wraps: too large and not placeable.
    TableCheck c = check_table(0, 0x2000000000000001ull, 8, {});
    EXPECT_TRUE(c.too_large);
    EXPECT_TRUE(c.out_of_bounds);
    // offset + size wraps past 2^64.
    c = check_table(UINT64_MAX - 511, 128, 8, {UINT64_MAX, 512, UINT64_MAX});
    EXPECT_FALSE(c.too_large);
    EXPECT_FALSE(c.misaligned);
    EXPECT_TRUE(c.out_of_bounds);
    // The default limit is INT64_MAX (QEMU's qcow2_validate_table).
    EXPECT_TRUE(check_table(uint64_t(INT64_MAX) - 15, 2, 8, {}).out_of_bounds);
    EXPECT_FALSE(check_table(uint64_t(INT64_MAX) - 16, 2, 8, {}).out_of_bounds);
    EXPECT_TRUE(check_table(8, 1, 8, {UINT64_MAX, 0}).misaligned);
}

TEST(TableCheck, ExtentsOverlap) {
    EXPECT_TRUE(extents_overlap(0, 10, 9, 1));
    EXPECT_FALSE(extents_overlap(0, 10, 10, 5));
    EXPECT_FALSE(extents_overlap(10, 5, 0, 10));
    EXPECT_TRUE(extents_overlap(5, 1, 0, 10));
    EXPECT_FALSE(extents_overlap(5, 0, 0, 10));
    EXPECT_TRUE(extents_overlap(UINT64_MAX - 1, 100, UINT64_MAX - 1, 1));
}

}  // namespace
}  // namespace qimg
