// qcow2 persistent bitmaps: the directory/table parser on malformed input
// (QEMU's messages, no crash, no allocation from untrusted sizes), the
// dirty bits, and the node keeping bitmaps valid across writes.
#include "qcow2_test_util.h"

#include "format/qcow2/bitmap.h"
#include "format/qcow2/qcow2.h"
#include "util/endian.h"

namespace qimg::test {
namespace {

using namespace qcow2;

constexpr uint64_t kCs = 65536;
constexpr uint64_t kSize = 10 << 20;

BitmapDirEntry entry(const std::string &name, uint32_t flags = kBmeFlagAuto, uint8_t gbits = 16) {
    BitmapDirEntry e;
    e.name = name;
    e.flags = flags;
    e.granularity_bits = gbits;
    e.table_offset = 5 * kCs;
    e.table_size = uint32_t(bitmap_table_entries(kSize, gbits, kCs));
    return e;
}

std::string parse_error(const std::vector<uint8_t> &dir, uint32_t nb, uint64_t size = kSize) {
    auto r = parse_bitmap_directory(dir, nb, kCs, size);
    return r ? std::string("ok") : r.error().message;
}

TEST(Qcow2Bitmap, DirectoryRoundTrip) {
    std::vector<BitmapDirEntry> list{entry("b0"), entry("a longer name", 0, 9)};
    auto raw = serialize_bitmap_directory(list);
    EXPECT_EQ(raw.size(), bitmap_dir_entry_size(2) + bitmap_dir_entry_size(13));
    EXPECT_EQ(raw.size() % 8, 0u);
    auto r = parse_bitmap_directory(raw, 2, kCs, kSize);
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->size(), 2u);
    EXPECT_EQ((*r)[1].name, "a longer name");
    EXPECT_EQ((*r)[1].granularity_bits, 9);
    EXPECT_EQ((*r)[0].flags, kBmeFlagAuto);
}

TEST(Qcow2Bitmap, DirectoryMalformed) {
    auto raw = serialize_bitmap_directory({entry("b0"), entry("b1")});
    EXPECT_EQ(parse_error({}, 1), "Requested bitmap directory size is zero");
    EXPECT_EQ(parse_error(raw, 1), "More bitmaps found than specified in header extension");
    EXPECT_EQ(parse_error(raw, 3), "Less bitmaps found than specified in header extension");
    // Truncated fixed part and truncated name.
    EXPECT_EQ(parse_error(std::vector<uint8_t>(raw.begin(), raw.begin() + 40), 2), "Broken bitmap directory");
    auto bad = raw;
    put_be16(&bad[18], 0xffff);  // name runs past the end
    EXPECT_EQ(parse_error(bad, 2), "Broken bitmap directory");
    bad = raw;
    put_be32(&bad[20], 8);  // extra data
    EXPECT_EQ(parse_error(bad, 2), "Bitmap extra data is not supported");
    const std::string bad_b0 = "Bitmap 'b0' doesn't satisfy the constraints";
    auto field = [&](auto mutate) {
        auto d = raw;
        mutate(d.data());
        return parse_error(d, 2);
    };
    EXPECT_EQ(field([](uint8_t *p) { p[17] = 8; }), bad_b0);                       // granularity < 512
    EXPECT_EQ(field([](uint8_t *p) { p[17] = 32; }), bad_b0);                      // granularity > 2 GiB
    EXPECT_EQ(field([](uint8_t *p) { p[16] = 2; }), bad_b0);                       // type
    EXPECT_EQ(field([](uint8_t *p) { put_be32(p + 12, 4); }), bad_b0);             // reserved flag
    EXPECT_EQ(field([](uint8_t *p) { put_be64(p, 0); }), bad_b0);                  // no table
    EXPECT_EQ(field([](uint8_t *p) { put_be64(p, 5 * kCs + 512); }), bad_b0);      // unaligned table
    EXPECT_EQ(field([](uint8_t *p) { put_be32(p + 8, 0); }), bad_b0);              // empty table
    EXPECT_EQ(field([](uint8_t *p) { put_be32(p + 8, 0x8000001); }), bad_b0);      // table too large
    EXPECT_EQ(field([](uint8_t *p) { put_be32(p + 8, 0x2001); }), bad_b0);         // data > 512 MiB
    // Too small for the image: an error unless the bitmap is IN_USE.
    EXPECT_EQ(parse_error(raw, 2, uint64_t(kCs) * 8 * kCs + 1), bad_b0);
    auto in_use = serialize_bitmap_directory({entry("b0", kBmeFlagInUse | kBmeFlagAuto)});
    EXPECT_EQ(parse_error(in_use, 1, uint64_t(kCs) * 8 * kCs + 1), "ok");
    // Duplicate names: QEMU refuses the second in-memory bitmap.
    EXPECT_EQ(parse_error(serialize_bitmap_directory({entry("x"), entry("x")}), 2), "Bitmap already exists: x");
}

TEST(Qcow2Bitmap, DirectoryFuzzNeverCrashes) {
    auto raw = serialize_bitmap_directory({entry("b0"), entry("name1"), entry("b2", 0, 20)});
    uint32_t seed = 1;
    for (int i = 0; i < 20000; i++) {
        auto d = raw;
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245 + 12345;
            d[(seed >> 8) % d.size()] = uint8_t(seed >> 20);
        }
        (void)parse_bitmap_directory(d, 3, kCs, kSize);
    }
}

TEST(Qcow2Bitmap, TableEntries) {
    EXPECT_TRUE(valid_bitmap_table_entry(0, kCs));
    EXPECT_TRUE(valid_bitmap_table_entry(kBmeTableAllOnes, kCs));
    EXPECT_TRUE(valid_bitmap_table_entry(7 * kCs, kCs));
    EXPECT_FALSE(valid_bitmap_table_entry(7 * kCs | 1, kCs));   // all-ones with an offset
    EXPECT_FALSE(valid_bitmap_table_entry(7 * kCs + 512, kCs)); // unaligned
    EXPECT_FALSE(valid_bitmap_table_entry(2, kCs));             // reserved bit 1
    EXPECT_FALSE(valid_bitmap_table_entry(1ull << 56, kCs));    // reserved high bits
    std::vector<uint8_t> raw(16);
    put_be64(&raw[0], 3 * kCs);
    put_be64(&raw[8], 3 * kCs + 512);
    EXPECT_FALSE(parse_bitmap_table(raw, kCs));
    put_be64(&raw[8], 0);
    auto t = parse_bitmap_table(raw, kCs);
    ASSERT_TRUE(t);
    EXPECT_EQ((*t)[0], 3 * kCs);
}

TEST(Qcow2Bitmap, Constraints) {
    EXPECT_TRUE(check_bitmap_constraints("b", 65536, kSize, kCs));
    EXPECT_EQ(check_bitmap_constraints("b", 256, kSize, kCs).error().message,
              "Granularity is under minimum (512 bytes)");
    EXPECT_EQ(check_bitmap_constraints("b", 1ull << 32, kSize, kCs).error().message,
              "Granularity exceeds maximum (2147483648 bytes)");
    EXPECT_EQ(check_bitmap_constraints("b", 512, 4ull << 40, kCs).error().message,
              "Too much space will be occupied by the bitmap. Use larger granularity");
    EXPECT_EQ(check_bitmap_constraints(std::string(1024, 'n'), 65536, kSize, kCs).error().message,
              "Name length exceeds maximum (1023 characters)");
}

TEST(Qcow2Bitmap, DirtyBits) {
    DirtyBits b(1000 * 512 + 1, 9);  // 1001 bits
    EXPECT_EQ(b.bit_count(), 1001u);
    EXPECT_EQ(b.bytes().size(), 126u);
    b.set(512 * 3 + 1, 1);
    EXPECT_EQ(b.bytes()[0], 0x08);
    b.set(512 * 8, 512 * 16);  // whole bytes 1 and 2
    EXPECT_EQ(b.bytes()[1], 0xff);
    EXPECT_EQ(b.bytes()[2], 0xff);
    EXPECT_EQ(b.bytes()[3], 0);
    b.set(512 * 1000, 1 << 20);  // clipped at the end
    EXPECT_EQ(b.bytes()[125], 0x01);
    b.set(uint64_t(1) << 40, 1);  // past the end: ignored
    DirtyBits coarse(1000 * 512 + 1, 12);  // 4 KiB granules
    coarse.merge(b);
    EXPECT_EQ(coarse.bytes()[0], 0x07);  // granules 0..2 from bits 3, 8..23
    b.resize(512 * 4);
    EXPECT_EQ(b.bytes().size(), 1u);
    EXPECT_EQ(b.bytes()[0], 0x08);
    b.resize(512 * 100);
    EXPECT_EQ(b.bytes()[1], 0);
    b.clear();
    EXPECT_FALSE(b.any());
}

// The node: writes to an image with bitmaps keep them valid for QEMU.
TEST(Qcow2Bitmap, WritesKeepBitmapsValid) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    const std::string img = d / "a.qcow2";
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + img + " 4M && qemu-img bitmap --add -g 4k " + img +
                 " b0 && qemu-img bitmap --add --disable " + img + " b1"), 0);
    {
        BlockOpener op;
        auto n = open_image(op, img, true);
        ASSERT_TRUE(n) << n.error().message;
        auto list = (*n)->bitmap_list();
        ASSERT_TRUE(list);
        ASSERT_EQ(list->size(), 2u);
        EXPECT_TRUE((*list)[0].enabled);
        EXPECT_FALSE((*list)[1].enabled);
        std::vector<uint8_t> buf(8192, 0x5a);
        ASSERT_TRUE((*n)->write(1 << 20, buf.data(), buf.size()));
        // Meanwhile the enabled bitmap is published IN_USE.
        std::string out;
        sh("qemu-img info -U " + img, &out);
        EXPECT_NE(out.find("in-use"), std::string::npos) << out;
        auto bits = (*n)->bitmap_read("b0");
        ASSERT_TRUE(bits);
        EXPECT_EQ(bits->bits[(1 << 20) / 4096 / 8], 0x03);
    }
    std::string out;
    EXPECT_EQ(sh("qemu-img check " + img, &out), 0) << out;
    sh("qemu-img info " + img, &out);
    EXPECT_EQ(out.find("in-use"), std::string::npos) << out;
    EXPECT_NE(out.find("b1"), std::string::npos) << out;
}

// Corrupt bitmap metadata fails the open with QEMU's message.
TEST(Qcow2Bitmap, OpenRejectsBadTable) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    const std::string img = d / "a.qcow2";
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + img + " 4M && qemu-img bitmap --add " + img + " b0"), 0);
    auto v = read_file(img);
    BlockOpener op0;
    auto n0 = open_image(op0, img);
    ASSERT_TRUE(n0);
    const Header &h = static_cast<qcow2::Qcow2Node *>(n0->get())->header();
    ASSERT_TRUE(h.bitmaps);
    const uint64_t table = be64(&v[h.bitmaps->directory_offset]);
    n0->reset();
    put_be64(&v[table], 3 * kCs + 512);  // unaligned data cluster
    write_file(img, v);
    BlockOpener op;
    auto n = open_image(op, img);
    ASSERT_FALSE(n);
    EXPECT_EQ(n.error().message, "Could not read bitmap_table table from image for bitmap 'b0': Invalid argument");
}

}  // namespace
}  // namespace qimg::test
