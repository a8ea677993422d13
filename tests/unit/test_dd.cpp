// dd on the request pipeline (engine/dd.h): the bytes copied for any block
// size, a tail past the source's end read as zeroes, and qemu-img's error
// semantics (every block before the first unreadable or unwritable one is
// written, none after it) whatever the number of requests in flight.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "engine/dd.h"
#include "lib/mem_node.h"

namespace qimg::engine {
namespace {

// The shared in-memory node (tests/lib/mem_node.h), sized as an image;
// reads touching [bad_from, bad_to) fail with EIO, and writes (zeroes too)
// touching [bad_write_from, bad_write_to) with ENOSPC.
class FlakyNode final : public test::MemNode {
public:
    explicit FlakyNode(std::vector<uint8_t> d) : test::MemNode(std::move(d), /*fixed_size=*/true) {}
    std::string_view driver_name() const override { return "flaky"; }
    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (off < bad_to && bad_from < off + len) return make_error(EIO, "bad sector");
        return test::MemNode::read(off, buf, len);
    }
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        if (off < bad_write_to && bad_write_from < off + len) return make_error(ENOSPC, "full");
        return test::MemNode::write(off, buf, len);
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        if (off < bad_write_to && bad_write_from < off + len) return make_error(ENOSPC, "full");
        return test::MemNode::write_zeroes(off, len, flags);
    }
    uint64_t bad_from = UINT64_MAX, bad_to = 0, bad_write_from = UINT64_MAX, bad_write_to = 0;
};

std::vector<uint8_t> bytes(size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(1 + i * 31 + (i >> 10));
    return v;
}

class DdTest : public ::testing::TestWithParam<std::tuple<uint64_t, unsigned>> {};

TEST_P(DdTest, CopiesTheRangeAsIs) {
    auto [bs, in_flight] = GetParam();
    const size_t size = (5 << 20) + 1000;
    FlakyNode src(bytes(size));
    const uint64_t skip = bs;  // one block in
    FlakyNode dst(std::vector<uint8_t>(size - skip, 0xee));
    DdOptions o;
    o.in_start = skip;
    o.in_end = size;
    o.block = bs;
    o.in_flight = in_flight;
    ASSERT_TRUE(dd_copy(src, dst, o));
    EXPECT_TRUE(std::equal(dst.data_.begin(), dst.data_.end(), src.data_.begin() + static_cast<long>(skip)));
}

TEST_P(DdTest, StopsAtTheFirstUnreadableBlockWithEverythingBeforeWritten) {
    auto [bs, in_flight] = GetParam();
    const size_t size = 6 << 20;
    FlakyNode src(bytes(size));
    src.bad_from = (4 << 20) + 777;  // one bad byte
    src.bad_to = src.bad_from + 1;
    FlakyNode dst(std::vector<uint8_t>(size, 0xee));
    DdOptions o;
    o.in_end = size;
    o.block = bs;
    o.in_flight = in_flight;
    auto r = dd_copy(src, dst, o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "error while reading from input image file: Input/output error");
    uint64_t good = src.bad_from / bs * bs;  // blocks before the bad one
    EXPECT_TRUE(std::equal(dst.data_.begin(), dst.data_.begin() + static_cast<long>(good), src.data_.begin()));
    EXPECT_TRUE(std::all_of(dst.data_.begin() + static_cast<long>(good), dst.data_.end(),
                            [](uint8_t b) { return b == 0xee; }));
}

TEST_P(DdTest, StopsAtTheFirstUnwritableRequest) {
    auto [bs, in_flight] = GetParam();
    const size_t size = 6 << 20;
    FlakyNode src(bytes(size));
    FlakyNode dst(std::vector<uint8_t>(size, 0xee));
    dst.bad_write_from = 5 << 20;
    dst.bad_write_to = dst.bad_write_from + 1;
    DdOptions o;
    o.in_end = size;
    o.block = bs;
    o.in_flight = in_flight;
    auto r = dd_copy(src, dst, o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "error while writing to output image file: No space left on device");
    // Nothing past the failing request is written (it may be written up to
    // its start: the engine writes a request of several blocks at once).
    EXPECT_TRUE(std::all_of(dst.data_.begin() + (5 << 20), dst.data_.end(), [](uint8_t b) { return b == 0xee; }));
    EXPECT_TRUE(std::equal(dst.data_.begin(), dst.data_.begin() + (3 << 20), src.data_.begin()));
}

INSTANTIATE_TEST_SUITE_P(Sizes, DdTest,
                         ::testing::Combine(::testing::Values(512u, 1000u, 65536u, 3u << 20), ::testing::Values(1u, 16u)));

TEST(Dd, TailPastTheSourceEndReadsAsZeroes) {
    FlakyNode src(bytes(1000));
    FlakyNode dst(std::vector<uint8_t>(1024, 0xee));
    DdOptions o;
    o.in_end = 1024;  // the source in whole sectors, as the CLI sizes it
    o.block = 512;
    ASSERT_TRUE(dd_copy(src, dst, o));
    EXPECT_TRUE(std::equal(dst.data_.begin(), dst.data_.begin() + 1000, src.data_.begin()));
    EXPECT_TRUE(std::all_of(dst.data_.begin() + 1000, dst.data_.end(), [](uint8_t b) { return b == 0; }));
}

}  // namespace
}  // namespace qimg::engine
