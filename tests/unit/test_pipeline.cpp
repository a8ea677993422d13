// Failures in the request pipeline (engine/pipeline.cpp): whichever worker
// meets its error first, the error reported is the one at the lowest plan
// position, and the requests planned before it are still read and written
// (qemu-img's convert reports "error while writing at byte 0" when every
// write fails, however the threads are scheduled).
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "engine/pipeline.h"

namespace qimg::engine {
namespace {

constexpr uint64_t kLen = 4096;

class ScriptedJob final : public PipelineJob {
public:
    uint64_t requests = 16;
    uint64_t slow_seq = 0;                      // this request's read takes a while
    uint64_t fail_read_from = UINT64_MAX;       // reads of requests at or after this fail
    uint64_t fail_read_at = UINT64_MAX;         // and this one's read fails (slowly when slow_seq)
    bool writes_fail = false;

    Result<bool> plan(PipelineRequest &r) override {
        if (next_ == requests) return false;
        r.offset = next_++ * kLen;
        r.length = kLen;
        return true;
    }
    Result<void> read(PipelineRequest &r) override {
        if (r.seq == slow_seq) std::this_thread::sleep_for(std::chrono::milliseconds(60));
        if (r.seq >= fail_read_from || r.seq == fail_read_at)
            return make_error(EIO, "read " + std::to_string(r.offset));
        return ok();
    }
    Result<void> write(PipelineRequest &r) override {
        if (writes_fail) return make_error(ENOSPC, "write " + std::to_string(r.offset));
        std::lock_guard lk(mu_);
        written.insert(r.seq);
        return ok();
    }
    std::set<uint64_t> written;

private:
    uint64_t next_ = 0;
    std::mutex mu_;
};

PipelineOptions options(bool in_order) {
    PipelineOptions o;
    o.in_flight = 8;
    o.in_order = in_order;
    o.buf_bytes = kLen;
    return o;
}

class PipelineFailure : public ::testing::TestWithParam<bool> {};

TEST_P(PipelineFailure, EveryWriteFailingReportsTheFirstRequest) {
    ScriptedJob job;
    job.writes_fail = true;
    auto r = run_pipeline(job, options(GetParam()));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ENOSPC);
    EXPECT_EQ(r.error().message, "write 0");
}

TEST_P(PipelineFailure, RequestsBeforeAFailedReadAreStillWritten) {
    ScriptedJob job;
    job.slow_seq = 1;
    job.fail_read_from = 3;
    auto r = run_pipeline(job, options(GetParam()));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "read 12288");
    EXPECT_EQ(job.written, (std::set<uint64_t>{0, 1, 2}));
}

TEST_P(PipelineFailure, AnEarlierFailureReplacesALaterOne) {
    ScriptedJob job;
    job.slow_seq = 2;
    job.fail_read_at = 2;  // fails last in time
    job.fail_read_from = 5;
    auto r = run_pipeline(job, options(GetParam()));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "read 8192");
    // In order, nothing after the failed request is written (out of order,
    // 3 and 4 may be written before 2 fails).
    if (GetParam()) {
        for (uint64_t s : job.written) EXPECT_LT(s, 2u);
    }
}

TEST_P(PipelineFailure, NoFailureWritesEverything) {
    ScriptedJob job;
    job.slow_seq = 3;
    ASSERT_TRUE(run_pipeline(job, options(GetParam())));
    EXPECT_EQ(job.written.size(), job.requests);
}

INSTANTIATE_TEST_SUITE_P(Order, PipelineFailure, ::testing::Values(true, false),
                         [](const auto &info) { return info.param ? "InOrder" : "OutOfOrder"; });

}  // namespace
}  // namespace qimg::engine
