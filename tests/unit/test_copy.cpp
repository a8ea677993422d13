// Unit tests of the copy engine (engine/copy.h): zero detection as qemu-img's
// is_allocated_sectors_min, and copies between in-memory nodes with holes,
// several sources, in-order and out-of-order writes.
#include <gtest/gtest.h>

#include <cstring>
#include <algorithm>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "engine/copy.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"

namespace qimg::engine {
namespace {

// The shared in-memory node (tests/lib/mem_node.h) sized as an image, whose
// block status reports every 64 KiB block that is all zero as a zero extent
// (so the engine skips it).
class MemNode final : public test::MemNode {
public:
    explicit MemNode(size_t size) : test::MemNode(size, /*fixed_size=*/true) {}
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        auto lk = lock();
        constexpr uint64_t kBlock = 65536;
        uint64_t end = std::min<uint64_t>(off + len, (off / kBlock + 1) * kBlock);
        bool zero = true;
        for (uint64_t i = off; i < end && zero; ++i) zero = data_[i] == 0;
        BlockStatus s;
        s.flags = (zero ? kStatusZero : kStatusData) | kStatusAllocated;
        s.bytes = end - off;
        return s;
    }
};

using test::pattern;

TEST(AllocatedSectorsMin, AllZeroAndAllData) {
    std::vector<uint8_t> z(8 * 512, 0), d(8 * 512, 1);
    int64_t n;
    EXPECT_FALSE(allocated_sectors_min(z.data(), 8, &n, 8, 0, 8));
    EXPECT_EQ(n, 8);
    EXPECT_TRUE(allocated_sectors_min(d.data(), 8, &n, 8, 0, 8));
    EXPECT_EQ(n, 8);
}

TEST(AllocatedSectorsMin, ShortZeroRunInsideDataStaysData) {
    std::vector<uint8_t> b(32 * 512, 1);
    std::memset(b.data() + 8 * 512, 0, 4 * 512);  // 4 zero sectors < min 8
    int64_t n;
    EXPECT_TRUE(allocated_sectors_min(b.data(), 32, &n, 8, 0, 8));
    EXPECT_EQ(n, 32);
}

TEST(AllocatedSectorsMin, LongZeroRunSplits) {
    std::vector<uint8_t> b(32 * 512, 1);
    std::memset(b.data() + 8 * 512, 0, 16 * 512);
    int64_t n;
    EXPECT_TRUE(allocated_sectors_min(b.data(), 32, &n, 8, 0, 8));
    EXPECT_EQ(n, 8);
    EXPECT_FALSE(allocated_sectors_min(b.data() + 8 * 512, 24, &n, 8, 8, 8));
    EXPECT_EQ(n, 16);
}

class CopyTest : public ::testing::TestWithParam<std::tuple<bool, unsigned, uint64_t>> {};

TEST_P(CopyTest, CopiesConcatenatedSourcesWithHoles) {
    auto [in_order, in_flight, min_sparse] = GetParam();
    MemNode a(3 << 20), b(1 << 20);
    auto pa = pattern(1 << 20, 3);
    std::memcpy(a.data_.data() + (1 << 20), pa.data(), pa.size());  // [1M, 2M) data, rest zero
    auto pb = pattern(4096, 9);
    std::memcpy(b.data_.data() + 8192, pb.data(), pb.size());
    MemNode t(4 << 20);
    std::memset(t.data_.data(), 0xee, t.data_.size());  // stale content must be zeroed
    CopyOptions o;
    o.in_order = in_order;
    o.in_flight = in_flight;
    o.min_sparse = min_sparse;
    std::vector<float> seen;
    o.on_progress = [&](float p) { seen.push_back(p); };
    ASSERT_TRUE(copy_images({&a, &b}, t, o));
    std::vector<uint8_t> want = a.data_;
    want.insert(want.end(), b.data_.begin(), b.data_.end());
    EXPECT_TRUE(t.data_ == want);
    ASSERT_FALSE(seen.empty());
    EXPECT_FLOAT_EQ(seen.back(), 100.0f);
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
}

INSTANTIATE_TEST_SUITE_P(Modes, CopyTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(1u, 4u, 16u),
                                            ::testing::Values(uint64_t{0}, uint64_t{8})));

TEST(Copy, KnownZeroTargetGetsNoZeroWrites) {
    MemNode a(1 << 20), t(1 << 20);
    a.data_[70000] = 1;
    CopyOptions o;
    o.target_is_zero = true;
    ASSERT_TRUE(copy_images({&a}, t, o));
    EXPECT_EQ(t.zero_writes, 0);
    EXPECT_EQ(t.data_[70000], 1);
}

TEST(Copy, WriteErrorIsReportedWithItsOffset) {
    MemNode a(1 << 20);
    a.data_[0] = 1;
    MemNode t(4096);  // too small: the write fails
    CopyOptions o;
    auto r = copy_images({&a}, t, o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message.rfind("error while writing at byte 0: ", 0), 0u) << r.error().message;
}


// A target that "compresses" by run-length marking: it records which
// threads compressed and the order of compressed writes.
class CompressingNode final : public BlockNode {
public:
    explicit CompressingNode(size_t size) : data_(size) { read_only_ = false; }
    std::string_view driver_name() const override { return "cmem"; }
    uint64_t length() const override { return data_.size(); }
    uint32_t compressed_cluster_size() const override { return 4096; }
    Result<void> read(uint64_t off, void *buf, size_t len) override {
        std::memcpy(buf, data_.data() + off, len);
        return ok();
    }
    Result<std::vector<uint8_t>> compress_cluster(const void *buf, size_t len,
                                                  const CompressOptions &) const override {
        std::lock_guard lk(mu_);
        threads.insert(std::this_thread::get_id());
        const uint8_t *p = static_cast<const uint8_t *>(buf);
        return std::vector<uint8_t>(p, p + len);  // "compressed" = a copy
    }
    Result<void> write_compressed_data(uint64_t off, std::span<const uint8_t> d, const void *, size_t len) override {
        std::lock_guard lk(mu_);
        if (d.size() != len) return make_error(EIO, "bad length");
        std::memcpy(data_.data() + off, d.data(), len);
        order.push_back(off);
        return ok();
    }
    Result<void> write_compressed(uint64_t, const void *, size_t len) override {
        if (len == 0) ++eof_signals;
        return ok();
    }
    std::vector<uint8_t> data_;
    std::vector<uint64_t> order;
    mutable std::set<std::thread::id> threads;
    int eof_signals = 0;

private:
    mutable std::mutex mu_;
};

TEST(Copy, CompressedWritesWholeClustersInOrderAndSkipsZeroClusters) {
    MemNode a(1 << 20);
    auto p = pattern(a.data_.size(), 5);
    a.data_ = p;
    std::memset(a.data_.data() + 65536, 0, 65536);  // a zero block (status says zero)
    std::memset(a.data_.data() + 200 * 1024, 0, 4096);  // a zero cluster inside data
    CompressingNode t(a.data_.size());
    CopyOptions o;
    o.compressed = true;
    o.cluster_sectors = 4096 / kSectorSize;
    o.target_is_zero = true;
    o.workers = 2;
    ASSERT_TRUE(copy_images({&a}, t, o));
    EXPECT_EQ(t.data_, a.data_);
    EXPECT_EQ(t.eof_signals, 1);
    EXPECT_TRUE(std::is_sorted(t.order.begin(), t.order.end()));
    EXPECT_EQ(t.order.size(), (1u << 20) / 4096 - 16 - 1);  // zero block and zero cluster not written
}

TEST(Copy, CompressedNeedsAClusterSize) {
    MemNode a(65536);
    CompressingNode t(65536);
    CopyOptions o;
    o.compressed = true;
    EXPECT_FALSE(copy_images({&a}, t, o));
}

}  // namespace
}  // namespace qimg::engine
