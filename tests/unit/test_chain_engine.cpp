// Unit tests of the engine's commit and rebase (engine/commit.h,
// engine/rebase.h) and of the request pipeline's write conflicts
// (engine/pipeline.h): real qcow2 chains built by qemu-img/qemu-io, with
// data, zeroes and holes at odd offsets, copied with 1 and 16 requests in
// flight; the content is compared with what the chain read before.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "engine/commit.h"
#include "engine/rebase.h"
#include "qcow2_test_util.h"

namespace qimg::engine {
namespace {

using test::sh;
using test::TempDir;

class ChainEngine : public ::testing::TestWithParam<unsigned> {
public:
    void SetUp() override {
        if (!test::have_qemu()) GTEST_SKIP() << "needs qemu-img and qemu-io";
    }
    void run(const std::string &cmd) { ASSERT_EQ(sh("cd '" + d.path + "' && " + cmd), 0) << cmd; }
    TempDir d;
};

// base (qcow2, `base_opts`) <- mid <- top (4 KiB clusters), 6 MiB, writes
// that start and end off cluster and sector boundaries; file names start
// with `p`. (Built afresh rather than copied: cp punches holes that change
// the file-level status.)
void make_chain(ChainEngine &t, const std::string &base_opts, const std::string &p = "") {
    t.run("qemu-img create -q -f qcow2 " + base_opts + " " + p + "base.qcow2 6M");
    t.run("qemu-io -c 'write -P 0x11 0 6M' " + p + "base.qcow2 >/dev/null");
    t.run("qemu-img create -q -f qcow2 -b " + p + "base.qcow2 -F qcow2 " + p + "mid.qcow2");
    t.run("qemu-io -c 'write -P 0x22 100k 300k' -c 'write -z 1M 200k' -c 'write -P 0x23 3000k 1234567' " + p +
          "mid.qcow2 >/dev/null");
    t.run("qemu-img create -q -f qcow2 -b " + p + "mid.qcow2 -F qcow2 -o cluster_size=4k " + p + "top.qcow2");
    t.run("qemu-io -c 'write -P 0x33 5000 70000' -c 'write -z 1100k 3k' -c 'write -P 0x34 2047k 2050k'"
          " -c 'write -c -P 0x35 5M 64k' -c 'discard 4M 8k' -c 'write -P 0x36 6143k 1k' " + p + "top.qcow2 >/dev/null");
}

TEST_P(ChainEngine, CommitsThreeLayersIntoTheBase) {
    make_chain(*this, "-o cluster_size=2M");
    BlockOpener op;
    OpenOptions oo;
    oo.format = "qcow2";
    oo.flags.read_write = true;
    oo.flags.rw_backing_level = 2;
    auto top = op.open_image(d / "top.qcow2", oo);
    ASSERT_TRUE(top) << top.error().message;
    BlockNode *base = (*top)->backing()->backing();
    ASSERT_NE(base, nullptr);
    std::vector<uint8_t> want = test::read_all(**top);
    CommitOptions co;
    co.in_flight = GetParam();
    co.workers = 4;
    std::vector<float> seen;
    co.on_progress = [&](float p) { seen.push_back(p); };
    auto r = commit_image(**top, *base, co);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(test::read_all(*base), want);
    ASSERT_FALSE(seen.empty());
    EXPECT_FLOAT_EQ(seen.back(), 100.f);
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
    top->reset();
    std::string out;
    EXPECT_EQ(sh("qemu-img check '" + (d / "base.qcow2") + "'", &out), 0) << out;
    EXPECT_EQ(sh("qemu-img compare -f qcow2 -F qcow2 '" + (d / "base.qcow2") + "' '" + (d / "top.qcow2") + "'", &out),
              0)
        << out;
}

// The same progress, whatever the number of requests in flight.
TEST_P(ChainEngine, CommitProgressDoesNotDependOnConcurrency) {
    make_chain(*this, "");
    make_chain(*this, "", "one-");
    auto progress_of = [&](const std::string &name, unsigned in_flight) {
        BlockOpener op;
        OpenOptions oo;
        oo.format = "qcow2";
        oo.flags.read_write = true;
        oo.flags.rw_backing_level = 2;
        auto top = op.open_image(d / name, oo);
        EXPECT_TRUE(top);
        CommitOptions co;
        co.in_flight = in_flight;
        std::vector<float> seen;
        co.on_progress = [&](float p) { seen.push_back(p); };
        EXPECT_TRUE(commit_image(**top, *(*top)->backing()->backing(), co));
        return seen;
    };
    EXPECT_EQ(progress_of("top.qcow2", GetParam()), progress_of("one-top.qcow2", 1));
}

// Rebase top from old.qcow2 onto new.qcow2 (or onto nothing); returns the
// top image's bytes, after checking that it reads as before.
std::vector<uint8_t> rebase_and_check(TempDir &d, const std::string &new_name, unsigned in_flight,
                                      bool compress, std::vector<float> *steps = nullptr) {
    std::vector<uint8_t> want;
    {
        BlockOpener op;
        auto top = test::open_image(op, d / "top.qcow2", true);
        EXPECT_TRUE(top);
        if (!top) return {};
        want = test::read_all(**top);
        NodePtr nb;
        BlockOpener nop;
        if (!new_name.empty()) {
            auto n = test::open_image(nop, d / new_name, false, "");
            EXPECT_TRUE(n);
            nb = *n;
        }
        RebaseOptions ro;
        ro.in_flight = in_flight;
        ro.workers = 4;
        ro.compress = compress;
        ro.on_progress = [&](float s) {
            if (steps) steps->push_back(s);
        };
        auto r = rebase_preserve(**top, (*top)->backing(), nb.get(), nullptr, ro);
        EXPECT_TRUE(r) << r.error().message;
        EXPECT_TRUE((*top)->flush());
        EXPECT_TRUE((*top)->change_backing_file(new_name, new_name.empty() ? "" : "qcow2"));
    }
    BlockOpener op;
    auto top = test::open_image(op, d / "top.qcow2");
    EXPECT_TRUE(top);
    if (top) {
        EXPECT_EQ(test::read_all(**top), want);
    }
    std::string out;
    EXPECT_EQ(sh("qemu-img check '" + (d / "top.qcow2") + "'", &out), 0) << out;
    return test::read_file(d / "top.qcow2");
}

void make_rebase_top(ChainEngine &t, const std::string &name) {
    t.run("rm -f " + name + " && qemu-img create -q -f qcow2 -b old.qcow2 -F qcow2 " + name + " 6M");
    // One compressed cluster per write: qemu-io compresses the clusters of
    // one request in parallel, in no fixed order.
    t.run("qemu-io -c 'write -P 0x51 3333 4444' -c 'write -z 300k 64k' -c 'write -c -P 0x52 1M 64k'"
          " -c 'write -c -P 0x53 1088k 64k' " + name + " >/dev/null");
}

void make_rebase_chain(ChainEngine &t) {
    // old: 5000 KiB + 512 (its end is inside a cluster of top); new: 7 MiB.
    t.run("qemu-img create -q -f qcow2 old.qcow2 5120512");
    t.run("qemu-io -c 'write -P 0x41 0 5120512' -c 'write -z 2M 1M' old.qcow2 >/dev/null");
    t.run("qemu-img create -q -f qcow2 new.qcow2 7M");
    t.run("qemu-io -c 'write -P 0x41 0 1M' -c 'write -P 0x42 1000000 777' -c 'write -P 0x43 4M 3M' new.qcow2"
          " >/dev/null");
    make_rebase_top(t, "top.qcow2");
}

TEST_P(ChainEngine, RebaseKeepsContentAndQemuImgsLayout) {
    make_rebase_chain(*this);
    std::vector<float> steps, steps1;
    auto got = rebase_and_check(d, "new.qcow2", GetParam(), false, &steps);
    make_rebase_top(*this, "top.qcow2");
    auto one = rebase_and_check(d, "new.qcow2", 1, false, &steps1);
    // In-order writes: the very same file as with one request at a time.
    EXPECT_EQ(got, one);
    EXPECT_EQ(steps, steps1);
    // And the clusters qemu-img's sequential rebase allocates.
    make_rebase_top(*this, "ref.qcow2");
    run("qemu-img rebase -b new.qcow2 -F qcow2 ref.qcow2");
    std::string a, b;
    sh("qemu-img map --output=json '" + (d / "top.qcow2") + "'", &a);
    sh("qemu-img map --output=json '" + (d / "ref.qcow2") + "'", &b);
    EXPECT_EQ(a, b);
}

TEST_P(ChainEngine, RebaseOntoNothingFlattens) {
    make_rebase_chain(*this);
    rebase_and_check(d, "", GetParam(), false);
}

TEST_P(ChainEngine, RebaseCompressedWritesWholeClustersCompressed) {
    make_rebase_chain(*this);
    auto got = rebase_and_check(d, "new.qcow2", GetParam(), true);
    make_rebase_top(*this, "top.qcow2");
    EXPECT_EQ(got, rebase_and_check(d, "new.qcow2", 1, true));
    std::string out;
    sh("qemu-img check '" + (d / "top.qcow2") + "'", &out);
    EXPECT_NE(out.find("compressed clusters"), std::string::npos) << out;
    EXPECT_EQ(out.find(" 0.00% compressed"), std::string::npos) << out;
}

INSTANTIATE_TEST_SUITE_P(InFlight, ChainEngine, ::testing::Values(1u, 16u));

// --- write conflicts ---------------------------------------------------------

// A node that fails a test when two writes touch the same 64 KiB cluster at
// the same time (each write lingers a little to make overlaps likely).
class ConflictNode final : public BlockNode {
public:
    explicit ConflictNode(size_t size) : data_(size) { read_only_ = false; }
    std::string_view driver_name() const override { return "conflict"; }
    uint64_t length() const override { return data_.size(); }
    uint32_t cluster_size() const override { return kCluster; }
    Result<void> read(uint64_t off, void *buf, size_t len) override {
        std::lock_guard lk(mu_);
        std::memcpy(buf, data_.data() + off, len);
        return ok();
    }
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        enter(off, len);
        {
            std::lock_guard lk(mu_);
            std::memcpy(data_.data() + off, buf, len);
        }
        leave(off, len);
        return ok();
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned) override {
        enter(off, len);
        {
            std::lock_guard lk(mu_);
            std::memset(data_.data() + off, 0, len);
        }
        leave(off, len);
        return ok();
    }
    Result<void> flush() override { return ok(); }
    std::vector<uint8_t> data_;
    std::atomic<int> overlaps{0};
    bool linger = true;

private:
    static constexpr uint64_t kCluster = 65536;
    void enter(uint64_t off, uint64_t len) {
        {
            std::lock_guard lk(mu_);
            for (uint64_t c = off / kCluster; c <= (off + len - 1) / kCluster; ++c)
                if (busy_[c]++) ++overlaps;
        }
        if (linger) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    void leave(uint64_t off, uint64_t len) {
        std::lock_guard lk(mu_);
        for (uint64_t c = off / kCluster; c <= (off + len - 1) / kCluster; ++c) --busy_[c];
    }
    std::mutex mu_;
    std::map<uint64_t, int> busy_;
};

// A top layer whose status alternates data and zero extents of 5000 bytes.
class StripedTop final : public BlockNode {
public:
    StripedTop(NodePtr base, size_t size) : size_(size) { backing_ = std::move(base); }
    std::string_view driver_name() const override { return "striped"; }
    uint64_t length() const override { return size_; }
    Result<void> read(uint64_t off, void *buf, size_t len) override {
        auto *p = static_cast<uint8_t *>(buf);
        for (size_t i = 0; i < len; ++i) p[i] = (off + i) / kStripe % 2 ? 0 : static_cast<uint8_t>(1 + (off + i) % 251);
        return ok();
    }
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        BlockStatus s;
        bool zero = off / kStripe % 2;
        s.flags = kStatusAllocated | (zero ? kStatusZero : kStatusData);
        s.bytes = std::min(len, (off / kStripe + 1) * kStripe - off);
        return s;
    }

private:
    static constexpr uint64_t kStripe = 5000;
    size_t size_;
};

TEST(PipelineConflicts, RequestsSharingABaseClusterAreNotWrittenTogether) {
    auto base = std::make_shared<ConflictNode>(1 << 20);
    std::memset(base->data_.data(), 0xee, base->data_.size());
    StripedTop top(base, 1 << 20);
    CommitOptions co;
    co.in_flight = 16;
    co.workers = 8;
    co.chunk = 4096;
    ASSERT_TRUE(commit_image(top, *base, co));
    EXPECT_EQ(base->overlaps.load(), 0);
    std::vector<uint8_t> want(1 << 20);
    ASSERT_TRUE(top.read(0, want.data(), want.size()));
    EXPECT_TRUE(base->data_ == want);
}

// -r: the copy takes at least as long as its data at the rate limit (the
// limit is a lower bound on time, so this cannot fail on a slow machine).
TEST(CommitRate, RateLimitSpreadsTheCopy) {
    auto base = std::make_shared<ConflictNode>(4 << 20);
    base->linger = false;
    StripedTop top(base, 4 << 20);
    CommitOptions co;
    co.rate_limit = 4 << 20;  // 4 MiB/s; the data stripes are half of 4 MiB
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(commit_image(top, *base, co));
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(took.count(), 0.45);
}

}  // namespace
}  // namespace qimg::engine
