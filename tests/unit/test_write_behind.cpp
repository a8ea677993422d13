// Write-behind of the request pipeline (engine/pipeline.cpp), through a
// convert copy between nodes that record the page-cache advice they get:
// the bytes written and not yet written back never exceed the budget (plus
// the requests in flight), rounds really happen, the sources are dropped
// only behind what has been read, and nothing is advised with it off.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/copy.h"

namespace qimg::engine {
namespace {

constexpr uint64_t kRequest = 64 << 10;

// A target that models a page cache: written bytes are dirty until a round
// of StartWriteback + WaitWriteback + DropClean has covered them.
class CacheTarget final : public BlockNode {
public:
    explicit CacheTarget(size_t size) : data_(size) { read_only_ = false; }
    std::string_view driver_name() const override { return "cache-target"; }
    uint64_t length() const override { return data_.size(); }
    Result<void> read(uint64_t off, void *buf, size_t len) override {
        std::lock_guard lk(mu_);
        std::memcpy(buf, data_.data() + off, len);
        return ok();
    }
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        std::lock_guard lk(mu_);
        std::memcpy(data_.data() + off, buf, len);
        written_ += len;
        max_dirty = std::max(max_dirty, written_ - clean_);
        return ok();
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned) override {
        std::lock_guard lk(mu_);
        std::memset(data_.data() + off, 0, len);
        return ok();
    }
    bool layout_follows_write_order() const override { return false; }
    void cache_advice(CacheAdvice a, uint64_t, uint64_t len) override {
        // Writing back takes time, as on a disk: without back-pressure the
        // copy would run ahead of it.
        if (a == CacheAdvice::WaitWriteback) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        std::lock_guard lk(mu_);
        ++advice;
        if (len != 0) ++ranged;  // the target is always advised whole
        switch (a) {
        case CacheAdvice::StartWriteback: started_ = written_; break;
        case CacheAdvice::WaitWriteback: waited_ = started_; break;
        case CacheAdvice::DropClean:
            clean_ = waited_;
            ++rounds;
            break;
        case CacheAdvice::WillNeed: break;
        }
    }
    std::vector<uint8_t> data_;
    uint64_t max_dirty = 0;
    int advice = 0, ranged = 0, rounds = 0;

private:
    std::mutex mu_;
    uint64_t written_ = 0, started_ = 0, waited_ = 0, clean_ = 0;
};

// A source that records which bytes have been read and checks that every
// range it is told to drop was read completely before.
class DropSource final : public BlockNode {
public:
    explicit DropSource(std::vector<uint8_t> d) : data_(std::move(d)), read_(data_.size() / kRequest, false) {}
    std::string_view driver_name() const override { return "drop-source"; }
    uint64_t length() const override { return data_.size(); }
    Result<void> read(uint64_t off, void *buf, size_t len) override {
        std::lock_guard lk(mu_);
        std::memcpy(buf, data_.data() + off, len);
        for (uint64_t b = off / kRequest; b < (off + len) / kRequest; ++b) read_[b] = true;
        return ok();
    }
    void cache_advice(CacheAdvice a, uint64_t off, uint64_t len) override {
        std::lock_guard lk(mu_);
        if (a == CacheAdvice::WillNeed) {
            // Announced in plan order, ahead of the reads, never whole.
            if (len == 0 || off != prefetched_to) ++wrong;
            prefetched_to = off + len;
            return;
        }
        if (a != CacheAdvice::DropClean || len == 0) {
            ++wrong;
            return;
        }
        if (off != dropped_to) ++wrong;  // contiguous, in order
        dropped_to = off + len;
        for (uint64_t b = off / kRequest; b < (off + len + kRequest - 1) / kRequest; ++b)
            if (b >= read_.size() || !read_[b]) ++unread_dropped;
    }
    std::vector<uint8_t> data_;
    uint64_t dropped_to = 0, prefetched_to = 0;
    int wrong = 0, unread_dropped = 0;

private:
    std::mutex mu_;
    std::vector<bool> read_;
};

std::vector<uint8_t> bytes(size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(1 + i * 13 + (i >> 11));
    return v;
}

class WriteBehindTest : public ::testing::TestWithParam<std::tuple<bool, unsigned>> {};

TEST_P(WriteBehindTest, DirtyBytesStayWithinTheBudget) {
    auto [in_order, in_flight] = GetParam();
    constexpr size_t kSize = 32 << 20;
    constexpr uint64_t kBudget = 1 << 20;
    DropSource src(bytes(kSize));
    CacheTarget dst(kSize);
    CopyOptions o;
    o.in_flight = in_flight;
    o.in_order = in_order;
    o.buf_sectors = kRequest / kSectorSize;
    o.target_is_zero = true;
    o.write_behind = kBudget;
    ASSERT_TRUE(copy_images({&src}, dst, o));
    EXPECT_TRUE(dst.data_ == src.data_);
    // Each worker waits after its own write, so the requests in flight can
    // overshoot by one request each.
    EXPECT_LE(dst.max_dirty, kBudget + in_flight * kRequest);
    EXPECT_GE(dst.rounds, static_cast<int>(kSize / kBudget / 2));
    EXPECT_EQ(dst.ranged, 0);
    EXPECT_EQ(src.wrong, 0);
    EXPECT_EQ(src.unread_dropped, 0);
    EXPECT_GT(src.dropped_to, 0u);
    EXPECT_LE(src.dropped_to, kSize);
}

INSTANTIATE_TEST_SUITE_P(Modes, WriteBehindTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(1u, 4u, 16u)));

TEST(WriteBehind, OffMeansNoAdvice) {
    constexpr size_t kSize = 4 << 20;
    DropSource src(bytes(kSize));
    CacheTarget dst(kSize);
    CopyOptions o;
    o.buf_sectors = kRequest / kSectorSize;
    o.write_behind = 0;
    ASSERT_TRUE(copy_images({&src}, dst, o));
    EXPECT_TRUE(dst.data_ == src.data_);
    EXPECT_EQ(dst.advice, 0);
    EXPECT_EQ(src.dropped_to, 0u);
    EXPECT_EQ(src.wrong, 0);
    // Readahead is not write-behind: every byte was announced before it was read.
    EXPECT_EQ(src.prefetched_to, kSize);
}

// Two sources one after the other: each is dropped in its own offsets.
TEST(WriteBehind, ConcatenatedSourcesAreDroppedInTheirOwnOffsets) {
    constexpr size_t kPart = 8 << 20;
    DropSource a(bytes(kPart)), b(bytes(kPart));
    CacheTarget dst(2 * kPart);
    CopyOptions o;
    o.buf_sectors = kRequest / kSectorSize;
    o.target_is_zero = true;
    o.write_behind = 512 << 10;
    ASSERT_TRUE(copy_images({&a, &b}, dst, o));
    EXPECT_EQ(a.wrong + b.wrong, 0);
    EXPECT_EQ(a.unread_dropped + b.unread_dropped, 0);
    EXPECT_EQ(a.dropped_to, kPart);  // all of the first was behind the second's reads
    EXPECT_GT(b.dropped_to, 0u);
}

// The default budget (pipeline.h write_behind_budget): a quarter of the
// cgroup's room, half of MemAvailable, the smaller of the two when both
// are known, 16 MiB at least, 128 MiB when nothing was read.
TEST(WriteBehindBudget, Policy) {
    constexpr uint64_t MiB = 1ull << 20;
    auto budget = [](std::optional<uint64_t> room, std::optional<uint64_t> avail) {
        MemoryRoom m;
        m.cgroup_room = room;
        m.mem_available = avail;
        return write_behind_budget(m);
    };
    EXPECT_EQ(budget(std::nullopt, std::nullopt), 128 * MiB);
    EXPECT_EQ(budget(std::nullopt, 24 * 1024 * MiB), 12 * 1024 * MiB);  // an idle host: half
    EXPECT_EQ(budget(448 * MiB, 24 * 1024 * MiB), 112 * MiB);           // 512 MiB container: a quarter of its room
    EXPECT_EQ(budget(64 * 1024 * MiB, 1024 * MiB), 512 * MiB);          // a loose limit: the host's memory counts
    EXPECT_EQ(budget(512 * MiB, std::nullopt), 128 * MiB);
    EXPECT_EQ(budget(0, 24 * 1024 * MiB), 16 * MiB);                    // no room at all: the floor
    EXPECT_EQ(budget(std::nullopt, 10 * MiB), 16 * MiB);
    EXPECT_EQ(budget(std::nullopt, 1000 * MiB + 12345), 500 * MiB);     // whole MiB
}

}  // namespace
}  // namespace qimg::engine
