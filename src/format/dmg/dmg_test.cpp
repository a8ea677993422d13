// Unit tests of the dmg driver over an in-memory file: UDIF images built
// here (qemu-img cannot create dmg) with their block table in a resource
// fork, every chunk kind, and hostile tables: unsorted or overlapping
// chunks, raw chunks shorter than their sectors, chunks past the file,
// oversized counts, a trailer that lies.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "codec/codec.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg {
namespace {

struct Entry {
    uint32_t type;
    uint64_t sector, count, offset, length;
};

// A data fork `fork`, one mish block of `entries` in a resource fork, the
// koly trailer saying `sectors`.
std::vector<uint8_t> make_dmg(const std::vector<uint8_t> &fork, const std::vector<Entry> &entries, uint64_t sectors) {
    std::vector<uint8_t> mish(204);
    std::memcpy(mish.data(), "mish", 4);
    for (const Entry &e : entries) {
        uint8_t b[40] = {};
        put_be32(b, e.type);
        put_be64(b + 8, e.sector);
        put_be64(b + 0x10, e.count);
        put_be64(b + 0x18, e.offset);
        put_be64(b + 0x20, e.length);
        mish.insert(mish.end(), b, b + 40);
    }
    std::vector<uint8_t> img = fork;
    uint64_t rsrc = img.size();
    uint8_t h[16] = {};
    put_be32(h, 16);
    put_be32(h + 8, static_cast<uint32_t>(4 + mish.size()));
    img.insert(img.end(), h, h + 16);
    uint8_t n[4];
    put_be32(n, static_cast<uint32_t>(mish.size()));
    img.insert(img.end(), n, n + 4);
    img.insert(img.end(), mish.begin(), mish.end());
    uint64_t rsrc_len = img.size() - rsrc;
    std::vector<uint8_t> koly(512);
    std::memcpy(koly.data(), "koly", 4);
    put_be64(koly.data() + 0x28, rsrc);
    put_be64(koly.data() + 0x30, rsrc_len);
    put_be64(koly.data() + 0x1ec, sectors);
    img.insert(img.end(), koly.begin(), koly.end());
    return img;
}

std::vector<uint8_t> compress(codec::Codec c, const std::vector<uint8_t> &in) {
    std::vector<uint8_t> out(in.size() + 1024);
    auto n = codec::compress(codec::Params{c, 15}, in, out);
    out.resize(n ? *n : 0);
    return out;
}

Result<NodePtr> open_over(std::vector<uint8_t> bytes) {
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(std::move(bytes));
    return find_driver("dmg")->open(req);
}

// Sectors 0-7 zlib, 8-15 raw, 16-23 zeroes, 24-31 ignore; listed out of order.
struct Sample {
    std::vector<uint8_t> guest, fork;
    std::vector<Entry> entries;
    Sample() {
        guest = test::pattern(16 * 512, 0x3c);
        guest.resize(32 * 512, 0);
        std::vector<uint8_t> a(guest.begin(), guest.begin() + 4096), b(guest.begin() + 4096, guest.begin() + 8192);
        auto z = compress(codec::Codec::Zlib, a);
        fork = z;
        fork.insert(fork.end(), b.begin(), b.end());
        entries = {{1, 8, 8, z.size(), 4096}, {0, 16, 8, 0, 0}, {0x80000005, 0, 8, 0, z.size()},
                   {2, 24, 8, 0, 0}, {0xffffffff, 32, 0, 0, 0}};
    }
};

TEST(Dmg, ReadsEveryChunkKindWhateverTheirOrder) {
    Sample s;
    auto node = open_over(make_dmg(s.fork, s.entries, 32));
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), 32 * 512u);
    EXPECT_EQ(test::read_all(**node), s.guest);
    std::vector<uint8_t> buf(3000);
    ASSERT_TRUE((*node)->read(3000, buf.data(), buf.size()));  // across zlib into raw
    EXPECT_TRUE(std::equal(buf.begin(), buf.end(), s.guest.begin() + 3000));
}

TEST(Dmg, ReadsBzip2Chunks) {
    auto guest = test::pattern(64 * 512, 0x71);
    test::TempDir d;
    std::string raw = d.file("g.raw"), bzf = d.file("g.bz2");
    test::write_file(raw, guest);
    ASSERT_EQ(test::sh("bzip2 -c " + raw + " > " + bzf), 0);
    auto fork = test::read_file(bzf);
    auto node = open_over(make_dmg(fork, {{0x80000006, 0, 64, 0, fork.size()}}, 64));
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ(test::read_all(**node), guest);
}

TEST(Dmg, HostileTablesGetAnswersThatDependOnlyOnTheImage) {
    Sample s;
    // A raw chunk claiming more sectors than its bytes: zeroes past them.
    auto e = s.entries;
    e[0].length = 1000;
    auto node = open_over(make_dmg(s.fork, e, 32));
    ASSERT_TRUE(node);
    std::vector<uint8_t> buf(4096);
    ASSERT_TRUE((*node)->read(8 * 512, buf.data(), buf.size()));
    EXPECT_TRUE(std::equal(buf.begin(), buf.begin() + 1000, s.guest.begin() + 4096));
    EXPECT_TRUE(std::all_of(buf.begin() + 1000, buf.end(), [](uint8_t b) { return b == 0; }));
    // A chunk past the end of the file, one whose stream is cut short, a
    // sector no chunk covers: I/O errors, nothing else.
    e = s.entries;
    e[0].offset = 1ull << 40;
    e[2].length -= 5;
    node = open_over(make_dmg(s.fork, e, 40));
    ASSERT_TRUE(node);
    ASSERT_TRUE((*node)->read(8 * 512, buf.data(), buf.size()));  // reads zeroes past the file
    EXPECT_FALSE((*node)->read(0, buf.data(), 512));
    EXPECT_FALSE((*node)->read(33 * 512, buf.data(), 512));
    // Chunk sectors that wrap 64 bits.
    e = s.entries;
    e[1].sector = UINT64_MAX - 3;
    node = open_over(make_dmg(s.fork, e, 32));
    ASSERT_TRUE(node);
    EXPECT_FALSE((*node)->read(16 * 512, buf.data(), 512));
}

TEST(Dmg, LimitsWithQemuMessages) {
    Sample s;
    auto e = s.entries;
    e[2].count = 131073;
    auto r = open_over(make_dmg(s.fork, e, 32));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Could not open '': Invalid argument");
    e = s.entries;
    e[1].count = 1ull << 40;  // zeroes may be as large as they like
    EXPECT_TRUE(open_over(make_dmg(s.fork, e, 32)));
    e = s.entries;
    e[0].length = (64u << 20) + 1;
    EXPECT_FALSE(open_over(make_dmg(s.fork, e, 32)));
    EXPECT_EQ(open_over(make_dmg(s.fork, s.entries, 1ull << 63)).error().code, EINVAL);
    EXPECT_EQ(open_over(make_dmg(s.fork, s.entries, 1ull << 60)).error().code, EFBIG);
    EXPECT_EQ(open_over(std::vector<uint8_t>(100)).error().message, "dmg file must be at least 512 bytes long");
    EXPECT_EQ(open_over(std::vector<uint8_t>(5000)).error().message, "Could not locate UDIF trailer in dmg file");
}

TEST(Dmg, ProbesByNameAndIsReadOnly) {
    const Driver *d = find_driver("dmg");
    std::vector<uint8_t> head(2048);
    EXPECT_EQ(d->probe(head, "a.dmg"), 2);
    EXPECT_EQ(d->probe(head, ".dmg"), 0);
    EXPECT_EQ(d->probe(head, "a.img"), 0);
    EXPECT_TRUE(d->read_only);
}

}  // namespace
}  // namespace qimg
