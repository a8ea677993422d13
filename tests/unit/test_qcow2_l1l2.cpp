// The qcow2 cluster-mapping walker (format/qcow2/l1l2.h): compressed
// descriptors, entry decoding (standard and extended L2, data files) and the
// L1 -> L2 -> entry walk.
#include "format/qcow2/l1l2.h"

#include <gtest/gtest.h>

#include <map>

using namespace qimg;
using namespace qimg::qcow2;

// qcow2.txt "Compressed Clusters Descriptor", 64 KiB clusters: x = 54, so
// the offset takes bits 0..53 and the additional sectors bits 54..61.
TEST(Qcow2L1L2, CompressedDescriptorRoundTrips) {
    const uint32_t bits = 16;
    const uint64_t d = encode_compressed(0x12345, 1000, bits);
    EXPECT_TRUE(d & kOflagCompressed);
    EXPECT_EQ(d & ((uint64_t{1} << 54) - 1), 0x12345u);
    // The data starts in sector 0x91 and its last byte, 0x1272c, is in 0x93.
    EXPECT_EQ((d >> 54) & 0xff, 2u);
    const CompressedExtent c = decode_compressed(d, bits);
    EXPECT_EQ(c.offset, 0x12345u);
    // Whole sectors to the end of the last one the descriptor counts.
    EXPECT_EQ(c.bytes, 3 * 512 - (0x12345u & 511));
    EXPECT_GE(c.bytes, 1000u);
    // 512-byte clusters: x = 61, no room for additional sectors.
    const CompressedExtent small = decode_compressed(encode_compressed(0x200, 300, 9), 9);
    EXPECT_EQ(small.offset, 0x200u);
    EXPECT_EQ(small.bytes, 512u);
}

TEST(Qcow2L1L2, DecodesEntriesAsQemuGetClusterType) {
    const L2Layout std_l2(16, false, false);
    EXPECT_EQ(std_l2.entries(), 8192u);
    EXPECT_EQ(std_l2.decode(0, 0, 0).type, ClusterType::Unallocated);
    EXPECT_EQ(std_l2.decode(kOflagZero, 0, 0).type, ClusterType::ZeroPlain);
    L2Entry za = std_l2.decode(0x50000 | kOflagZero | kOflagCopied, 0, 7);
    EXPECT_EQ(za.type, ClusterType::ZeroAlloc);
    EXPECT_EQ(za.host, 0x50000u);
    EXPECT_EQ(za.bytes, 65536u);
    EXPECT_EQ(za.index, 7u);
    EXPECT_TRUE(za.copied());
    L2Entry n = std_l2.decode(0x70000, 0, 0);
    EXPECT_EQ(n.type, ClusterType::Normal);
    EXPECT_FALSE(n.copied());
    L2Entry c = std_l2.decode(encode_compressed(0x80200, 100, 16), 0, 0);
    EXPECT_EQ(c.type, ClusterType::Compressed);
    EXPECT_EQ(c.host, 0x80200u);
    EXPECT_EQ(c.bytes, 512u);
    // Unaligned host offsets are passed on for the caller to report.
    EXPECT_EQ(std_l2.decode(0x70200, 0, 0).host, 0x70200u);

    // Extended L2: the zero flag is not used, a host cluster is Normal.
    const L2Layout ext(16, true, false);
    EXPECT_EQ(ext.entries(), 4096u);
    EXPECT_EQ(ext.decode(0x70000 | kOflagZero, 0, 0).type, ClusterType::Normal);
    EXPECT_EQ(ext.decode(0, kL2BitmapAllZero, 0).bitmap, kL2BitmapAllZero);

    // An external data file's cluster 0 is mapped by COPIED alone.
    EXPECT_EQ(L2Layout(16, false, true).decode(kOflagCopied, 0, 0).type, ClusterType::Normal);
    EXPECT_EQ(L2Layout(16, false, false).decode(kOflagCopied, 0, 0).type, ClusterType::Unallocated);
}

TEST(Qcow2L1L2, WalksTablesAndEntriesInOrder) {
    const L2Layout ext(12, true, false);  // 4 KiB clusters, 256 entries of two words
    std::map<uint64_t, std::shared_ptr<L2Table>> tables;
    tables[0x3000] = std::make_shared<L2Table>(512, 0);
    tables[0x1000] = std::make_shared<L2Table>(512, 0);
    (*tables[0x3000])[2 * 5] = 0x9000 | kOflagCopied;
    (*tables[0x3000])[2 * 5 + 1] = kL2BitmapAllAllocated;
    (*tables[0x1000])[2 * 255] = encode_compressed(0xa100, 200, 12);
    const std::vector<uint64_t> l1 = {0x3000 | kOflagCopied, 0, kOflagCopied, 0x1000};
    std::vector<std::pair<uint64_t, uint64_t>> visited;  // (l1 index, l2 offset)
    std::vector<std::pair<uint64_t, ClusterType>> allocated;  // (entry index, type)
    auto r = for_each_l2_table(
        l1, [&](uint64_t, uint64_t off) -> Result<std::shared_ptr<L2Table>> { return tables.at(off); },
        [&](uint64_t i, uint64_t off, L2Table &t) -> Result<void> {
            visited.emplace_back(i, off);
            return ext.for_each_entry(t, [&](const L2Entry &e) {
                if (e.type != ClusterType::Unallocated) allocated.emplace_back(e.index, e.type);
            });
        });
    ASSERT_TRUE(r);
    // Entries without a table (0, or flags alone) are skipped.
    EXPECT_EQ(visited, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 0x3000}, {3, 0x1000}}));
    EXPECT_EQ(allocated, (std::vector<std::pair<uint64_t, ClusterType>>{{5, ClusterType::Normal},
                                                                         {255, ClusterType::Compressed}}));

    // A visitor returning false stops the walk before the next table loads.
    int loads = 0;
    r = for_each_l2_table(
        l1,
        [&](uint64_t, uint64_t off) -> Result<std::shared_ptr<L2Table>> {
            loads++;
            return tables.at(off);
        },
        [&](uint64_t, uint64_t, L2Table &) -> Result<bool> { return false; });
    ASSERT_TRUE(r);
    EXPECT_EQ(loads, 1);

    // The first error ends the walk and is returned.
    r = for_each_l2_table(
        l1, [&](uint64_t, uint64_t) -> Result<std::shared_ptr<L2Table>> { return make_error(EIO, "boom"); },
        [&](uint64_t, uint64_t, L2Table &) -> Result<void> { return ok(); });
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
}
