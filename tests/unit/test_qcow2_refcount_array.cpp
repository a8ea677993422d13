// RefcountArray: check's paged in-memory refcount table.
#include "format/qcow2/refcount_array.h"

#include <gtest/gtest.h>

using qimg::qcow2::RefcountArray;

TEST(RefcountArray, ReadsZeroWhereNothingWasSet) {
    RefcountArray a;
    a.assign(uint64_t(1) << 31);  // QEMU's limit: 2^31 clusters, no memory for them
    EXPECT_EQ(a.size(), uint64_t(1) << 31);
    EXPECT_EQ(a.get(0), 0u);
    EXPECT_EQ(a.get((uint64_t(1) << 31) - 1), 0u);
    EXPECT_TRUE(a.page_absent(12345));
    EXPECT_EQ(a.next_nonzero(0), a.size());
}

TEST(RefcountArray, SetGetAndNextNonzeroAcrossPages) {
    RefcountArray a;
    a.assign(10 * RefcountArray::kPageEntries + 7);
    a.set(3, 1);
    a.set(5 * RefcountArray::kPageEntries + 1, 0xffffffffffffffffull);
    a.set(10 * RefcountArray::kPageEntries + 6, 2);
    a.set(9 * RefcountArray::kPageEntries, 0);  // setting 0 allocates nothing
    EXPECT_TRUE(a.page_absent(9 * RefcountArray::kPageEntries));
    EXPECT_EQ(a.get(3), 1u);
    EXPECT_EQ(a.get(4), 0u);
    EXPECT_EQ(a.get(5 * RefcountArray::kPageEntries + 1), 0xffffffffffffffffull);
    EXPECT_EQ(a.next_nonzero(0), 3u);
    EXPECT_EQ(a.next_nonzero(4), 5 * RefcountArray::kPageEntries + 1);
    EXPECT_EQ(a.next_nonzero(5 * RefcountArray::kPageEntries + 2), 10 * RefcountArray::kPageEntries + 6);
    EXPECT_EQ(a.next_nonzero(10 * RefcountArray::kPageEntries + 7), a.size());
    a.set(3, 0);
    EXPECT_EQ(a.next_nonzero(0), 5 * RefcountArray::kPageEntries + 1);
}

TEST(RefcountArray, ShrinkingForgetsAndGrowingReadsZero) {
    RefcountArray a;
    a.resize(RefcountArray::kPageEntries + 10);
    a.set(RefcountArray::kPageEntries + 5, 9);
    a.set(RefcountArray::kPageEntries + 9, 9);
    a.resize(RefcountArray::kPageEntries + 6);  // keeps index +5, drops +9
    EXPECT_EQ(a.get(RefcountArray::kPageEntries + 5), 9u);
    a.resize(RefcountArray::kPageEntries + 10);
    EXPECT_EQ(a.get(RefcountArray::kPageEntries + 9), 0u);
    EXPECT_EQ(a.next_nonzero(RefcountArray::kPageEntries + 6), a.size());
    a.assign(a.size());
    EXPECT_EQ(a.get(RefcountArray::kPageEntries + 5), 0u);
}
