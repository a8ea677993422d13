// Unit tests of the cloop driver over an in-memory file: images built here
// with zlib (qemu-img cannot create cloop), reads across blocks, the cache
// under concurrent readers, and every header check with QEMU's message.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "block/driver.h"
#include "codec/codec.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg {
namespace {

constexpr std::string_view kMagic =
    "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

std::vector<uint8_t> zlib(std::span<const uint8_t> in) {
    std::vector<uint8_t> out(in.size() + 1024);
    auto n = codec::compress(codec::Params{codec::Codec::Zlib, 15}, in, out);
    out.resize(n ? *n : 0);
    return out;
}

// `data` in blocks of `bs`, with the header fields and table overridable.
struct Image {
    std::vector<uint8_t> data;
    uint32_t bs = 4096;
    std::optional<uint32_t> n_blocks;
    std::map<size_t, uint64_t> offsets;  // overrides
    std::vector<uint8_t> bytes() const {
        size_t n = data.size() / bs;
        std::vector<uint8_t> b(128);
        std::memcpy(b.data(), kMagic.data(), kMagic.size());
        b.resize(136 + 8 * (n + 1));
        put_be32(b.data() + 128, bs);
        put_be32(b.data() + 132, n_blocks.value_or(static_cast<uint32_t>(n)));
        std::vector<uint64_t> offs{b.size()};
        std::vector<uint8_t> body;
        for (size_t i = 0; i < n; ++i) {
            auto c = zlib(std::span<const uint8_t>(data.data() + i * bs, bs));
            body.insert(body.end(), c.begin(), c.end());
            offs.push_back(b.size() + body.size());
        }
        for (auto [i, v] : offsets) offs[i] = v;
        for (size_t i = 0; i <= n; ++i) put_be64(b.data() + 136 + 8 * i, offs[i]);
        b.insert(b.end(), body.begin(), body.end());
        return b;
    }
};

Result<NodePtr> open_over(std::vector<uint8_t> bytes) {
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(std::move(bytes));
    return find_driver("cloop")->open(req);
}

std::string open_error(std::vector<uint8_t> bytes) {
    auto n = open_over(std::move(bytes));
    return n ? "" : n.error().message;
}

TEST(Cloop, ReadsBlocksWholeAndInPieces) {
    Image im;
    im.data = test::pattern(5 * 4096, 0x23);
    std::fill(im.data.begin() + 4096, im.data.begin() + 8192, 0);
    auto node = open_over(im.bytes());
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), im.data.size());
    EXPECT_EQ(test::read_all(**node), im.data);
    for (auto [off, len] : {std::pair<uint64_t, size_t>{4000, 200}, {1, 4096 * 3}, {5 * 4096 - 1, 1}}) {
        std::vector<uint8_t> buf(len);
        ASSERT_TRUE((*node)->read(off, buf.data(), len));
        EXPECT_TRUE(std::equal(buf.begin(), buf.end(), im.data.begin() + off)) << off;
    }
    std::vector<uint8_t> buf(2);
    EXPECT_FALSE((*node)->read(5 * 4096 - 1, buf.data(), 2));
}

TEST(Cloop, ConcurrentReadersShareTheCacheSafely) {
    Image im;
    im.data = test::pattern(16 * 4096, 0x61);
    auto node = open_over(im.bytes());
    ASSERT_TRUE(node);
    std::vector<std::thread> ts;
    std::atomic<int> bad{0};
    for (int t = 0; t < 4; ++t)
        ts.emplace_back([&, t] {
            std::vector<uint8_t> buf(1000);
            for (int i = 0; i < 300; ++i) {
                uint64_t off = (uint64_t(i) * 7919 + t * 104729) % (im.data.size() - buf.size());
                if (!(*node)->read(off, buf.data(), buf.size()) ||
                    !std::equal(buf.begin(), buf.end(), im.data.begin() + off))
                    ++bad;
            }
        });
    for (auto &t : ts) t.join();
    EXPECT_EQ(bad.load(), 0);
}

TEST(Cloop, CorruptOrShortBlocksAreEio) {
    Image im;
    im.data = test::pattern(3 * 4096, 0x44);
    auto b = im.bytes();
    size_t table_end = 136 + 8 * 4;
    b[table_end + 10] ^= 0xff;  // inside block 0's stream
    auto node = open_over(b);
    ASSERT_TRUE(node);
    std::vector<uint8_t> buf(4096);
    auto r = (*node)->read(0, buf.data(), buf.size());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_TRUE((*node)->read(4096, buf.data(), buf.size()));

    // A block that inflates to less than block_size.
    Image small = im;
    small.bs = 8192;
    small.data.resize(8192);
    auto sb = small.bytes();
    auto c = zlib(std::span<const uint8_t>(im.data.data(), 4096));
    sb.resize(136 + 16);
    put_be64(sb.data() + 144, sb.size() + c.size());
    sb.insert(sb.end(), c.begin(), c.end());
    node = open_over(sb);
    ASSERT_TRUE(node);
    EXPECT_FALSE((*node)->read(0, buf.data(), 512));

    // The file ends inside the last block.
    b = im.bytes();
    b.resize(b.size() - 5);
    node = open_over(b);
    ASSERT_TRUE(node);
    EXPECT_TRUE((*node)->read(0, buf.data(), buf.size()));
    EXPECT_FALSE((*node)->read(2 * 4096, buf.data(), buf.size()));
}

TEST(Cloop, HeaderChecksWithQemuMessages) {
    Image im;
    im.data = test::pattern(2 * 4096, 0x11);
    Image bad = im;
    bad.bs = 1000;
    bad.data.resize(2000);
    EXPECT_EQ(open_error(bad.bytes()), "block_size 1000 must be a multiple of 512");
    auto b = im.bytes();
    put_be32(b.data() + 128, 0);
    EXPECT_EQ(open_error(b), "block_size cannot be zero");
    put_be32(b.data() + 128, (64u << 20) + 512);
    EXPECT_EQ(open_error(b), "block_size 67109376 must be 64 MB or less");
    b = im.bytes();
    put_be32(b.data() + 132, 0x20000000);
    EXPECT_EQ(open_error(b), "n_blocks 536870912 must be 536870911 or less");
    put_be32(b.data() + 132, 0x4000000);
    EXPECT_EQ(open_error(b), "image requires too many offsets, try increasing block size");
    bad = im;
    bad.offsets[1] = 10;
    EXPECT_EQ(open_error(bad.bytes()), "offsets not monotonically increasing at index 1, image file is corrupt");
    bad = im;
    bad.offsets[2] = (1ull << 40);
    EXPECT_EQ(open_error(bad.bytes()), "invalid compressed block size at index 2, image file is corrupt");
}

TEST(Cloop, TableBeyondTheFileCostsNoMemoryAndReadsAsZeroOffsets) {
    // Claims 60M blocks (480 MiB of table QEMU would allocate) but holds
    // three entries: the table past the file is zeroes, and the first of
    // them decreases.
    std::vector<uint8_t> b(136 + 24);
    std::memcpy(b.data(), kMagic.data(), kMagic.size());
    put_be32(b.data() + 128, 512);
    put_be32(b.data() + 132, 60000000);
    for (int i = 0; i < 3; ++i) put_be64(b.data() + 136 + 8 * i, 200 + 100 * i);
    EXPECT_EQ(open_error(b), "offsets not monotonically increasing at index 3, image file is corrupt");
    // All zeroes: opens (every block empty), every read fails.
    std::vector<uint8_t> z(136);
    std::memcpy(z.data(), kMagic.data(), kMagic.size());
    put_be32(z.data() + 128, 512);
    put_be32(z.data() + 132, 60000000);
    auto node = open_over(z);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), 60000000ull * 512);
    std::vector<uint8_t> buf(512);
    EXPECT_FALSE((*node)->read(512 * 1000, buf.data(), buf.size()));
}

TEST(Cloop, ProbeAndReadOnly) {
    const Driver *d = find_driver("cloop");
    Image im;
    im.data = test::pattern(4096, 1);
    auto b = im.bytes();
    EXPECT_EQ(d->probe(std::span<const uint8_t>(b.data(), 512), "x"), 2);
    EXPECT_EQ(d->probe(std::span<const uint8_t>(b.data(), 20), "x"), 2);  // as much as is there
    b[3] = 'x';
    EXPECT_EQ(d->probe(std::span<const uint8_t>(b.data(), 512), "x"), 0);
    EXPECT_TRUE(d->read_only);
    EXPECT_FALSE(d->can_create());
}

}  // namespace
}  // namespace qimg
