// Unit tests of the parallels driver: v1 and v2 images built in memory
// (tests/lib/mem_node.h) read and written, the in-use flag, check and its
// repairs, and hostile headers refused with qemu-img's messages.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "block/open.h"
#include "format/parallels/parallels.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg::parallels {
namespace {

// An image as qemu-img makes it (v2), or a v1 one with entries in sectors.
std::vector<uint8_t> make_image(uint64_t size, uint32_t cluster = 64 << 10, bool v1 = false) {
    uint32_t entries = uint32_t((size + cluster - 1) / cluster);
    uint64_t data_off = (kHeaderSize + 4 * entries + cluster - 1) / cluster * cluster;
    std::vector<uint8_t> img(data_off, 0);
    std::memcpy(img.data(), v1 ? kMagicV1 : kMagicV2, 16);
    put_le32(img.data() + hdr::version.offset, kVersion);
    put_le32(img.data() + hdr::tracks.offset, cluster / 512);
    put_le32(img.data() + hdr::bat_entries.offset, entries);
    put_le64(img.data() + hdr::nb_sectors.offset, size / 512);
    put_le32(img.data() + hdr::data_off.offset, uint32_t(data_off / 512));
    return img;
}

Result<NodePtr> open_over(std::shared_ptr<test::MemNode> mem, bool rw = false, bool check = false) {
    OpenRequest req;
    req.file = std::move(mem);
    req.flags.read_write = rw;
    req.flags.check = check;
    return find_driver("parallels")->open(req);
}

std::string open_error(std::vector<uint8_t> img) {
    auto r = open_over(std::make_shared<test::MemNode>(std::move(img)));
    return r ? std::string("opened") : r.error().message;
}

TEST(Parallels, WriteReopenAndTheInUseFlag) {
    for (bool v1 : {false, true}) {
        uint64_t size = 5 * 65536 + 4096;
        auto mem = std::make_shared<test::MemNode>(make_image(size, 65536, v1));
        std::vector<uint8_t> want(size, 0);
        {
            auto node = open_over(mem, true);
            ASSERT_TRUE(node) << node.error().message;
            EXPECT_EQ(le32(mem->bytes().data() + hdr::inuse.offset), kInUse);
            auto a = test::pattern(70000, 3);
            ASSERT_TRUE((*node)->write(65536 + 100, a.data(), a.size()));  // clusters 1 and 2
            std::copy(a.begin(), a.end(), want.begin() + 65536 + 100);
            EXPECT_EQ(test::read_all(**node), want);
        }
        auto bytes = mem->bytes();
        EXPECT_EQ(le32(bytes.data() + hdr::inuse.offset), 0u) << v1;
        EXPECT_EQ(bytes.size(), 65536u * 3);
        EXPECT_EQ(le32(bytes.data() + 64), 0u);
        EXPECT_EQ(le32(bytes.data() + 68), v1 ? 128u : 1u);
        EXPECT_EQ(le32(bytes.data() + 72), v1 ? 256u : 2u);
        auto again = open_over(std::make_shared<test::MemNode>(bytes));
        ASSERT_TRUE(again);
        EXPECT_EQ(test::read_all(**again), want);
        auto st = (*again)->block_status(0, size);
        ASSERT_TRUE(st);
        EXPECT_EQ(st->flags, 0u);
        EXPECT_EQ(st->bytes, 65536u);
        st = (*again)->block_status(65536, size);
        ASSERT_TRUE(st);
        EXPECT_EQ(st->flags, uint32_t(kStatusData | kStatusOffsetValid));
        EXPECT_EQ(st->bytes, 2 * 65536u);  // two clusters in a row
    }
}

TEST(Parallels, UncleanImageOpensForCheckOnly) {
    auto img = make_image(1 << 20);
    put_le32(img.data() + hdr::inuse.offset, kInUse);
    auto mem = std::make_shared<test::MemNode>(img);
    auto rw = open_over(mem, true);
    ASSERT_FALSE(rw);
    EXPECT_EQ(rw.error().message, "parallels: Image was not closed correctly; cannot be opened read/write");
    ASSERT_TRUE(open_over(mem, false));
    {
        auto node = open_over(mem, true, true);
        ASSERT_TRUE(node);
        testing::internal::CaptureStderr();
        auto rep = (*node)->check(CheckRepair::All);
        EXPECT_EQ(testing::internal::GetCapturedStderr(), "Repairing image was not closed correctly\n");
        ASSERT_TRUE(rep);
        EXPECT_EQ(rep->corruptions_fixed, 1);
    }
    EXPECT_EQ(le32(mem->bytes().data() + hdr::inuse.offset), 0u);
}

TEST(Parallels, CheckRepairsClustersPastTheEndAndLeaks) {
    auto img = make_image(4 * 65536);
    img.resize(img.size() + 3 * 65536, 0);
    put_le32(img.data() + 64, 1);
    put_le32(img.data() + 68, 100);  // outside
    auto mem = std::make_shared<test::MemNode>(img);
    auto node = open_over(mem, true, true);
    ASSERT_TRUE(node);
    testing::internal::CaptureStderr();
    auto rep = (*node)->check(CheckRepair::All);
    EXPECT_EQ(testing::internal::GetCapturedStderr(),
              "Repairing cluster 1 is outside image\nRepairing space leaked at the end of the image 131072\n");
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions_fixed, 1);
    EXPECT_EQ(rep->leaks_fixed, 2);
    EXPECT_EQ(rep->image_end_offset, 2 * 65536);
    EXPECT_EQ(le32(mem->bytes().data() + 68), 0u);
}

TEST(Parallels, HostileHeaders) {
    auto base = make_image(1 << 20);
    auto with = [&](auto f) {
        auto img = base;
        f(img.data());
        return open_error(img);
    };
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::version.offset, 3); }), "Image not in Parallels format");
    EXPECT_EQ(with([](uint8_t *h) { h[3] = 'x'; }), "Image not in Parallels format");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::tracks.offset, 0); }), "Invalid image: Zero sectors per track");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::tracks.offset, 0x7fffffff); }),
              "Invalid image: Too big cluster");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::bat_entries.offset, 0xffffffff); }), "Catalog too large");
    // A huge BAT the file does not hold: opens, reads zeroes, holds nothing.
    auto node = open_over(std::make_shared<test::MemNode>([&] {
        auto img = base;
        put_le32(img.data() + hdr::bat_entries.offset, 0x1fffffff);
        put_le64(img.data() + hdr::nb_sectors.offset, 1ull << 40);
        return img;
    }()));
    ASSERT_TRUE(node);
    uint8_t b[4] = {1, 1, 1, 1};
    ASSERT_TRUE((*node)->read((1ull << 49) - 4, b, 4));
    EXPECT_EQ(b[0], 0);
}

}  // namespace
}  // namespace qimg::parallels
