// Unit tests of the qed driver: images built in memory as qemu-img 7.2
// lays them out, written (unaligned, zero clusters, over a backing file)
// against a model and reopened, hostile headers and tables refused with
// QEMU's messages or read as errors, and the check's counts.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "format/qed/header.h"
#include "lib/mem_node.h"
#include "util/endian.h"

namespace qimg::qed {
namespace {

std::vector<uint8_t> make_image(uint64_t size, uint32_t cluster = 4096, uint32_t table = 2) {
    Header h;
    h.cluster_size = cluster;
    h.table_size = table;
    h.l1_table_offset = cluster;
    h.image_size = size;
    std::vector<uint8_t> img(cluster + h.table_bytes(), 0);
    HeaderBytes hb = encode_header(h);
    std::memcpy(img.data(), hb.data(), hb.size());
    return img;
}

Result<NodePtr> open_over(std::shared_ptr<test::MemNode> mem, bool rw = false) {
    return test::open_format_over("qed", std::move(mem), rw);
}
std::string open_error(std::vector<uint8_t> img) { return test::open_error("qed", std::move(img)); }

TEST(QedHeader, QemuChecksInQemusWords) {
    EXPECT_EQ(open_error(make_image(1 << 20)), "opened");
    auto img = make_image(1 << 20);
    img[0] = 'X';
    EXPECT_EQ(open_error(img), "Image not in QED format");
    img = make_image(1 << 20);
    put_le64(img.data() + 16, 0x18);
    EXPECT_EQ(open_error(img), "Unsupported QED features: 18");
    img = make_image(1 << 20);
    put_le32(img.data() + 4, 5000);
    EXPECT_EQ(open_error(img), "QED cluster size is invalid");
    img = make_image(1 << 20);
    put_le32(img.data() + 8, 3);
    EXPECT_EQ(open_error(img), "QED table size is invalid");
    img = make_image(1 << 20);
    put_le64(img.data() + 48, 1000);
    EXPECT_EQ(open_error(img), "QED image size is invalid");
    img = make_image(1 << 20);
    put_le64(img.data() + 40, 1 << 20);  // past the file
    EXPECT_EQ(open_error(img), "QED table offset is invalid");
    img = make_image(1 << 20);
    put_le32(img.data() + 8, 1);  // one-cluster tables never open (as in QEMU)
    EXPECT_EQ(open_error(img), "QED table offset is invalid");
    img = make_image(1 << 20);
    put_le32(img.data() + 12, 0x200000);  // the L1 table now lies in the header: checked first, as QEMU
    EXPECT_EQ(open_error(img), "QED table offset is invalid");
    img = make_image(1 << 20);
    put_le64(img.data() + 16, kFeatureBacking);
    put_le32(img.data() + 56, 4000);
    put_le32(img.data() + 60, 200);
    EXPECT_EQ(open_error(img), "QED backing filename offset is invalid");
}

TEST(QedNode, RandomWritesMatchAModelAndSurviveReopen) {
    const uint64_t size = 3 << 20;  // 4 KiB clusters, 1024-entry tables: 4 MiB per L2
    auto backing = std::make_shared<test::MemNode>(size - 8192);
    std::vector<uint8_t> model(size, 0);
    for (size_t i = 0; i < size - 8192; ++i) model[i] = uint8_t(i / 512 + 5);
    ASSERT_TRUE(backing->write(0, model.data(), size - 8192));
    auto mem = std::make_shared<test::MemNode>(make_image(size));
    uint32_t seed = 777;
    auto rnd = [&seed](uint32_t n) { seed = seed * 1103515245 + 12345; return (seed >> 8) % n; };
    for (int round = 0; round < 4; ++round) {
        auto n = open_over(mem, true);
        ASSERT_TRUE(n);
        (*n)->set_backing(backing);
        for (int i = 0; i < 40; ++i) {
            uint64_t off = rnd(uint32_t(size));
            size_t len = size_t(std::min<uint64_t>(rnd(200000) + 1, size - off));
            if (rnd(4) == 0) {
                ASSERT_TRUE((*n)->write_zeroes(off, len, 0));
                std::memset(model.data() + off, 0, len);
            } else {
                std::vector<uint8_t> d(len);
                for (auto &b : d) b = uint8_t(rnd(256));
                ASSERT_TRUE((*n)->write(off, d.data(), len));
                std::memcpy(model.data() + off, d.data(), len);
            }
        }
        std::vector<uint8_t> all(size);
        ASSERT_TRUE((*n)->read(0, all.data(), all.size()));
        ASSERT_EQ(all, model) << "round " << round;
        ASSERT_TRUE((*n)->flush());
        auto c = (*n)->check(CheckRepair::None);
        ASSERT_TRUE(c);
        EXPECT_EQ(c->corruptions, 0);
        EXPECT_EQ(c->leaks, 0);
    }
    auto n = open_over(mem);
    ASSERT_TRUE(n);
    (*n)->set_backing(backing);
    std::vector<uint8_t> all(size);
    ASSERT_TRUE((*n)->read(0, all.data(), all.size()));
    EXPECT_EQ(all, model);
}

TEST(QedNode, UnflushedAllocationsAreLeaksNotCorruption) {
    auto mem = std::make_shared<test::MemNode>(make_image(1 << 20));
    auto n = open_over(mem, true);
    ASSERT_TRUE(n);
    std::vector<uint8_t> d(10000, 0x42);
    ASSERT_TRUE((*n)->write(5000, d.data(), d.size()));
    // What a kill now leaves: the clusters written, nothing naming them.
    auto copy = std::make_shared<test::MemNode>(mem->bytes());
    auto c = open_over(copy, true);
    ASSERT_TRUE(c);
    auto rep = (*c)->check(CheckRepair::None);
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions, 0);
    EXPECT_GT(rep->leaks, 0);
    std::vector<uint8_t> back(d.size());
    ASSERT_TRUE((*c)->read(5000, back.data(), back.size()));
    EXPECT_EQ(back, std::vector<uint8_t>(d.size(), 0));
}

TEST(QedNode, InvalidEntriesAreCorruptionsAndRepaired) {
    auto img = make_image(1 << 20);
    // L1[0] -> L2 at 12288 (two clusters); entries: one past the file, one
    // unaligned, one inside the header.
    img.resize(12288 + 8192, 0);
    put_le64(img.data() + 4096, 12288);
    put_le64(img.data() + 12288, 1 << 30);
    put_le64(img.data() + 12288 + 8, 12288 + 100);
    put_le64(img.data() + 12288 + 16, 0);
    auto mem = std::make_shared<test::MemNode>(img);
    auto n = open_over(mem, true);
    ASSERT_TRUE(n);
    std::vector<uint8_t> buf(4096);
    EXPECT_FALSE((*n)->read(0, buf.data(), buf.size()));
    auto rep = (*n)->check(CheckRepair::None);
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions, 2);
    rep = (*n)->check(CheckRepair::All);
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions_fixed, 2);
    ASSERT_TRUE((*n)->read(0, buf.data(), buf.size()));
    rep = (*n)->check(CheckRepair::None);
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions, 0);
}

}  // namespace
}  // namespace qimg::qed
