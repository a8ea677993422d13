// Unit tests of the parallels driver: v1 and v2 images built in memory
// (tests/lib/mem_node.h) read and written, the in-use flag, check and its
// repairs, and hostile headers refused with qemu-img's messages.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "block/open.h"
#include "crypto/sector_cipher.h"
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

// An image with a Format Extension cluster after its data area holding
// `features` (resealed with its MD5 unless `bad_sum`).
std::vector<uint8_t> with_extension(std::vector<uint8_t> img, std::vector<uint8_t> features, bool bad_sum = false,
                                    uint32_t cluster = 64 << 10) {
    uint64_t at = img.size();
    img.resize(at + cluster, 0);
    put_le64(img.data() + hdr::ext_off.offset, at / 512);
    put_le64(img.data() + at, 0xab234cef23dcea87ull);
    std::copy(features.begin(), features.end(), img.begin() + int64_t(at) + 24);
    auto sum = crypto::hash_bytes("md5", std::string_view(reinterpret_cast<const char *>(img.data()) + at + 24, cluster - 24));
    EXPECT_TRUE(sum);
    std::memcpy(img.data() + at + 8, sum->data(), 16);
    if (bad_sum) img[at + 8] ^= 1;
    return img;
}

std::vector<uint8_t> feature(uint64_t magic, std::vector<uint8_t> data, uint64_t flags = 0) {
    std::vector<uint8_t> f(24 + (data.size() + 7) / 8 * 8, 0);
    put_le64(f.data(), magic);
    put_le64(f.data() + 8, flags);
    put_le32(f.data() + 16, uint32_t(data.size()));
    std::copy(data.begin(), data.end(), f.begin() + 24);  // (memcpy from an empty vector's null data is UB)
    return f;
}

// A dirty bitmap feature's data for a disk of `sectors` sectors.
std::vector<uint8_t> bitmap(uint64_t sectors, uint32_t gran_sectors, std::vector<uint64_t> l1, uint8_t id = 7) {
    std::vector<uint8_t> d(32 + 8 * l1.size(), 0);
    put_le64(d.data(), sectors);
    std::memset(d.data() + 8, id, 16);
    put_le32(d.data() + 24, gran_sectors);
    put_le32(d.data() + 28, uint32_t(l1.size()));
    for (size_t i = 0; i < l1.size(); ++i) put_le64(d.data() + 32 + 8 * i, l1[i]);
    return d;
}

constexpr uint64_t kBitmapMagic = 0x20385fae252cb34aull;

TEST(Parallels, FormatExtensionCheckedReadOnlyIgnoredReadWrite) {
    // 4 MiB in 64 KiB granules (128 sectors): 64 bits, one word, one L1 entry.
    const uint64_t size = 4 << 20;
    auto cat = [](std::vector<uint8_t> a, const std::vector<uint8_t> &b) {
        a.insert(a.end(), b.begin(), b.end());
        return a;
    };
    auto good = cat(feature(kBitmapMagic, bitmap(size / 512, 128, {1})), feature(0, {}));
    EXPECT_EQ(open_error(with_extension(make_image(size), good)), "opened");
    EXPECT_EQ(open_error(with_extension(make_image(size), good, true)),
              "Wrong checksum in Format Extension header. Format extension is corrupted.");
    // Read-write, QEMU ignores the extension (with a warning): so does qimg.
    auto rw = open_over(std::make_shared<test::MemNode>(with_extension(make_image(size), good, true)), true);
    EXPECT_TRUE(rw);
    EXPECT_EQ(open_error(with_extension(make_image(size), feature(0x77, {}))), "Unknown feature: 0x77");
    EXPECT_EQ(open_error(with_extension(make_image(size), feature(0, {}, 1))),
              "Flags for extension feature are unsupported");
    // The same bitmap id twice.
    auto twice = cat(cat(feature(kBitmapMagic, bitmap(size / 512, 128, {0})), feature(kBitmapMagic, bitmap(size / 512, 128, {0}))),
                     feature(0, {}));
    EXPECT_EQ(open_error(with_extension(make_image(size), twice)),
              "Bitmap already exists: 07070707-0707-0707-0707-070707070707");
    // Granularities QEMU aborts on.
    for (uint32_t g : {0u, 3u})
        EXPECT_NE(open_error(with_extension(make_image(size), cat(feature(kBitmapMagic, bitmap(size / 512, g, {0})),
                                                                   feature(0, {})))).find("granularity"),
                  std::string::npos);
    EXPECT_EQ(open_error(with_extension(make_image(size), cat(feature(kBitmapMagic, bitmap(size / 512, 128, {1, 1})),
                                                               feature(0, {})))),
              "Bitmap table size 2 does not correspond to bitmap size and cluster size. Expected 1");
    // No end marker: bitmap features to the end of the cluster. QEMU's walk
    // forgets their data when it counts what is left and reads past its
    // buffer; qimg stops at the cluster's end.
    std::vector<uint8_t> run;
    for (int i = 0; run.size() + 64 < (64 << 10) - 24; ++i)
        run = cat(run, feature(kBitmapMagic, bitmap(size / 512, 128, {0}, uint8_t(i))));
    EXPECT_NE(open_error(with_extension(make_image(size), run)), "opened");
}

TEST(Parallels, FormatExtensionOfAHugeClusterIsNotRead) {
    // 256 MiB clusters: the extension cluster is refused, not allocated.
    auto img = make_image(1 << 20, 1 << 20);
    put_le32(img.data() + hdr::tracks.offset, (256u << 20) / 512);
    put_le64(img.data() + hdr::ext_off.offset, 2048);
    EXPECT_EQ(open_error(img), "Format Extension cluster of 268435456 bytes is not supported");
    put_le64(img.data() + hdr::ext_off.offset, UINT64_MAX / 256);
    EXPECT_EQ(open_error(img), "Failed to read Format Extension cluster: Invalid argument");
}

}  // namespace
}  // namespace qimg::parallels
