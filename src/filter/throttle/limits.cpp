// Throttle-group properties and leaky-bucket arithmetic (see limits.h).
// Written from QEMU's documented behaviour (util/throttle.c,
// block/throttle-groups.c, qapi ThrottleLimits) so that the same
// configurations are refused with the same words.
#include "filter/throttle/limits.h"

#include <algorithm>
#include <climits>
#include <string_view>

#include <fmt/format.h>

#include "util/qjson.h"

namespace qimg::throttle {
namespace {

enum class Kind { Avg, Max, BurstLength, OpSize };

struct Member {
    Bucket bucket;
    Kind kind;
};

// "bps-read-max" -> bucket kBpsRead, kind Max.
bool parse_member(std::string_view name, Member &m) {
    if (name == "iops-size") {
        m = {kBpsTotal, Kind::OpSize};
        return true;
    }
    m.kind = Kind::Avg;
    if (name.ends_with("-max-length")) {
        m.kind = Kind::BurstLength;
        name.remove_suffix(11);
    } else if (name.ends_with("-max")) {
        m.kind = Kind::Max;
        name.remove_suffix(4);
    }
    static constexpr std::pair<std::string_view, Bucket> kNames[] = {
        {"bps-total", kBpsTotal}, {"bps-read", kBpsRead}, {"bps-write", kBpsWrite},
        {"iops-total", kOpsTotal}, {"iops-read", kOpsRead}, {"iops-write", kOpsWrite}};
    for (auto [n, b] : kNames) {
        if (n == name) {
            m.bucket = b;
            return true;
        }
    }
    return false;
}

// The ThrottleLimits members in schema order (as the QAPI visitor inserts
// them into the QDict that QEMU then iterates).
constexpr std::string_view kNames[] = {
    "iops-total", "iops-total-max", "iops-total-max-length", "iops-read", "iops-read-max", "iops-read-max-length",
    "iops-write", "iops-write-max", "iops-write-max-length", "bps-total", "bps-total-max", "bps-total-max-length",
    "bps-read", "bps-read-max", "bps-read-max-length", "bps-write", "bps-write-max", "bps-write-max-length",
    "iops-size"};

int64_t as_int(const std::string &decimal) { return std::stoll(decimal); }

// The setter of one x- property (throttle_group_set).
Result<void> set_x_property(Config &cfg, std::string_view name, int64_t value) {
    Member m;
    if (!parse_member(name.substr(2), m)) return make_error(EINVAL, fmt::format("Property '{}' not found", name));
    if (value < 0) return make_error(EINVAL, "Property values cannot be negative");
    BucketConfig &b = cfg.buckets[m.bucket];
    switch (m.kind) {
    case Kind::Avg: b.avg = uint64_t(value); break;
    case Kind::Max: b.max = uint64_t(value); break;
    case Kind::BurstLength:
        // QEMU's message has no space between "the" and "range".
        if (value > int64_t(UINT_MAX))
            return make_error(EINVAL, fmt::format("{} value must be in therange [0, {}]", name, UINT_MAX));
        b.burst_length = uint32_t(value);
        break;
    case Kind::OpSize: cfg.op_size = uint64_t(value); break;
    }
    return ok();
}

// The setter of "limits" (throttle_limits_to_config): rates and burst rates
// are taken as they are (a negative one wraps and fails validation), each
// burst length is checked in bucket order, then the whole is validated.
Result<void> set_limits(Config &cfg, const std::map<std::string, std::string> &props) {
    auto get = [&props](std::string_view name) -> const std::string * {
        auto it = props.find("limits." + std::string(name));
        return it == props.end() ? nullptr : &it->second;
    };
    static constexpr std::string_view kBucketNames[] = {"bps-total", "bps-read", "bps-write",
                                                        "iops-total", "iops-read", "iops-write"};
    for (int i = 0; i < kBucketCount; ++i) {
        if (auto *v = get(kBucketNames[i])) cfg.buckets[i].avg = uint64_t(as_int(*v));
    }
    for (int i = 0; i < kBucketCount; ++i) {
        if (auto *v = get(std::string(kBucketNames[i]) + "-max")) cfg.buckets[i].max = uint64_t(as_int(*v));
    }
    for (int i = 0; i < kBucketCount; ++i) {
        const std::string name = std::string(kBucketNames[i]) + "-max-length";
        const std::string *v = get(name);
        if (!v) continue;
        const int64_t n = as_int(*v);
        if (n > int64_t(UINT_MAX))
            return make_error(EINVAL, fmt::format("{} value must be in the range [0, {}]", name, UINT_MAX));
        cfg.buckets[i].burst_length = uint32_t(n);  // a negative one wraps, as in QEMU
    }
    if (auto *v = get("iops-size")) cfg.op_size = uint64_t(as_int(*v));
    return validate(cfg);
}

}  // namespace

Result<Config> config_from_properties(const std::map<std::string, std::string> &props) {
    // The properties are set in the order QEMU iterates its QDict of them.
    nlohmann::ordered_json present = nlohmann::ordered_json::object();
    if (props.count("limits")) present["limits"] = 0;
    for (std::string_view n : kNames) {
        const std::string x = "x-" + std::string(n);
        if (props.count(x)) present[x] = 0;
    }
    Config cfg;
    for (const std::string &key : qdict_order(present)) {
        if (key == "limits") QIMG_TRY(set_limits(cfg, props));
        else QIMG_TRY(set_x_property(cfg, key, as_int(props.at(key))));
    }
    return cfg;
}

Result<void> validate(const Config &cfg) {
    const auto &b = cfg.buckets;
    auto mixed = [&b](Bucket total, Bucket read, Bucket write, uint64_t BucketConfig::*field) {
        return b[total].*field && (b[read].*field || b[write].*field);
    };
    if (mixed(kBpsTotal, kBpsRead, kBpsWrite, &BucketConfig::avg) ||
        mixed(kOpsTotal, kOpsRead, kOpsWrite, &BucketConfig::avg) ||
        mixed(kBpsTotal, kBpsRead, kBpsWrite, &BucketConfig::max) ||
        mixed(kOpsTotal, kOpsRead, kOpsWrite, &BucketConfig::max))
        return make_error(EINVAL, "bps/iops/max total values and read/write values cannot be used at the same time");
    if (cfg.op_size && !b[kOpsTotal].avg && !b[kOpsRead].avg && !b[kOpsWrite].avg)
        return make_error(EINVAL, "iops size requires an iops value to be set");
    for (const BucketConfig &k : b) {
        if (k.avg > kValueMax || k.max > kValueMax)
            return make_error(EINVAL, fmt::format("bps/iops/max values must be within [0, {}]", kValueMax));
        if (!k.burst_length) return make_error(EINVAL, "the burst length cannot be 0");
        if (k.burst_length > 1 && !k.max) return make_error(EINVAL, "burst length set without burst rate");
        if (k.max && k.burst_length > kValueMax / k.max)
            return make_error(EINVAL, "burst length too high for this burst rate");
        if (k.max && !k.avg) return make_error(EINVAL, "bps_max/iops_max require corresponding bps/iops values");
        if (k.max && k.max < k.avg) return make_error(EINVAL, "bps_max/iops_max cannot be lower than bps/iops");
    }
    return ok();
}

int64_t bucket_wait_ns(const BucketConfig &b, double level, double burst_level) {
    if (!b.avg) return 0;
    // Without a burst rate short bursts of a tenth of a second's worth pass
    // unthrottled; with one, the whole burst (max for burst_length seconds)
    // does, but never faster than max in tenths of a second.
    const double bucket_size = b.max ? double(b.max) * b.burst_length : double(b.avg) / 10;
    const double burst_bucket_size = b.max ? double(b.max) / 10 : 0;
    if (double extra = level - bucket_size; extra > 0) return int64_t(extra * 1e9 / double(b.avg));
    if (b.burst_length > 1) {
        if (double extra = burst_level - burst_bucket_size; extra > 0) return int64_t(extra * 1e9 / double(b.max));
    }
    return 0;
}

void State::leak(int64_t now_ns) {
    const int64_t delta = now_ns - previous_leak_ns;
    previous_leak_ns = now_ns;
    if (delta <= 0) return;
    for (int i = 0; i < kBucketCount; ++i) {
        const BucketConfig &b = cfg.buckets[i];
        level[i] = std::max(level[i] - double(b.avg) * double(delta) / 1e9, 0.0);
        if (b.burst_length > 1) burst_level[i] = std::max(burst_level[i] - double(b.max) * double(delta) / 1e9, 0.0);
    }
}

int64_t State::wait_ns(bool is_write, int64_t now_ns) {
    leak(now_ns);
    const Bucket checked[] = {kBpsTotal, kOpsTotal, is_write ? kBpsWrite : kBpsRead, is_write ? kOpsWrite : kOpsRead};
    int64_t wait = 0;
    for (Bucket k : checked) wait = std::max(wait, bucket_wait_ns(cfg.buckets[k], level[k], burst_level[k]));
    return wait;
}

void State::account(bool is_write, uint64_t bytes) {
    const double units = cfg.op_size && bytes > cfg.op_size ? double(bytes) / double(cfg.op_size) : 1.0;
    auto add = [this](Bucket k, double n) {
        level[k] += n;
        if (cfg.buckets[k].burst_length > 1) burst_level[k] += n;
    };
    add(kBpsTotal, double(bytes));
    add(is_write ? kBpsWrite : kBpsRead, double(bytes));
    add(kOpsTotal, units);
    add(is_write ? kOpsWrite : kOpsRead, units);
}

}  // namespace qimg::throttle
