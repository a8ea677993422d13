// util/checked.h: results at and past the limits of the type.
#include <gtest/gtest.h>

#include "util/checked.h"

namespace qimg {
namespace {

constexpr uint64_t kMax = UINT64_MAX;

TEST(Checked, AddAndMulDetectOverflow) {
    EXPECT_EQ(checked_add<uint64_t>(1, 2), 3u);
    EXPECT_EQ(checked_add<uint64_t>(kMax - 1, 1), kMax);
    EXPECT_FALSE(checked_add<uint64_t>(kMax, 1));
    EXPECT_FALSE(checked_add<uint32_t>(0xffffffffu, 1u));
    EXPECT_EQ(checked_mul<uint64_t>(1ull << 32, 1ull << 31), 1ull << 63);
    EXPECT_FALSE(checked_mul<uint64_t>(1ull << 32, 1ull << 32));
    EXPECT_EQ(checked_mul<uint64_t>(0, kMax), 0u);
    // An L1 size and entry width as a hostile header gives them.
    EXPECT_FALSE(checked_mul<uint64_t>(0x2000000000000001ull, 8));
}

TEST(Checked, AlignUp) {
    EXPECT_EQ(checked_align_up<uint64_t>(0, 512), 0u);
    EXPECT_EQ(checked_align_up<uint64_t>(1, 512), 512u);
    EXPECT_EQ(checked_align_up<uint64_t>(512, 512), 512u);
    EXPECT_EQ(checked_align_up<uint64_t>(1000, 48), 1008u);  // not a power of two
    EXPECT_EQ(checked_align_up<uint64_t>(kMax - 511, 512), kMax - 511);
    EXPECT_FALSE(checked_align_up<uint64_t>(kMax - 510, 512));
    EXPECT_FALSE(checked_align_up<uint64_t>(kMax, 2));
    EXPECT_FALSE(checked_align_up<uint64_t>(5, 0));
}

TEST(Checked, DivRoundUpAndRangeFits) {
    EXPECT_EQ(div_round_up<uint64_t>(0, 8), 0u);
    EXPECT_EQ(div_round_up<uint64_t>(9, 8), 2u);
    EXPECT_EQ(div_round_up<uint64_t>(kMax, 2), 1ull << 63);  // (a + b - 1) / b would wrap
    EXPECT_TRUE(range_fits(0, 10, 10));
    EXPECT_FALSE(range_fits(1, 10, 10));
    EXPECT_FALSE(range_fits(11, 0, 10));
    EXPECT_TRUE(range_fits(kMax, 0, kMax));
    EXPECT_FALSE(range_fits(kMax, 1, kMax));
    EXPECT_FALSE(range_fits(2, kMax, kMax));
}

}  // namespace
}  // namespace qimg
