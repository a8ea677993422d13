// qcow2 space accounting (format/qcow2/measure.h) against numbers printed by
// the real `qemu-img measure -O qcow2 --size N` (QEMU 7.2).
#include <gtest/gtest.h>

#include "format/qcow2/measure.h"

namespace qimg::qcow2 {
namespace {

MeasureInfo measure_new(std::map<std::string, std::string> opts) {
    MeasureRequest req;
    req.options = std::move(opts);
    auto r = measure(req);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    return r ? *r : MeasureInfo{};
}

std::string measure_error(std::map<std::string, std::string> opts) {
    MeasureRequest req;
    req.options = std::move(opts);
    auto r = measure(req);
    EXPECT_FALSE(r.has_value());
    return r ? "" : r.error().message;
}

TEST(Qcow2Measure, DefaultsMatchQemu) {
    auto m = measure_new({{"size", "1073741824"}});
    EXPECT_EQ(m.required, 393216u);
    EXPECT_EQ(m.fully_allocated, 1074135040u);
    EXPECT_FALSE(m.has_bitmaps);
    m = measure_new({{"size", "2147483648"}});
    EXPECT_EQ(m.required, 589824u);
    EXPECT_EQ(m.fully_allocated, 2148073472u);
}

TEST(Qcow2Measure, OddAndZeroSizes) {
    auto m = measure_new({{"size", "513"}});
    EXPECT_EQ(m.required, 327680u);
    EXPECT_EQ(m.fully_allocated, 393216u);
    m = measure_new({{"size", "0"}});
    EXPECT_EQ(m.required, 196608u);
    EXPECT_EQ(m.fully_allocated, 196608u);
}

TEST(Qcow2Measure, ClusterSizeRefcountBitsExtendedL2) {
    auto m = measure_new({{"size", "1073741824"}, {"cluster_size", "2097152"}});
    EXPECT_EQ(m.required, 10485760u);
    EXPECT_EQ(m.fully_allocated, 1084227584u);
    m = measure_new({{"size", "1099511627776"}, {"cluster_size", "2097152"}, {"refcount_bits", "1"}});
    EXPECT_EQ(m.required, 12582912u);
    EXPECT_EQ(m.fully_allocated, 1099524210688u);
    m = measure_new({{"size", "10737418240"}, {"cluster_size", "512"}, {"refcount_bits", "64"}});
    EXPECT_EQ(m.required, 346283520u);
    EXPECT_EQ(m.fully_allocated, 11083701760u);
    m = measure_new({{"size", "1073741824"}, {"extended_l2", "on"}});
    EXPECT_EQ(m.required, 524288u);
    EXPECT_EQ(m.fully_allocated, 1074266112u);
}

TEST(Qcow2Measure, PreallocationCountsEveryCluster) {
    auto m = measure_new({{"size", "1073741824"}, {"preallocation", "full"}});
    EXPECT_EQ(m.required, m.fully_allocated);
    m = measure_new({{"size", "1073741824"}, {"preallocation", "metadata"}});
    EXPECT_EQ(m.required, 393216u);
}

TEST(Qcow2Measure, LuksPayload) {
    auto m = measure_new({{"size", "1073741824"}, {"encrypt.format", "luks"}, {"encrypt.key-secret", "s0"}});
    EXPECT_EQ(m.required, 2490368u);
    EXPECT_EQ(m.fully_allocated, 1076232192u);
    EXPECT_EQ(measure_error({{"size", "1"}, {"encrypt.format", "luks"}}),
              "Parameter 'encrypt.key-secret' is required for cipher");
}

TEST(Qcow2Measure, OptionErrorsUseQemuWording) {
    EXPECT_EQ(measure_error({{"size", "1"}, {"cluster_size", "3072"}}),
              "Cluster size must be a power of two between 512 and 2048k");
    EXPECT_EQ(measure_error({{"size", "1"}, {"cluster_size", "0"}}),
              "Cluster size must be a power of two between 512 and 2048k");
    EXPECT_EQ(measure_error({{"size", "1"}, {"cluster_size", "4096"}, {"extended_l2", "on"}}),
              "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
    EXPECT_EQ(measure_error({{"size", "1"}, {"compat", "0.9"}}), "Invalid compatibility level: '0.9'");
    EXPECT_EQ(measure_error({{"size", "1"}, {"refcount_bits", "3"}}),
              "Refcount width must be a power of two and may not exceed 64 bits");
    EXPECT_EQ(measure_error({{"size", "1"}, {"refcount_bits", "8"}, {"compat", "0.10"}}),
              "Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
              "compat=1.1 or greater)");
    EXPECT_EQ(measure_error({{"size", "1"}, {"preallocation", "xx"}}), "invalid parameter value: xx");
    EXPECT_EQ(measure_error({{"size", "1125899906842624"}, {"cluster_size", "512"}}),
              "The image size is too large (try using a larger cluster size)");
    EXPECT_EQ(measure_error({{"size", "9223372036854775807"}}),
              "The image size is too large (try using a larger cluster size)");
}

TEST(Qcow2Measure, RefcountMetadataFixedPoint) {
    // One refcount block (64k, 16-bit) counts 32768 clusters; one table
    // cluster holds 8192 block offsets.
    EXPECT_EQ(refcount_metadata_size(1, 65536, 4, false), 2u * 65536);
    uint64_t blocks = 0;
    EXPECT_EQ(refcount_metadata_size(32767, 65536, 4, false, &blocks), 3u * 65536);
    EXPECT_EQ(blocks, 2u);
}

}  // namespace
}  // namespace qimg::qcow2
