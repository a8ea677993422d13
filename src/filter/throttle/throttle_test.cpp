// Unit tests of the throttle filter: throttle-group property parsing and
// validation (qemu-img's messages), the leaky-bucket arithmetic with a
// hand-driven clock, and a loose timing sanity check of a group shared by
// several threads, through the driver over an in-memory node.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "block/driver.h"
#include "block/object_types.h"
#include "filter/throttle/group.h"
#include "filter/throttle/limits.h"
#include "lib/mem_node.h"
#include "util/keyval.h"

namespace qimg::throttle {
namespace {

using Props = std::map<std::string, std::string>;

std::string config_error(const Props &p) {
    auto c = config_from_properties(p);
    if (!c) return c.error().message;
    auto v = validate(*c);
    return v ? "" : v.error().message;
}

TEST(ThrottleLimits, XPropertiesSetTheirBuckets) {
    auto c = config_from_properties({{"x-bps-total", "1000"}, {"x-iops-read", "5"}, {"x-iops-read-max", "50"},
                                     {"x-iops-read-max-length", "3"}, {"x-iops-size", "4096"}});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->buckets[kBpsTotal].avg, 1000u);
    EXPECT_EQ(c->buckets[kOpsRead].avg, 5u);
    EXPECT_EQ(c->buckets[kOpsRead].max, 50u);
    EXPECT_EQ(c->buckets[kOpsRead].burst_length, 3u);
    EXPECT_EQ(c->buckets[kBpsWrite].burst_length, 1u);
    EXPECT_EQ(c->op_size, 4096u);
    EXPECT_TRUE(validate(*c));
}

TEST(ThrottleLimits, LimitsObjectSetsTheSameBuckets) {
    auto c = config_from_properties({{"limits", ""}, {"limits.bps-write", "7"}, {"limits.bps-write-max", "70"}});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->buckets[kBpsWrite].avg, 7u);
    EXPECT_EQ(c->buckets[kBpsWrite].max, 70u);
}

TEST(ThrottleLimits, QemuMessages) {
    EXPECT_EQ(config_error({{"x-bps-total", "-1"}}), "Property values cannot be negative");
    EXPECT_EQ(config_error({{"x-bps-total", "10"}, {"x-bps-total-max-length", "4294967296"}}),
              "x-bps-total-max-length value must be in therange [0, 4294967295]");
    EXPECT_EQ(config_error({{"limits", ""}, {"limits.bps-total", "10"}, {"limits.bps-total-max-length", "4294967296"}}),
              "bps-total-max-length value must be in the range [0, 4294967295]");
    EXPECT_EQ(config_error({{"x-bps-total", "10"}, {"x-bps-read", "5"}}),
              "bps/iops/max total values and read/write values cannot be used at the same time");
    EXPECT_EQ(config_error({{"limits", ""}, {"limits.iops-total", "10"}, {"limits.iops-write", "5"}}),
              "bps/iops/max total values and read/write values cannot be used at the same time");
    EXPECT_EQ(config_error({{"x-iops-size", "10"}}), "iops size requires an iops value to be set");
    EXPECT_EQ(config_error({{"x-bps-total", "1000000000000001"}}),
              "bps/iops/max values must be within [0, 1000000000000000]");
    // A negative value in "limits" wraps, as QEMU's unsigned fields do.
    EXPECT_EQ(config_error({{"limits", ""}, {"limits.bps-total", "-10"}}),
              "bps/iops/max values must be within [0, 1000000000000000]");
    EXPECT_EQ(config_error({{"limits", ""}, {"limits.iops-total-max-length", "-1"}}),
              "burst length set without burst rate");
    EXPECT_EQ(config_error({{"x-bps-total", "10"}, {"x-bps-total-max-length", "0"}}), "the burst length cannot be 0");
    EXPECT_EQ(config_error({{"x-bps-total", "10"}, {"x-bps-total-max-length", "5"}}),
              "burst length set without burst rate");
    EXPECT_EQ(config_error({{"x-bps-total", "10"}, {"x-bps-total-max", "1000000000000000"},
                            {"x-bps-total-max-length", "2"}}),
              "burst length too high for this burst rate");
    EXPECT_EQ(config_error({{"x-bps-total-max", "5"}}), "bps_max/iops_max require corresponding bps/iops values");
    EXPECT_EQ(config_error({{"x-bps-total", "10"}, {"x-bps-total-max", "5"}}),
              "bps_max/iops_max cannot be lower than bps/iops");
    EXPECT_EQ(config_error({}), "");
}

TEST(ThrottleLimits, ObjectTypesCheckMembersFirst) {
    auto o = parse_object("throttle-group,id=tg0,x-bps-total=abc");
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().message, "Parameter 'x-bps-total' expects integer");
    o = parse_object("throttle-group,id=tg0,limits.foo=1");
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().message, "Parameter 'limits.foo' is unexpected");
    o = parse_object("throttle-group,id=tg0,x-bps-total=0x10,limits.iops-total= 7");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->props.at("x-bps-total"), "16");
    EXPECT_EQ(o->props.at("limits.iops-total"), "7");
    o = parse_object(R"({"qom-type":"throttle-group","id":"tg0","x-bps-total":"10"})");
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().message, "Invalid parameter type for 'x-bps-total', expected: integer");
}

// Without a burst rate a tenth of a second's worth passes; the excess waits
// at the average rate.
TEST(ThrottleBuckets, WaitWithoutBurst) {
    BucketConfig b{1000, 0, 1};
    EXPECT_EQ(bucket_wait_ns(b, 100, 0), 0);
    EXPECT_EQ(bucket_wait_ns(b, 200, 0), 100'000'000);
    EXPECT_EQ(bucket_wait_ns(BucketConfig{}, 1e9, 0), 0);  // no limit
}

// With a burst rate, max * burst_length passes before the average applies,
// and the burst bucket keeps the rate below max.
TEST(ThrottleBuckets, WaitWithBurst) {
    BucketConfig b{100, 1000, 2};
    EXPECT_EQ(bucket_wait_ns(b, 1500, 50), 0);
    EXPECT_EQ(bucket_wait_ns(b, 2100, 50), 1'000'000'000);  // 100 over at 100/s
    EXPECT_EQ(bucket_wait_ns(b, 500, 300), 200'000'000);    // 200 over at 1000/s
}

TEST(ThrottleBuckets, AccountAndLeak) {
    State s;
    s.cfg.buckets[kBpsTotal] = {1000, 0, 1};
    s.cfg.buckets[kOpsWrite] = {10, 0, 1};
    s.cfg.op_size = 4096;
    s.previous_leak_ns = 0;
    EXPECT_EQ(s.wait_ns(true, 0), 0);
    s.account(true, 16384);  // four operations of 4096 bytes
    EXPECT_DOUBLE_EQ(s.level[kBpsTotal], 16384);
    EXPECT_DOUBLE_EQ(s.level[kOpsWrite], 4);
    EXPECT_DOUBLE_EQ(s.level[kOpsRead], 0);
    // (16384 - 100) bytes over at 1000/s.
    EXPECT_EQ(s.wait_ns(false, 0), 16'284'000'000);
    // Half a second later 500 bytes and 5 operations have leaked.
    s.wait_ns(true, 500'000'000);
    EXPECT_DOUBLE_EQ(s.level[kBpsTotal], 15884);
    EXPECT_DOUBLE_EQ(s.level[kOpsWrite], 0);
}

// Requests from several threads share one group: 1.2 MB at 1 MB/s take
// about a second. Only a loose lower bound, as a sanity check.
TEST(ThrottleGroup, ThreadsWaitForTheirTurn) {
    auto type = find_object_type("throttle-group");
    ASSERT_NE(type, nullptr);
    auto spec = parse_object("throttle-group,id=unit-tg,x-bps-total=1000000");
    ASSERT_TRUE(spec);
    ASSERT_TRUE(type->create(*spec, [] { return ok(); }));
    const Driver *d = find_driver("throttle");
    ASSERT_NE(d, nullptr);
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(std::vector<uint8_t>(1 << 20, 0x5a));
    req.options["throttle-group"] = "unit-tg";
    auto node = d->open(req);
    ASSERT_TRUE(node);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&node, t] {
            std::vector<uint8_t> buf(100000);
            for (int i = 0; i < 3; ++i) ASSERT_TRUE((*node)->read(uint64_t(t) * 200000, buf.data(), buf.size()));
        });
    }
    for (auto &th : threads) th.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(secs, 0.5);
    EXPECT_LT(secs, 30.0);
}

TEST(ThrottleGroup, OpenErrors) {
    const Driver *d = find_driver("throttle");
    ASSERT_NE(d, nullptr);
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(std::vector<uint8_t>(4096));
    auto r = d->open(req);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Please specify a throttle group");
    req.options["throttle-group"] = "nosuch";
    r = d->open(req);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Throttle group 'nosuch' does not exist");
}

}  // namespace
}  // namespace qimg::throttle
