// Throttling arithmetic of QEMU's throttle-group objects (docs/throttle.txt
// in QEMU's tree): six leaky buckets (bytes and operations; total, read,
// write), each with an average rate, an optional burst rate and burst
// length; the property parsing and validation of `--object throttle-group`
// with qemu-img's messages. No clocks and no locking here: callers pass the
// time in nanoseconds and guard a State themselves (group.h).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "util/result.h"

namespace qimg::throttle {

enum Bucket { kBpsTotal, kBpsRead, kBpsWrite, kOpsTotal, kOpsRead, kOpsWrite, kBucketCount };

// The largest rate or burst rate (THROTTLE_VALUE_MAX).
constexpr uint64_t kValueMax = 1000000000000000ULL;

struct BucketConfig {
    uint64_t avg = 0;           // units per second; 0: no limit
    uint64_t max = 0;           // burst rate; 0: bursts of avg/10
    uint32_t burst_length = 1;  // seconds a burst at `max` may last
};

struct Config {
    std::array<BucketConfig, kBucketCount> buckets{};
    uint64_t op_size = 0;  // iops-size: a larger request counts size/op_size operations
};

// Applies the properties of a throttle-group object (ObjectSpec::props as
// util/keyval.cpp keeps them: "x-<name>", "limits" and "limits.<name>", in
// decimal) in the order QEMU sets them, with its setters' checks
// ("Property values cannot be negative", burst lengths at most UINT_MAX,
// and the limits object validated as a whole when it is set).
Result<Config> config_from_properties(const std::map<std::string, std::string> &props);

// throttle_is_valid(): the checks of a complete configuration.
Result<void> validate(const Config &cfg);

// The fill levels of the buckets of one group.
struct State {
    Config cfg;
    std::array<double, kBucketCount> level{}, burst_level{};
    int64_t previous_leak_ns = 0;

    // Leaks every bucket for the time since the previous leak.
    void leak(int64_t now_ns);
    // Nanoseconds a request must wait before it may start (0: now), after
    // leaking up to `now_ns`.
    int64_t wait_ns(bool is_write, int64_t now_ns);
    // Counts a request that starts.
    void account(bool is_write, uint64_t bytes);
};

// One bucket's wait (throttle_compute_wait), exposed for the unit tests.
int64_t bucket_wait_ns(const BucketConfig &b, double level, double burst_level);

}  // namespace qimg::throttle
