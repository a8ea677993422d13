// Unit tests of the bochs driver over an in-memory file: images built here
// (qemu-img cannot create bochs images), both header versions, sector
// bitmaps, unallocated extents, what lies past the end of the file, and
// every header check with QEMU's message.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "block/driver.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg {
namespace {

struct Image {
    uint32_t version = 0x00020000;
    uint32_t header = 512, catalog = 8, bitmap = 1, extent = 4096;
    uint64_t disk = 8 * 4096;
    std::map<uint32_t, uint32_t> slots;                  // extent index -> slot
    std::map<uint32_t, std::vector<uint8_t>> bitmaps;    // slot -> bitmap bytes
    std::map<uint32_t, std::vector<uint8_t>> data;       // slot -> extent bytes

    std::vector<uint8_t> bytes() const {
        std::vector<uint8_t> b(512);
        std::memcpy(b.data(), "Bochs Virtual HD Image", 22);
        std::memcpy(b.data() + 32, "Redolog", 7);
        std::memcpy(b.data() + 48, "Growing", 7);
        put_le32(b.data() + 64, version);
        put_le32(b.data() + 68, header);
        put_le32(b.data() + 72, catalog);
        put_le32(b.data() + 76, bitmap);
        put_le32(b.data() + 80, extent);
        put_le64(b.data() + (version == 0x00010000 ? 84 : 88), disk);
        b.resize(header + size_t{catalog} * 4, 0);
        for (uint32_t i = 0; i < catalog; ++i) {
            auto it = slots.find(i);
            put_le32(b.data() + header + i * 4, it == slots.end() ? 0xffffffff : it->second);
        }
        uint64_t bitmap_bytes = (1 + (bitmap - 1) / 512) * 512ull;
        uint64_t slot_bytes = bitmap_bytes + extent;
        for (auto &[slot, bits] : bitmaps) {
            uint64_t at = header + catalog * 4ull + slot * slot_bytes;
            auto d = data.find(slot);
            uint64_t end = at + std::max<uint64_t>(slot_bytes, bitmap_bytes + (d == data.end() ? 0 : d->second.size()));
            if (b.size() < end) b.resize(end, 0);
            std::copy(bits.begin(), bits.end(), b.begin() + at);
            if (d != data.end()) std::copy(d->second.begin(), d->second.end(), b.begin() + at + bitmap_bytes);
        }
        return b;
    }
};

Result<NodePtr> open_over(std::vector<uint8_t> bytes) {
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(std::move(bytes));
    return find_driver("bochs")->open(req);
}

std::string open_error(const Image &im) {
    auto n = open_over(im.bytes());
    return n ? "" : n.error().message;
}

// Extent 1 in slot 0 with sectors 0, 2-7 present; extent 3 in slot 1, full.
Image sample(uint32_t version) {
    Image im;
    im.version = version;
    im.slots = {{1, 0}, {3, 1}};
    im.bitmaps[0] = {0xfd};
    im.bitmaps[1] = {0xff};
    im.data[0] = test::pattern(4096, 0x31);
    im.data[1] = test::pattern(4096, 0x57);
    return im;
}

std::vector<uint8_t> expected(const Image &im) {
    std::vector<uint8_t> want(im.disk, 0);
    auto d0 = im.data.at(0);
    for (size_t s = 0; s < 8; ++s)
        if (s != 1) std::copy(d0.begin() + s * 512, d0.begin() + (s + 1) * 512, want.begin() + 4096 + s * 512);
    auto d1 = im.data.at(1);
    std::copy(d1.begin(), d1.end(), want.begin() + 3 * 4096);
    return want;
}

TEST(Bochs, ReadsBothHeaderVersions) {
    for (uint32_t v : {0x00020000u, 0x00010000u}) {
        Image im = sample(v);
        auto node = open_over(im.bytes());
        ASSERT_TRUE(node) << node.error().message;
        EXPECT_EQ((*node)->length(), im.disk);
        EXPECT_EQ(test::read_all(**node), expected(im)) << std::hex << v;
    }
}

TEST(Bochs, UnalignedReadsAcrossExtentsAndBitmapRuns) {
    Image im = sample(0x00020000);
    auto node = open_over(im.bytes());
    ASSERT_TRUE(node);
    auto want = expected(im);
    for (auto [off, len] : {std::pair<uint64_t, size_t>{4000, 1200}, {4096 + 500, 30}, {4096 + 511, 2},
                            {3 * 4096 - 7, 4096 + 7}, {0, 32768}, {32767, 1}}) {
        std::vector<uint8_t> buf(len);
        ASSERT_TRUE((*node)->read(off, buf.data(), len)) << off;
        EXPECT_TRUE(std::equal(buf.begin(), buf.end(), want.begin() + off)) << off << "+" << len;
    }
    std::vector<uint8_t> buf(2);
    EXPECT_FALSE((*node)->read(32767, buf.data(), 2));
}

TEST(Bochs, SizeIsWholeSectorsAndSlotsPastTheFileReadAsZeroes) {
    Image im = sample(0x00020000);
    im.disk = 8 * 4096 - 100;  // truncated to whole sectors, as QEMU
    im.slots[5] = 40;          // a slot far past the end of the file
    auto bytes = im.bytes();
    auto node = open_over(bytes);
    ASSERT_TRUE(node);
    EXPECT_EQ((*node)->length(), 8 * 4096u - 512);
    std::vector<uint8_t> buf(4096, 0xee);
    ASSERT_TRUE((*node)->read(5 * 4096, buf.data(), buf.size()));
    EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0));
}

TEST(Bochs, SlotThatWrapsIsAnError) {
    Image im = sample(0x00020000);
    im.bitmap = 0;  // 2^23 bitmap blocks per slot (QEMU's 32-bit arithmetic)
    im.bitmaps.clear();
    im.data.clear();
    im.slots = {{0, 0xfffffffe}};
    auto node = open_over(im.bytes());
    ASSERT_TRUE(node) << node.error().message;
    std::vector<uint8_t> buf(512);
    EXPECT_FALSE((*node)->read(0, buf.data(), buf.size()));
}

TEST(Bochs, HeaderChecksWithQemuMessages) {
    Image im = sample(0x00020000);
    EXPECT_EQ(open_error(im), "");
    Image bad = im;
    bad.version = 0x00030000;
    EXPECT_EQ(open_error(bad), "Image not in Bochs format");
    bad = im;
    bad.catalog = 0x100001;
    EXPECT_EQ(open_error(bad), "Catalog size is too large");
    bad = im;
    bad.extent = 256;
    EXPECT_EQ(open_error(bad), "Extent size must be at least 512");
    bad = im;
    bad.extent = 3000;
    EXPECT_EQ(open_error(bad), "Extent size 3000 is not a power of two");
    bad = im;
    bad.extent = 0x1000000;
    bad.bitmaps.clear();
    bad.data.clear();
    EXPECT_EQ(open_error(bad), "Extent size 16777216 is too large");
    bad = im;
    bad.disk = 9 * 4096;
    EXPECT_EQ(open_error(bad), "Catalog size is too small for this disk size");

    auto b = im.bytes();
    b[22] = 'X';  // the magic must end where QEMU's strcmp ends it
    EXPECT_EQ(open_over(b).error().message, "Image not in Bochs format");
    b = im.bytes();
    b.resize(60);  // a short file: the header reads as zeroes past its end
    EXPECT_EQ(open_over(b).error().message, "Image not in Bochs format");
}

TEST(Bochs, ProbeAndReadOnly) {
    const Driver *d = find_driver("bochs");
    auto b = sample(0x00010000).bytes();
    EXPECT_EQ(d->probe(std::span<const uint8_t>(b.data(), 512), "x"), 100);
    b[48] = 'U';
    EXPECT_EQ(d->probe(std::span<const uint8_t>(b.data(), 512), "x"), 0);
    EXPECT_TRUE(d->read_only);
    EXPECT_FALSE(d->can_create());
    EXPECT_FALSE(d->supports_check);
}

}  // namespace
}  // namespace qimg
