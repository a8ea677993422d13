// Unit tests of the vmdk driver: hand-built sparse images over test::MemNode
// (valid and hostile), descriptor parsing, and images made by the real
// qemu-img read back through the opener.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <cstring>

#include "block/driver.h"
#include "block/open.h"
#include "codec/codec.h"
#include "format/vmdk/descriptor.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg {
namespace {

// A monolithic sparse image: header, descriptor at sector 1, grain
// directory at sector 21, one grain table at sector 22, grains from 128.
struct Sparse {
    uint32_t version = 1, flags = 3, num_gtes = 512;
    uint64_t capacity = 2048, granularity = 128, gd = 21, rgd = 0, grain_offset = 128;
    uint16_t compress = 0;
    std::string desc = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
                       "createType=\"monolithicSparse\"\n";

    std::vector<uint8_t> build() const {
        std::vector<uint8_t> img(grain_offset * 512);
        std::memcpy(img.data(), "KDMV", 4);
        put_le32(&img[4], version);
        put_le32(&img[8], flags);
        put_le64(&img[12], capacity);
        put_le64(&img[20], granularity);
        put_le64(&img[28], 1);
        put_le64(&img[36], 20);
        put_le32(&img[44], num_gtes);
        put_le64(&img[48], rgd);
        put_le64(&img[56], gd);
        put_le64(&img[64], grain_offset);
        img[73] = '\n', img[74] = ' ', img[75] = '\r', img[76] = '\n';
        put_le16(&img[77], compress);
        std::memcpy(&img[512], desc.data(), std::min<size_t>(desc.size(), 20 * 512));
        return img;
    }
};

// Sets grain table entry `i` (of the table at sector 22, GD entry 0) to `v`.
void set_gte(std::vector<uint8_t> &img, size_t i, uint32_t v) {
    put_le32(&img[21 * 512], 22);
    put_le32(&img[22 * 512 + 4 * i], v);
}

Result<NodePtr> open_over(std::vector<uint8_t> bytes, bool rw = false) {
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(std::move(bytes));
    req.flags.read_write = rw;
    BlockOpener op;
    req.opener = &op;
    return find_driver("vmdk")->open(req);
}

TEST(Vmdk, ReadsHandBuiltSparse) {
    Sparse s;
    auto img = s.build();
    set_gte(img, 1, 128);  // guest grain 1 (64 KiB) at sector 128
    auto data = test::pattern(65536, 3);
    img.insert(img.end(), data.begin(), data.end());
    auto node = open_over(img);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), 2048u * 512);
    auto all = test::read_all(**node);
    EXPECT_TRUE(std::all_of(all.begin(), all.begin() + 65536, [](uint8_t b) { return b == 0; }));
    EXPECT_TRUE(std::equal(data.begin(), data.end(), all.begin() + 65536));
    auto st = (*node)->block_status(65536 + 100, 1 << 20);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags & kStatusData, kStatusData);
    EXPECT_EQ(st->host_offset, 128u * 512 + 100);
    EXPECT_EQ(st->bytes, 65536u - 100);
    auto info = (*node)->specific_info();
    EXPECT_EQ(info["data"]["cid"], 0x12345678u);
    EXPECT_EQ(info["data"]["parent-cid"], 0xffffffffu);
    EXPECT_EQ(info["data"]["create-type"], "monolithicSparse");
}

TEST(Vmdk, ZeroedGrainNeedsTheFlag) {
    Sparse s;
    s.flags = 3 | 4;
    auto img = s.build();
    set_gte(img, 0, 1);
    auto node = open_over(img);
    ASSERT_TRUE(node) << node.error().message;
    auto st = (*node)->block_status(0, 65536);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags, uint32_t(kStatusZero));
}

std::vector<uint8_t> zlib_compress(const std::vector<uint8_t> &in) {
    std::vector<uint8_t> out(in.size() + in.size() / 8 + 64);
    auto n = codec::compress(codec::Params{codec::Codec::Zlib, 15, 6}, in, out);
    EXPECT_TRUE(n && *n > 0);
    out.resize(n ? *n : 0);
    return out;
}

// A streamOptimized grain: marker (lba, size) then the zlib stream.
void add_marked_grain(std::vector<uint8_t> &img, uint64_t lba, const std::vector<uint8_t> &z, uint32_t size) {
    std::vector<uint8_t> g(12);
    put_le64(&g[0], lba);
    put_le32(&g[8], size);
    g.insert(g.end(), z.begin(), z.end());
    g.resize((g.size() + 511) / 512 * 512);
    img.insert(img.end(), g.begin(), g.end());
}

// The header of a streamOptimized file (version 3, compressed, markers).
Sparse stream_header() {
    Sparse s;
    s.version = 3;
    s.flags = 3 | (1u << 16) | (1u << 17);
    s.compress = 1;
    return s;
}

TEST(Vmdk, CompressedGrainsAndShortLastGrain) {
    Sparse s = stream_header();
    auto img = s.build();
    set_gte(img, 0, 128);
    auto full = test::pattern(65536, 9);
    add_marked_grain(img, 0, zlib_compress(full), uint32_t(zlib_compress(full).size()));
    // A short grain, as python vmdkstream writes the last one: the rest reads as zeroes.
    std::vector<uint8_t> part = test::pattern(4096, 11);
    uint32_t sector = uint32_t(img.size() / 512);
    set_gte(img, 1, sector);
    add_marked_grain(img, 128, zlib_compress(part), uint32_t(zlib_compress(part).size()));
    auto node = open_over(img);
    ASSERT_TRUE(node) << node.error().message;
    auto all = test::read_all(**node);
    EXPECT_TRUE(std::equal(full.begin(), full.end(), all.begin()));
    EXPECT_TRUE(std::equal(part.begin(), part.end(), all.begin() + 65536));
    EXPECT_TRUE(std::all_of(all.begin() + 65536 + 4096, all.begin() + 131072, [](uint8_t b) { return b == 0; }));
    EXPECT_EQ((*node)->specific_info()["data"]["create-type"], "streamOptimized");
}

TEST(Vmdk, HostileCompressedGrains) {
    Sparse s = stream_header();
    // A grain that inflates past the grain size.
    auto img = s.build();
    set_gte(img, 0, 128);
    auto big = zlib_compress(std::vector<uint8_t>(65536 + 512, 7));
    add_marked_grain(img, 0, big, uint32_t(big.size()));
    auto node = open_over(img);
    ASSERT_TRUE(node);
    std::vector<uint8_t> buf(512);
    EXPECT_FALSE((*node)->read(0, buf.data(), buf.size()));
    // A marker claiming a huge size, and one claiming nothing.
    for (uint32_t size : {0u, 0xfffffff0u}) {
        auto img2 = s.build();
        set_gte(img2, 0, 128);
        add_marked_grain(img2, 0, zlib_compress(buf), size);
        auto n2 = open_over(img2);
        ASSERT_TRUE(n2);
        EXPECT_FALSE((*n2)->read(0, buf.data(), buf.size())) << size;
    }
    // Garbage instead of a zlib stream.
    auto img3 = s.build();
    set_gte(img3, 0, 128);
    add_marked_grain(img3, 0, test::pattern(600, 1), 600);
    auto n3 = open_over(img3);
    ASSERT_TRUE(n3);
    EXPECT_FALSE((*n3)->read(0, buf.data(), buf.size()));
}

TEST(Vmdk, RejectsHostileHeaders) {
    auto fails_with = [](Sparse s, const std::string &msg) {
        auto r = open_over(s.build());
        ASSERT_FALSE(r) << msg;
        EXPECT_NE(r.error().message.find(msg), std::string::npos) << r.error().message;
    };
    Sparse s;
    s.version = 4;
    fails_with(s, "Unsupported VMDK version 4");
    s = Sparse{};
    s.num_gtes = 513;
    fails_with(s, "L2 table size too big");
    s = Sparse{};
    s.num_gtes = 0;
    fails_with(s, "L1 entry size is invalid");
    s = Sparse{};
    s.granularity = 0;
    fails_with(s, "L1 entry size is invalid");
    s = Sparse{};
    s.granularity = 96;  // not a power of two
    fails_with(s, "Invalid granularity");
    s = Sparse{};
    s.granularity = 0x400000;
    fails_with(s, "Invalid granularity");
    s = Sparse{};
    s.granularity = uint64_t(1) << 32;  // the 32-bit product wraps to 0 in QEMU
    fails_with(s, "L1 entry size is invalid");
    s = Sparse{};
    s.capacity = uint64_t(1) << 62;  // a grain directory of 2^38 entries
    fails_with(s, "L1 size too big");
    s = Sparse{};
    s.gd = 1000000;  // beyond the end of the file
    fails_with(s, "grain directory beyond the end of the file");
    s = Sparse{};
    s.gd = 0;  // over the header
    fails_with(s, "overlaps its header");
    s = Sparse{};
    s.grain_offset = 128;
    {
        auto img = s.build();
        img.resize(100 * 512);
        auto r = open_over(img);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().message, "File truncated, expecting at least 65536 bytes");
    }
    s = Sparse{};
    s.gd = UINT64_MAX;  // the footer is missing
    fails_with(s, "Invalid footer");
    s = Sparse{};
    s.version = 3;
    {
        OpenRequest req;
        req.file = std::make_shared<test::MemNode>(s.build());
        req.flags.read_write = true;
        auto r = find_driver("vmdk")->open(req);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().message, "VMDK version 3 must be read only");
    }
    s = Sparse{};
    s.desc = "no CID here";
    fails_with(s, "Invalid argument");
    EXPECT_FALSE(open_over({'K', 'D'}));
}

TEST(Vmdk, HostileGrainTables) {
    // A grain table past the end of the file reads as unallocated; a grain
    // past the end reads as zeroes; neither is a crash or an allocation.
    Sparse s;
    auto img = s.build();
    put_le32(&img[21 * 512], 0x7fffffff);
    auto node = open_over(img);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ(test::read_all(**node), std::vector<uint8_t>(2048 * 512));
    auto img2 = s.build();
    set_gte(img2, 0, 0xffffffff);
    auto n2 = open_over(img2);
    ASSERT_TRUE(n2);
    std::vector<uint8_t> buf(4096, 1);
    ASSERT_TRUE((*n2)->read(0, buf.data(), buf.size()));
    EXPECT_EQ(buf, std::vector<uint8_t>(4096));
}

TEST(VmdkDescriptor, ParsesExtentLinesAsQemu) {
    auto r = vmdk::parse_extents(
        "# Extent description\nRW 100 FLAT \"a b.img\" 7\nRDONLY 5 FLAT \"x\" 0\nRW 8 ZERO\n"
        "RW 200 SPARSE \"s.vmdk\"\nRW 9 VMFS \"v\"\nRW 0 SPARSE \"zero.vmdk\"\nNOACCESS 3 SPARSE \"n\"\n");
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->size(), 3u);
    EXPECT_EQ((*r)[0].file, "a b.img");
    EXPECT_EQ((*r)[0].flat_offset, 7u);
    EXPECT_EQ((*r)[0].sectors, 100u);
    EXPECT_EQ((*r)[1].type, "SPARSE");
    EXPECT_EQ((*r)[2].type, "VMFS");
    auto bad = vmdk::parse_extents("RW 100 FLAT \"a\"\nRW 1 SPARSE \"b\"\n");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "Invalid extent line: RW 100 FLAT \"a\"");
    EXPECT_FALSE(vmdk::parse_extents("RW 100 SPARSE \"a\" 5\n"));
    EXPECT_FALSE(vmdk::parse_extents("RW 100 VMFS \"a\" 5\n"));
    // A name longer than 511 characters is cut there, as scanf does.
    auto longname = vmdk::parse_extents("RW 1 SPARSE \"" + std::string(600, 'n') + "\"\n");
    ASSERT_TRUE(longname);
    ASSERT_EQ(longname->size(), 1u);
    EXPECT_EQ((*longname)[0].file.size(), 511u);
}

TEST(VmdkDescriptor, CidAndHints) {
    EXPECT_EQ(vmdk::read_cid("CID=fffffffe\nparentCID=12ab\n", false), 0xfffffffeu);
    EXPECT_EQ(vmdk::read_cid("CID=fffffffe\nparentCID=12ab\n", true), 0x12abu);
    EXPECT_FALSE(vmdk::read_cid("CID=zz", false));
    EXPECT_FALSE(vmdk::read_cid("nothing", true));
    auto h = vmdk::parent_hint("parentFileNameHint=\"base.vmdk\"\n");
    ASSERT_TRUE(h);
    EXPECT_EQ(*h, "base.vmdk");
    EXPECT_FALSE(vmdk::parent_hint("parentFileNameHint=\"unterminated"));
    EXPECT_FALSE(vmdk::parent_hint("parentFileNameHint=\"" + std::string(5000, 'a') + "\""));
    EXPECT_EQ(vmdk::quoted_value("createType=\"twoGbMaxExtentFlat\"", "createType", 128), "twoGbMaxExtentFlat");
    EXPECT_FALSE(vmdk::quoted_value("createType=\"" + std::string(200, 'x') + "\"", "createType", 128));
}

TEST(VmdkDescriptor, Probe) {
    auto p = [](std::string s) {
        return find_driver("vmdk")->probe(std::span<const uint8_t>((const uint8_t *)s.data(), s.size()), "");
    };
    EXPECT_EQ(p("# Disk DescriptorFile\nversion=1\nCID=1\n"), 100);
    EXPECT_EQ(p("   \r\nversion=3\r\n"), 100);
    EXPECT_EQ(p("version=4\n"), 0);
    EXPECT_EQ(p("x\nversion=1\n"), 0);
    EXPECT_EQ(p("KDMV"), 100);
    EXPECT_EQ(p("COWD"), 100);
}

// Images of every subformat made by the real qemu-img, read back.
TEST(Vmdk, ReadsQemuImages) {
    if (!test::have_qemu()) GTEST_SKIP() << "qemu-img not installed";
    test::TempDir d;
    for (std::string sub : {"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                            "streamOptimized"}) {
        std::string img = d / (sub + ".vmdk");
        test::qemu_create("vmdk", img, "3M", "subformat=" + sub);
        if (sub == "streamOptimized") {
            std::string raw = d / "src.raw";
            test::qemu_create("raw", raw, "3M", "");
            test::qemu_io("raw", raw, {"write -P 0x5a 65536 100k", "write -P 0x33 2M 4k"});
            ASSERT_EQ(test::sh("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized " + test::quote(raw) +
                               " " + test::quote(img)), 0);
        } else {
            test::qemu_io("vmdk", img, {"write -P 0x5a 65536 100k", "write -P 0x33 2M 4k"});
        }
        BlockOpener op;
        auto node = test::open_as(op, img, "");
        ASSERT_TRUE(node) << sub << ": " << node.error().message;
        EXPECT_EQ((*node)->driver_name(), "vmdk");
        auto all = test::read_all(**node);
        ASSERT_EQ(all.size(), 3u << 20) << sub;
        std::vector<uint8_t> want(3u << 20);
        std::fill(want.begin() + 65536, want.begin() + 65536 + 102400, 0x5a);
        std::fill(want.begin() + (2 << 20), want.begin() + (2 << 20) + 4096, 0x33);
        EXPECT_EQ(all, want) << sub;
    }
}

TEST(Vmdk, ExtentsFollowTheImplicitOpenPolicy) {
    test::TempDir d;
    std::string desc = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                       "RW 8 FLAT \"/etc/hostname\" 0\n";
    test::write_file(d / "abs.vmdk", std::vector<uint8_t>(desc.begin(), desc.end()));
    std::string up = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                     "RW 8 FLAT \"../x.raw\" 0\n";
    test::write_file(d / "up.vmdk", std::vector<uint8_t>(up.begin(), up.end()));
    {
        BlockOpener op;
        op.implicit_open = ImplicitOpen::Confined;
        auto r = test::open_as(op, d / "abs.vmdk", "vmdk");
        ASSERT_FALSE(r);
        EXPECT_NE(r.error().message.find("extent file"), std::string::npos) << r.error().message;
        auto r2 = test::open_as(op, d / "up.vmdk", "vmdk");
        ASSERT_FALSE(r2);
        EXPECT_NE(r2.error().message.find("extent file"), std::string::npos) << r2.error().message;
    }
    if (access("/etc/hostname", R_OK) == 0) {
        BlockOpener op;
        op.implicit_open = ImplicitOpen::Follow;
        auto r = test::open_as(op, d / "abs.vmdk", "vmdk");
        EXPECT_TRUE(r) << r.error().message;
    }
    // A descriptor naming itself.
    std::string self = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                       "RW 8 FLAT \"self.vmdk\" 0\n";
    test::write_file(d / "self.vmdk", std::vector<uint8_t>(self.begin(), self.end()));
    BlockOpener op;
    auto r = test::open_as(op, d / "self.vmdk", "vmdk");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("descriptor itself"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace qimg

namespace qimg {
namespace {

// A VMFS sparse (COWD) extent named by a vmfsSparse descriptor: 4 KiB
// grains, one 4096-entry grain table at sector 5, guest grain 2 at sector 40.
TEST(Vmdk, ReadsCowdExtentThroughADescriptor) {
    test::TempDir d;
    std::vector<uint8_t> c(40 * 512);
    std::memcpy(c.data(), "COWD", 4);
    put_le32(&c[4], 1);
    put_le32(&c[12], 64);  // disk sectors
    put_le32(&c[16], 8);   // granularity
    put_le32(&c[20], 4);   // grain directory sector
    put_le32(&c[24], 1);   // its entries
    put_le32(&c[4 * 512], 5);
    put_le32(&c[5 * 512 + 2 * 4], 40);
    auto grain = test::pattern(4096, 5);
    c.insert(c.end(), grain.begin(), grain.end());
    test::write_file(d / "c-delta.vmdk", c);
    std::string desc = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\n"
                       "RW 64 VMFSSPARSE \"c-delta.vmdk\"\n";
    test::write_file(d / "c.vmdk", std::vector<uint8_t>(desc.begin(), desc.end()));
    BlockOpener op;
    auto node = test::open_as(op, d / "c.vmdk", "");
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), 64u * 512);
    std::vector<uint8_t> want(64 * 512);
    std::copy(grain.begin(), grain.end(), want.begin() + 8192);
    EXPECT_EQ(test::read_all(**node), want);
    auto info = (*node)->specific_info();
    EXPECT_EQ(info["data"]["extents"][0]["format"], "VMFSSPARSE");
    EXPECT_EQ(info["data"]["extents"][0]["cluster-size"], 4096u);
    // A grain directory too small for the capacity is refused.
    put_le32(&c[12], 1u << 20);
    test::write_file(d / "c-delta.vmdk", c);
    BlockOpener op2;
    EXPECT_FALSE(test::open_as(op2, d / "c.vmdk", ""));
}

}  // namespace
}  // namespace qimg

namespace qimg {
namespace {

// An seSparse extent (sesparse.cpp): const header, volatile header at
// sector 1, grain directory at sector 2, grain table 0 at sector 3 (64
// sectors), grains from sector 67; 32 MiB of guest (two directory entries).
struct SeSparse {
    std::vector<uint8_t> b = std::vector<uint8_t>(67 * 512);
    SeSparse() {
        const uint64_t c[26] = {0xcafebabe, 0x200000001, 65536, 8, 64, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0,
                                2,          1,           3,     64, 0, 0, 0, 0, 67, 0};
        for (size_t i = 0; i < 26; i++) put_le64(&b[8 * i], c[i]);
        put_le64(&b[512], 0xcafecafe);
        put_le64(&b[2 * 512], 0x1000000000000000);  // table 0 for the first 16 MiB
    }
    void set(size_t field, uint64_t v) { put_le64(&b[8 * field], v); }
    void gte(size_t i, uint64_t v) { put_le64(&b[3 * 512 + 8 * i], v); }
    // Guest grain `i` -> grain `g` (appended if it is the next one).
    void grain(size_t i, uint64_t g, const std::vector<uint8_t> &data) {
        gte(i, 0x3000000000000000 | ((g & 0xfff) << 48) | (g >> 12));
        if (b.size() == (67 + 8 * g) * 512) b.insert(b.end(), data.begin(), data.end());
    }
};

Result<NodePtr> open_sesparse(BlockOpener &op, test::TempDir &d, const std::vector<uint8_t> &extent,
                              bool rw = false, uint64_t sectors = 65536) {
    test::write_file(d / "s-sesparse.vmdk", extent);
    std::string desc = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"seSparse\"\n"
                       "RW " + std::to_string(sectors) + " SESPARSE \"s-sesparse.vmdk\"\n";
    test::write_file(d / "s.vmdk", std::vector<uint8_t>(desc.begin(), desc.end()));
    return test::open_as(op, d / "s.vmdk", "vmdk", rw);
}

TEST(Vmdk, ReadsSeSparseExtent) {
    BlockOpener op;
    test::TempDir d;
    SeSparse s;
    auto g0 = test::pattern(4096, 7), g1 = test::pattern(4096, 8);
    s.grain(3, 0, g0);
    s.grain(1, 1, g1);
    s.gte(5, 0x2000000000000000);  // zero grain
    s.gte(6, 0x1000000000000000);  // unmapped: zeroes too
    auto node = open_sesparse(op, d, s.b);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), 32u << 20);
    std::vector<uint8_t> want(32 << 20);
    std::copy(g0.begin(), g0.end(), want.begin() + 3 * 4096);
    std::copy(g1.begin(), g1.end(), want.begin() + 1 * 4096);
    EXPECT_EQ(test::read_all(**node), want);
    auto st = (*node)->block_status(3 * 4096, 1 << 20);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags & (kStatusData | kStatusOffsetValid), kStatusData | kStatusOffsetValid);
    EXPECT_EQ(st->host_offset, 67u * 512);
    st = (*node)->block_status(5 * 4096, 1 << 20);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags, kStatusZero);
    EXPECT_EQ((*node)->specific_info()["data"]["extents"][0]["format"], "SESPARSE");
    EXPECT_EQ((*node)->cluster_size(), 4096u);
    EXPECT_FALSE((*node)->write(0, g0.data(), 4096));
    // Read-write opens are refused, as QEMU's.
    node->reset();
    auto rw = open_sesparse(op, d, s.b, true);
    ASSERT_FALSE(rw);
    EXPECT_EQ(rw.error().message, "No write support for seSparse images available");
}

TEST(Vmdk, RejectsHostileSeSparseHeaders) {
    struct Case {
        size_t field;
        uint64_t value;
        const char *message;
    };
    const Case cases[] = {
        {0, 0x1234, "Bad const header magic: 0x0000000000001234"},
        {1, 1, "Unsupported version: 0x0000000000000001"},
        {3, 16, "Unsupported grain size: 16"},
        {4, 128, "Unsupported grain table size: 128"},
        {5, 1, "Unsupported flags: 0x0000000000000001"},
        {9, 1, "Unsupported reserved bits: 0x0000000000000000 0x0000000000000000 0x0000000000000000 "
               "0x0000000000000001"},
        {10, 1000, "Bad volatile header magic: 0x0000000000000000"},
        {10, uint64_t(1) << 54, "Could not read volatile header from file"},
        {10, uint64_t(1) << 55, "Bad volatile header magic: 0x00000000cafebabe"},  // wraps as in QEMU
        {17, uint64_t(1) << 40, "L1 size too big"},
        {17, 1u << 20, "L1 size too big"},
        {17, 1000, "grain directory beyond the end of the file"},
        {16, 0, "overlaps its header"},
        {16, uint64_t(1) << 60, "Invalid grain directory offset"},
        {2, UINT64_MAX, "Image size too large"},
    };
    BlockOpener op;
    for (const Case &c : cases) {
        test::TempDir d;
        SeSparse s;
        s.set(c.field, c.value);
        auto node = open_sesparse(op, d, s.b);
        ASSERT_FALSE(node) << c.field;
        EXPECT_NE(node.error().message.find(c.message), std::string::npos) << node.error().message;
    }
    test::TempDir d;
    SeSparse s;
    s.b[400] = 1;
    auto node = open_sesparse(op, d, s.b);
    ASSERT_FALSE(node);
    EXPECT_EQ(node.error().message, "Unsupported non-zero const header padding");
    SeSparse v;
    put_le64(&v.b[512 + 24], 1);
    node = open_sesparse(op, d, v.b);
    ASSERT_FALSE(node);
    EXPECT_EQ(node.error().message, "Image is dirty, Replaying journal not supported");
    SeSparse p;
    p.b[512 + 100] = 1;
    node = open_sesparse(op, d, p.b);
    ASSERT_FALSE(node);
    EXPECT_EQ(node.error().message, "Unsupported non-zero volatile header padding");
}

// Bad directory and table entries fail the reads that meet them; a grain
// or table past the end of the file reads as zeroes (as in QEMU), and
// nothing makes a huge allocation or an out-of-bounds access.
TEST(Vmdk, HostileSeSparseTables) {
    auto g = test::pattern(4096, 9);
    struct Case {
        uint64_t gd0, gte0;
        bool fails;
    };
    const Case cases[] = {
        {0x2000000000000000, 0, true},               // directory entry of another type
        {0x1000000100000000, 0, true},               // bits above the table index
        {0x10000000ffffffff, 0, true},               // table sector past 32 bits
        {0x1000000000000009, 0, false},              // a table past the end of the file: zeroes
        {0x1000000000000000, 0x4000000000000000, true},  // grain entry of an unknown type
        {0x1000000000000000, 0x0000000000000001, true},  // unallocated with stray bits
        {0x1000000000000000, 0x3fff0fffffffffff, true},  // grain past 2^63 bytes
        {0x1000000000000000, 0x3000000100000000, false}, // grain past the end: zeroes
    };
    BlockOpener op;
    for (const Case &c : cases) {
        test::TempDir d;
        SeSparse s;
        s.grain(1, 0, g);
        put_le64(&s.b[2 * 512], c.gd0);
        if (c.gte0) s.gte(0, c.gte0);
        auto node = open_sesparse(op, d, s.b);
        ASSERT_TRUE(node) << node.error().message;
        std::vector<uint8_t> buf(4096, 0xee);
        auto r = (*node)->read(0, buf.data(), buf.size());
        EXPECT_EQ(!r, c.fails) << std::hex << c.gd0 << " " << c.gte0;
        if (r) {
            EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
        }
        EXPECT_EQ(!(*node)->block_status(0, 4096), c.fails);
        // The second 16 MiB have no table: zeroes; past the directory: EIO.
        EXPECT_TRUE((*node)->read(16 << 20, buf.data(), buf.size()));
    }
    // A capacity larger than the directory covers: reads past it fail.
    test::TempDir d;
    SeSparse s;
    auto node = open_sesparse(op, d, s.b, false, 1u << 20);
    ASSERT_TRUE(node) << node.error().message;
    std::vector<uint8_t> buf(4096);
    EXPECT_TRUE((*node)->read(0, buf.data(), buf.size()));
    EXPECT_FALSE((*node)->read(uint64_t(64) << 20, buf.data(), buf.size()));
    // Random damage to the headers and tables: a clean error or a read,
    // never a crash (the bytes are re-read through a fresh open each time).
    std::mt19937 rng(1234);
    SeSparse base;
    base.grain(2, 0, g);
    for (int i = 0; i < 300; i++) {
        auto b = base.b;
        for (int k = 0; k < 4; k++) {
            size_t at = rng() % (5 * 512);
            b[at] = uint8_t(rng());
        }
        auto n = open_sesparse(op, d, b);
        if (!n) continue;
        std::vector<uint8_t> out(64 << 10);
        (void)(*n)->read(0, out.data(), out.size());
        (void)(*n)->block_status(0, 1 << 20);
    }
}

}  // namespace
}  // namespace qimg

namespace qimg {
namespace {

Result<NodePtr> open_rw(BlockOpener &op, std::shared_ptr<test::MemNode> mem) {
    OpenRequest req;
    req.file = std::move(mem);
    req.flags.read_write = true;
    req.opener = &op;
    return find_driver("vmdk")->open(req);
}

// A write under a directory entry of 0 appends zeroed grain tables (one per
// directory, in a region of whole grains), publishes them in both
// directories, then writes the grain: the result reads back through either
// directory, and later grains stay grain-aligned.
TEST(Vmdk, WriteAllocatesMissingGrainTables) {
    Sparse s;
    s.rgd = 23;  // a redundant directory, its entry 0 also empty
    auto img = s.build();
    auto mem = std::make_shared<test::MemNode>(img);
    BlockOpener op;
    auto node = open_rw(op, mem);
    ASSERT_TRUE(node) << node.error().message;
    auto data = test::pattern(65536, 11);
    ASSERT_TRUE((*node)->write(3 * 65536, data.data(), data.size()));
    ASSERT_TRUE((*node)->write(5 * 65536 + 512, data.data(), 4096));
    ASSERT_TRUE((*node)->flush());
    auto out = mem->bytes();
    // Tables at sectors 128 and 132 (2 KiB each), the grains from 256.
    EXPECT_EQ(le32(&out[21 * 512]), 128u);
    EXPECT_EQ(le32(&out[23 * 512]), 132u);
    EXPECT_EQ(le32(&out[128 * 512 + 3 * 4]), 256u);
    EXPECT_EQ(le32(&out[132 * 512 + 3 * 4]), 256u);
    EXPECT_EQ(le32(&out[128 * 512 + 5 * 4]), 384u);
    EXPECT_EQ(out.size(), (384u + 128) * 512);
    std::vector<uint8_t> want(2048 * 512);
    std::copy(data.begin(), data.end(), want.begin() + 3 * 65536);
    std::copy(data.begin(), data.begin() + 4096, want.begin() + 5 * 65536 + 512);
    EXPECT_EQ(test::read_all(**node), want);
    // Through the redundant directory alone (offsets swapped).
    put_le64(&out[48], 21);
    put_le64(&out[56], 23);
    auto again = open_over(out);
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ(test::read_all(**again), want);
}

// A stream write where the directory has no table (VMware's trailers and
// qimg's leave out the tables of empty regions): the table goes after the
// last sector, then the grain behind its marker; the grain reads back, and
// at close the stream gets its trailer again (the header says "directory
// at the end" and the footer's directory finds the grain).
TEST(Vmdk, CompressedWriteAllocatesTableThenFinishesAtClose) {
    Sparse s = stream_header();
    auto mem = std::make_shared<test::MemNode>(s.build());
    const size_t before = mem->bytes().size();
    auto data = test::pattern(65536, 12);
    {
        BlockOpener op;
        auto node = open_rw(op, mem);
        ASSERT_TRUE(node) << node.error().message;
        ASSERT_TRUE((*node)->write(0, data.data(), data.size()));
        auto out = mem->bytes();
        EXPECT_GE(uint64_t(le32(&out[21 * 512])) * 512, before);
        auto all = test::read_all(**node);
        EXPECT_TRUE(std::equal(data.begin(), data.end(), all.begin()));
    }
    auto out = mem->bytes();
    EXPECT_EQ(le64(&out[56]), 0xffffffffffffffffull);
    auto again = open_over(out);
    ASSERT_TRUE(again) << again.error().message;
    auto all = test::read_all(**again);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), all.begin()));
}

}  // namespace
}  // namespace qimg
