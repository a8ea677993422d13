// Unit tests of the vhdx driver over images built in memory
// (tests/lib/mem_node.h): reads through the BAT and its block states,
// hostile headers, region tables, metadata, BATs and logs refused with a
// clear error (never a crash or a hang), and a log replayed on a
// read-write open and refused on a read-only one.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "format/vhdx/format.h"
#include "format/vhdx/log.h"
#include "lib/mem_node.h"
#include "util/crc32c.h"
#include "util/endian.h"

namespace qimg::vhdx {
namespace {

constexpr uint64_t kLogAt = 1 * MiB, kBatAt = 2 * MiB, kMetaAt = 3 * MiB, kDataAt = 4 * MiB;
const Guid kLogGuid = make_guid(0x11111111, 0x2222, 0x3333, 0x4444555566667777);

void put_guid(uint8_t *p, const Guid &g) { std::memcpy(p, g.data(), 16); }

void seal(std::vector<uint8_t> &img, size_t at, size_t len) {
    put_le32(img.data() + at + 4, 0);
    put_le32(img.data() + at + 4, checksum(std::span<const uint8_t>(img.data() + at, len), 4));
}

void write_header(std::vector<uint8_t> &img, uint64_t at, uint64_t seq, const Guid &log_guid = {}) {
    Header h;
    h.sequence = seq;
    h.version = 1;
    h.log_length = 1 * MiB;
    h.log_offset = kLogAt;
    h.log_guid = log_guid;
    store_header(std::span<uint8_t>(img.data() + at, kHeaderSize), h);
}

void region_entry(std::vector<uint8_t> &img, int i, const Guid &g, uint64_t off, uint32_t len, uint32_t bits = 1) {
    uint8_t *e = img.data() + kRegionTableOffset + 16 + 32 * i;
    put_guid(e, g);
    put_le64(e + 16, off);
    put_le32(e + 24, len);
    put_le32(e + 28, bits);
}

void meta_entry(std::vector<uint8_t> &img, int i, const Guid &g, uint32_t off, uint32_t len, uint32_t bits = 4) {
    uint8_t *e = img.data() + kMetaAt + 32 + 32 * i;
    put_guid(e, g);
    put_le32(e + 16, off);
    put_le32(e + 20, len);
    put_le32(e + 24, bits);
}

void reseal_regions(std::vector<uint8_t> &img) { seal(img, kRegionTableOffset, kRegionTableSize); }

// A dynamic 4 MiB disk with 1 MiB blocks: block 1 present at kDataAt
// (pattern 0x5a), block 2 ZERO, blocks 0 and 3 NOT_PRESENT.
std::vector<uint8_t> make_image(uint32_t block_size = 1 * MiB, uint64_t size = 4 * MiB) {
    std::vector<uint8_t> img(kDataAt + 1 * MiB, 0);
    std::memcpy(img.data(), "vhdxfile", 8);
    write_header(img, kHeader1Offset, 1);
    write_header(img, kHeader2Offset, 2);
    uint8_t *rt = img.data() + kRegionTableOffset;
    put_le32(rt, kRegionSignature);
    put_le32(rt + 8, 2);
    region_entry(img, 0, kBatGuid, kBatAt, 1 * MiB);
    region_entry(img, 1, kMetadataGuid, kMetaAt, 1 * MiB);
    reseal_regions(img);
    std::memcpy(img.data() + kRegionTable2Offset, rt, kRegionTableSize);
    uint8_t *md = img.data() + kMetaAt;
    put_le64(md, kMetadataSignature);
    put_le16(md + 10, 5);
    meta_entry(img, 0, kFileParamsGuid, 64 * KiB, 8);
    meta_entry(img, 1, kVirtualSizeGuid, 64 * KiB + 8, 8, 6);
    meta_entry(img, 2, kPage83Guid, 64 * KiB + 16, 16, 6);
    meta_entry(img, 3, kLogicalSectorGuid, 64 * KiB + 32, 4, 6);
    meta_entry(img, 4, kPhysicalSectorGuid, 64 * KiB + 36, 4, 6);
    put_le32(md + 64 * KiB, block_size);
    put_le64(md + 64 * KiB + 8, size);
    put_le32(md + 64 * KiB + 32, 512);
    put_le32(md + 64 * KiB + 36, 4096);
    put_le64(img.data() + kBatAt + 8, kDataAt | kFullyPresent);
    put_le64(img.data() + kBatAt + 16, kZero);
    std::memset(img.data() + kDataAt, 0x5a, 1 * MiB);
    return img;
}

Result<NodePtr> open_over(std::shared_ptr<test::MemNode> mem, bool rw = false, bool check = false) {
    OpenRequest req;
    req.file = std::move(mem);
    req.flags.read_write = rw;
    req.flags.check = check;
    return find_driver("vhdx")->open(req);
}
Result<NodePtr> open_over(std::vector<uint8_t> img) { return open_over(std::make_shared<test::MemNode>(std::move(img))); }

std::string open_error(std::vector<uint8_t> img) {
    auto r = open_over(std::move(img));
    return r ? std::string("opened") : r.error().message;
}
const std::string kInval = "Could not open '': Invalid argument";
const std::string kNotSup = "Could not open '': Operation not supported";

TEST(VhdxFormat, GuidsAndChecksum) {
    // The BAT region's GUID as it appears in a qemu-img image.
    const uint8_t bat[16] = {0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
                             0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08};
    EXPECT_EQ(0, std::memcmp(kBatGuid.data(), bat, 16));
    EXPECT_EQ(crc32c(std::span<const uint8_t>(reinterpret_cast<const uint8_t *>("123456789"), 9)), 0xE3069283u);
}

TEST(Vhdx, ReadsBlockStates) {
    auto n = open_over(make_image());
    ASSERT_TRUE(n) << n.error().message;
    EXPECT_EQ((*n)->length(), 4 * MiB);
    EXPECT_EQ((*n)->cluster_size(), 1 * MiB);
    std::vector<uint8_t> buf(4 * MiB, 0xee);
    ASSERT_TRUE((*n)->read(0, buf.data(), buf.size()));
    for (size_t i = 0; i < buf.size(); ++i) {
        uint8_t want = (i >= 1 * MiB && i < 2 * MiB) ? 0x5a : 0;
        ASSERT_EQ(buf[i], want) << i;
    }
    // Unaligned, across blocks.
    ASSERT_TRUE((*n)->read(2 * MiB - 3, buf.data(), 6));
    EXPECT_EQ(buf[0], 0x5a);
    EXPECT_EQ(buf[3], 0);
    EXPECT_FALSE((*n)->read(4 * MiB - 1, buf.data(), 2));
    auto st = (*n)->block_status(0, 4 * MiB);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags & kStatusOffsetValid, 0u);  // as QEMU: no block status of its own
    EXPECT_FALSE((*n)->write(0, buf.data(), 1));  // opened read-only
}

TEST(VhdxWrite, AllocatesAtTheEndAndPublishesTheBatLast) {
    auto mem = std::make_shared<test::MemNode>(make_image());
    auto n = open_over(mem, true);
    ASSERT_TRUE(n) << n.error().message;
    const uint64_t end = mem->length();
    // Into block 0 (not present) and block 2 (ZERO): each gets a new block
    // at the next 1 MiB boundary of the file.
    std::vector<uint8_t> a(3000, 0xa1), b(512, 0xb2);
    ASSERT_TRUE((*n)->write(100, a.data(), a.size()));
    ASSERT_TRUE((*n)->write(2 * MiB + 4096, b.data(), b.size()));
    // Into block 1 (present): in place.
    ASSERT_TRUE((*n)->write(1 * MiB + 10, b.data(), b.size()));
    EXPECT_EQ(mem->length(), end + 2 * MiB);
    std::vector<uint8_t> bat(24);
    ASSERT_TRUE(mem->read(kBatAt, bat.data(), bat.size()));
    EXPECT_EQ(le64(bat.data()), end | kFullyPresent);
    EXPECT_EQ(le64(bat.data() + 8), kDataAt | kFullyPresent);
    EXPECT_EQ(le64(bat.data() + 16), (end + 1 * MiB) | kFullyPresent);
    // The rest of a new block reads as zeroes; another open sees the data.
    auto again = open_over(mem);
    ASSERT_TRUE(again) << again.error().message;
    std::vector<uint8_t> got(4 * MiB);
    ASSERT_TRUE((*again)->read(0, got.data(), got.size()));
    for (size_t i = 0; i < 1 * MiB; ++i) ASSERT_EQ(got[i], (i >= 100 && i < 3100) ? 0xa1 : 0) << i;
    for (size_t i = 1 * MiB; i < 2 * MiB; ++i)
        ASSERT_EQ(got[i], (i >= 1 * MiB + 10 && i < 1 * MiB + 522) ? 0xb2 : 0x5a) << i;
    for (size_t i = 2 * MiB; i < 4 * MiB; ++i)
        ASSERT_EQ(got[i], (i >= 2 * MiB + 4096 && i < 2 * MiB + 4608) ? 0xb2 : 0) << i;
    // The headers were updated (twice) on the first write only.
    std::vector<uint8_t> h1(kHeaderSize), h2(kHeaderSize);
    ASSERT_TRUE(mem->read(kHeader1Offset, h1.data(), h1.size()));
    ASSERT_TRUE(mem->read(kHeader2Offset, h2.data(), h2.size()));
    auto h = pick_header(h1, h2);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->h.sequence, 4u);
}

TEST(VhdxWrite, ZeroesAndFaults) {
    auto mem = std::make_shared<test::MemNode>(make_image());
    auto n = open_over(mem, true);
    ASSERT_TRUE(n);
    const uint64_t end = mem->length();
    // Blocks that read as zeroes are left alone; a present one is zeroed.
    ASSERT_TRUE((*n)->write_zeroes(0, 4 * MiB, 0));
    EXPECT_EQ(mem->length(), end);
    std::vector<uint8_t> got(1 * MiB, 1);
    ASSERT_TRUE((*n)->read(1 * MiB, got.data(), got.size()));
    for (uint8_t c : got) ASSERT_EQ(c, 0);
    EXPECT_FALSE((*n)->write(4 * MiB - 1, got.data(), 2));
    // A partially present block cannot be written (as QEMU: EIO).
    auto img = make_image();
    put_le64(img.data() + kBatAt, kDataAt | kPartiallyPresent);
    auto m = open_over(std::make_shared<test::MemNode>(img), true);
    ASSERT_TRUE(m);
    auto r = (*m)->write(0, got.data(), 512);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
}

TEST(Vhdx, PartiallyPresentAndUnknownStatesFailReads) {
    for (uint64_t state : {uint64_t(4), uint64_t(7)}) {
        auto img = make_image();
        put_le64(img.data() + kBatAt, kDataAt | state);
        auto n = open_over(img);
        ASSERT_TRUE(n);
        uint8_t b[512];
        auto r = (*n)->read(0, b, sizeof b);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code, EIO);
    }
}

TEST(Vhdx, FileSignatureAndHeaders) {
    auto img = make_image();
    img[0] = 'X';
    EXPECT_EQ(open_error(img), kInval);
    EXPECT_EQ(open_error({}), kInval);

    // One header damaged: the other is used, whichever it is.
    for (uint64_t at : {kHeader1Offset, kHeader2Offset}) {
        img = make_image();
        img[at + 100] ^= 1;
        EXPECT_EQ(open_error(img), "opened");
    }
    img = make_image();
    img[kHeader1Offset + 100] ^= 1;
    img[kHeader2Offset + 100] ^= 1;
    EXPECT_EQ(open_error(img), "No valid VHDX header found");
    // Equal sequence numbers: only identical headers are accepted.
    img = make_image();
    write_header(img, kHeader2Offset, 1);
    EXPECT_EQ(open_error(img), "opened");
    write_header(img, kHeader2Offset, 1, kLogGuid);
    EXPECT_EQ(open_error(img), "No valid VHDX header found");
    // A wrong version.
    img = make_image();
    put_le16(img.data() + kHeader1Offset + 66, 2);
    seal(img, kHeader1Offset, kHeaderSize);
    put_le16(img.data() + kHeader2Offset + 66, 2);
    seal(img, kHeader2Offset, kHeaderSize);
    EXPECT_EQ(open_error(img), "No valid VHDX header found");
    // The log placed in the header section, or misaligned.
    for (uint64_t off : {uint64_t(0), 1536 * KiB}) {
        img = make_image();
        put_le64(img.data() + kHeader2Offset + 72, off);
        seal(img, kHeader2Offset, kHeaderSize);
        EXPECT_EQ(open_error(img), kInval);
    }
}

TEST(Vhdx, RegionTable) {
    auto img = make_image();
    img[kRegionTableOffset + 100] ^= 1;  // bad checksum: the second copy is used
    EXPECT_EQ(open_error(img), "opened");
    img[kRegionTable2Offset + 100] ^= 1;  // both damaged
    EXPECT_EQ(open_error(img), kInval);
    img = make_image();
    put_le32(img.data() + kRegionTableOffset, 0x12345678);  // bad signature
    EXPECT_EQ(open_error(img), "opened");

    img = make_image();
    put_le32(img.data() + kRegionTableOffset + 8, 2048);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // the BAT over the log
    region_entry(img, 0, kBatGuid, kLogAt, 1 * MiB);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // the metadata over the BAT
    region_entry(img, 1, kMetadataGuid, kBatAt + 4096, 1 * MiB);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // a region past the end of the file
    region_entry(img, 0, kBatGuid, 64 * MiB, 1 * MiB);
    reseal_regions(img);
    EXPECT_NE(open_error(img).find("lies outside the image file"), std::string::npos);

    img = make_image();  // a huge region offset (no wrap in the overlap check)
    region_entry(img, 0, kBatGuid, UINT64_MAX - 4096, 1 * MiB);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // an unknown required region; an unknown optional one
    put_le32(img.data() + kRegionTableOffset + 8, 3);
    region_entry(img, 2, kLogGuid, 8 * MiB, 1 * MiB, 1);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), kNotSup);
    region_entry(img, 2, kLogGuid, 8 * MiB, 1 * MiB, 0);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), "opened");

    img = make_image();  // no metadata region; two BATs
    put_le32(img.data() + kRegionTableOffset + 8, 1);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), kInval);
    region_entry(img, 1, kBatGuid, kMetaAt, 1 * MiB);
    put_le32(img.data() + kRegionTableOffset + 8, 2);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), kInval);
}

TEST(Vhdx, Metadata) {
    auto img = make_image();
    img[kMetaAt] = 'X';
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // more entries than the 64 KiB table holds
    put_le16(img.data() + kMetaAt + 10, 2048);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // a duplicate item
    meta_entry(img, 4, kLogicalSectorGuid, 64 * KiB + 32, 4);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // a required item missing
    put_le16(img.data() + kMetaAt + 10, 4);
    EXPECT_EQ(open_error(img), kNotSup);

    img = make_image();  // a differencing disk (as QEMU 7.2: not supported)
    put_le16(img.data() + kMetaAt + 10, 6);
    meta_entry(img, 5, kParentLocatorGuid, 64 * KiB + 64, 64);
    EXPECT_EQ(open_error(img), kNotSup);

    img = make_image();  // has-parent without a locator
    put_le32(img.data() + kMetaAt + 64 * KiB + 4, kParamHasParent);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // an item outside the region
    meta_entry(img, 1, kVirtualSizeGuid, 1 * MiB - 4, 8);
    EXPECT_NE(open_error(img).find("outside the metadata region"), std::string::npos);

    EXPECT_EQ(open_error(make_image(3 * MiB)), kInval);      // not a power of two
    EXPECT_EQ(open_error(make_image(512 * MiB)), kInval);    // too large
    EXPECT_EQ(open_error(make_image(512 * KiB)), kInval);    // too small
    img = make_image();
    put_le32(img.data() + kMetaAt + 64 * KiB + 32, 4096);  // 4K logical sectors
    EXPECT_EQ(open_error(img), kNotSup);
}

TEST(Vhdx, Bat) {
    auto img = make_image();  // a present block past the end of the file
    put_le64(img.data() + kBatAt, (64 * MiB) | kFullyPresent);
    EXPECT_EQ(open_error(img), kInval);
    // check opens it anyway and counts it.
    auto n = open_over(std::make_shared<test::MemNode>(img), false, true);
    ASSERT_TRUE(n);
    auto rep = (*n)->check(CheckRepair::None);
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions, 1);

    img = make_image();  // a block over the metadata region
    put_le64(img.data() + kBatAt, kMetaAt | kFullyPresent);
    EXPECT_EQ(open_error(img), kInval);

    img = make_image();  // an offset that would wrap
    put_le64(img.data() + kBatAt, kBatOffsetMask | kFullyPresent);
    EXPECT_EQ(open_error(img), kInval);

    // A BAT region too small for the disk's blocks.
    img = make_image(1 * MiB, 1ull << 40);
    EXPECT_EQ(open_error(img), kInval);
    // An empty disk: QEMU's wrapped count needs 2^32 / 4096 entries (8 MiB).
    img = make_image(1 * MiB, 0);
    EXPECT_EQ(open_error(img), kInval);
    img.resize(16 * MiB);
    region_entry(img, 0, kBatGuid, 8 * MiB, 8 * MiB);
    reseal_regions(img);
    EXPECT_EQ(open_error(img), "opened");
}

// A BAT of more pages than the driver caches (5 TiB of 1 MiB blocks: ~5.1
// million entries, 40 MiB): the open-time walk evicts pages, and writes
// and reads far apart still meet the right entries, on disk and in memory.
TEST(Vhdx, BatLargerThanItsCache) {
    const uint64_t size = 5ull << 40;
    auto img = make_image(1 * MiB, size);
    const uint64_t bat_at = 8 * MiB, bat_len = 41 * MiB;
    img.resize(bat_at + bat_len);
    region_entry(img, 0, kBatGuid, bat_at, uint32_t(bat_len));
    reseal_regions(img);
    const uint32_t chunk = 4096;  // payload blocks per bitmap block (1 MiB blocks, 512-byte sectors)
    const uint64_t far = size / MiB - 1;
    put_le64(img.data() + bat_at + 8 * bat_index(far, chunk), kDataAt | kFullyPresent);
    auto mem = std::make_shared<test::MemNode>(std::move(img));
    {
        auto n = open_over(mem, true);
        ASSERT_TRUE(n) << n.error().message;
        std::vector<uint8_t> got(4096);
        ASSERT_TRUE((*n)->read(far * MiB, got.data(), got.size()));
        EXPECT_EQ(got[0], 0x5a);
        std::vector<uint8_t> a(4096, 0xa7);
        for (uint64_t block : {uint64_t(0), uint64_t(3) << 20, far - 1}) ASSERT_TRUE((*n)->write(block * MiB, a.data(), a.size()));
        for (uint64_t block : {uint64_t(0), uint64_t(3) << 20, far - 1}) {
            ASSERT_TRUE((*n)->read(block * MiB, got.data(), got.size()));
            EXPECT_EQ(got[4095], 0xa7) << block;
        }
    }
    auto again = open_over(mem);
    ASSERT_TRUE(again) << again.error().message;
    std::vector<uint8_t> got(4096);
    for (uint64_t block : {uint64_t(0), uint64_t(3) << 20, far - 1}) {
        ASSERT_TRUE((*again)->read(block * MiB, got.data(), got.size()));
        EXPECT_EQ(got[0], 0xa7) << block;
        uint8_t le[8];
        ASSERT_TRUE(mem->read(bat_at + 8 * bat_index(block, chunk), le, 8));
        EXPECT_EQ(le64(le) & kBatStateMask, kFullyPresent) << block;
    }
    ASSERT_TRUE((*again)->read(far * MiB + MiB - 4096, got.data(), got.size()));
    EXPECT_EQ(got[0], 0x5a);
}

// --- the log ----------------------------------------------------------------

struct LogWrite {
    uint64_t offset;
    uint8_t fill;  // a data sector filled with it; 0: a zero descriptor
    uint64_t zero_len = 4096;
};

// Writes a log entry with `writes` at log position `pos`; returns its length.
uint32_t put_entry(std::vector<uint8_t> &img, uint32_t pos, uint64_t seq, const std::vector<LogWrite> &writes,
                   uint64_t last_offset = 0) {
    uint32_t ndata = 0;
    for (auto &w : writes) ndata += w.fill != 0;
    uint32_t ndesc = uint32_t((writes.size() + 2 + 127) / 128);  // header and descriptor sectors
    uint32_t len = 4096 * (ndesc + ndata);
    std::vector<uint8_t> e(len, 0);
    put_le32(e.data(), kLogEntrySignature);
    put_le32(e.data() + 8, len);
    put_le64(e.data() + 16, seq);
    put_le32(e.data() + 24, uint32_t(writes.size()));
    put_guid(e.data() + 32, kLogGuid);
    put_le64(e.data() + 48, img.size());
    put_le64(e.data() + 56, last_offset ? last_offset : img.size());
    uint32_t data_at = 4096 * ndesc;
    for (size_t i = 0; i < writes.size(); ++i) {
        uint8_t *d = e.data() + 64 + 32 * i;
        const LogWrite &w = writes[i];
        put_le32(d, w.fill ? kLogDescSignature : kLogZeroSignature);
        if (w.fill) {
            put_le32(d + 4, w.fill * 0x01010101u);
            put_le64(d + 8, w.fill * 0x0101010101010101ull);
            uint8_t *s = e.data() + data_at;
            put_le32(s, kLogDataSignature);
            put_le32(s + 4, uint32_t(seq >> 32));
            std::memset(s + 8, w.fill, 4084);
            put_le32(s + 4092, uint32_t(seq));
            data_at += 4096;
        } else {
            put_le64(d + 8, w.zero_len);
        }
        put_le64(d + 16, w.offset);
        put_le64(d + 24, seq);
    }
    put_le32(e.data() + 4, crc32c(e));
    std::memcpy(img.data() + kLogAt + pos, e.data(), len);
    return len;
}

std::vector<uint8_t> dirty_image(const std::vector<LogWrite> &writes) {
    auto img = make_image();
    write_header(img, kHeader2Offset, 2, kLogGuid);
    put_entry(img, 0, 5, writes);
    return img;
}

TEST(VhdxLog, ReadOnlyOpenRefusesADirtyLog) {
    auto r = open_over(dirty_image({{kDataAt, 0x77}}));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPERM);
    EXPECT_NE(r.error().message.find("contains a log that needs to be replayed"), std::string::npos);
    EXPECT_NE(r.error().hint.find("qemu-img check -r all"), std::string::npos);
}

TEST(VhdxLog, ReadWriteOpenReplaysAndEmptiesTheLog) {
    // The entry writes a data sector into block 1 and zeroes another.
    auto mem = std::make_shared<test::MemNode>(dirty_image({{kDataAt, 0x77}, {kDataAt + 8192, 0, 8192}}));
    auto n = open_over(mem, true);
    ASSERT_TRUE(n) << n.error().message;
    std::vector<uint8_t> b(16384);
    ASSERT_TRUE((*n)->read(1 * MiB, b.data(), b.size()));
    for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(b[i], 0x77) << i;
    for (size_t i = 4096; i < 8192; ++i) ASSERT_EQ(b[i], 0x5a) << i;
    for (size_t i = 8192; i < 16384; ++i) ASSERT_EQ(b[i], 0) << i;
    auto rep = (*n)->check(CheckRepair::All);
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions_fixed, 1);
    // The current header has an empty log now: a read-only open works.
    EXPECT_TRUE(open_over(mem));
    std::vector<uint8_t> hdr(kHeaderSize * 2);
    ASSERT_TRUE(mem->read(kHeader1Offset, hdr.data(), hdr.size()));
    auto h = pick_header(std::span(hdr).first(kHeaderSize), std::span(hdr).subspan(kHeaderSize * 1, kHeaderSize));
    ASSERT_TRUE(h);  // (header 2 sits 64 KiB on: read separately below)
    std::vector<uint8_t> h2(kHeaderSize);
    ASSERT_TRUE(mem->read(kHeader2Offset, h2.data(), h2.size()));
    auto a = pick_header(std::span(hdr).first(kHeaderSize), h2);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->h.sequence, 6u);  // 2 + four updates
    EXPECT_TRUE(is_zero(a->h.log_guid));
}

TEST(VhdxLog, InvalidEntriesAreNotReplayed) {
    auto img = dirty_image({{kDataAt, 0x77}});
    img[kLogAt + 4096 + 100] ^= 1;  // checksum mismatch: no valid sequence
    auto n = open_over(img);
    ASSERT_TRUE(n) << n.error().message;
    // A different log GUID in the entry: not this log's.
    img = make_image();
    write_header(img, kHeader2Offset, 2, make_guid(1, 2, 3, 4));
    put_entry(img, 0, 5, {{kDataAt, 0x77}});
    EXPECT_EQ(open_error(img), "opened");
}

TEST(VhdxLog, HostileEntriesFailCleanly) {
    // A replay into the headers, the log itself, or far past the end.
    for (uint64_t off : {kHeader1Offset, kLogAt + 8192, uint64_t(1) << 50}) {
        auto mem = std::make_shared<test::MemNode>(dirty_image({{off, 0x77}}));
        auto r = open_over(mem, true);
        ASSERT_FALSE(r) << off;
        EXPECT_NE(r.error().message.find("writes outside"), std::string::npos) << r.error().message;
    }
    // A zero descriptor of 2^63 bytes.
    auto r = open_over(std::make_shared<test::MemNode>(dirty_image({{kDataAt, 0, 1ull << 63}})), true);
    ASSERT_FALSE(r);
    // A descriptor with a bad signature fails the open (as QEMU).
    auto img = dirty_image({{kDataAt, 0x77}});
    put_le32(img.data() + kLogAt + 64, 0x12345678);
    put_le32(img.data() + kLogAt + 4, 0);
    put_le32(img.data() + kLogAt + 4,
             crc32c(std::span<const uint8_t>(img.data() + kLogAt, 8192)));
    EXPECT_EQ(open_error(img), kInval);
}

TEST(VhdxLog, AnEntryAsLongAsTheLogEnds) {
    // QEMU searches such a log forever; the search must end.
    auto img = make_image();
    write_header(img, kHeader2Offset, 2, kLogGuid);
    std::vector<LogWrite> w;
    for (int i = 0; i < 254; ++i) w.push_back({kDataAt + 4096 * uint64_t(i), uint8_t(1 + i % 200)});
    ASSERT_EQ(put_entry(img, 0, 5, w), 1 * MiB);
    auto mem = std::make_shared<test::MemNode>(img);
    EXPECT_FALSE(open_over(mem));  // found, so refused read-only
    auto n = open_over(mem, true);
    ASSERT_TRUE(n) << n.error().message;
    uint8_t b = 0;
    ASSERT_TRUE((*n)->read(1 * MiB + 4096 * 253, &b, 1));
    EXPECT_EQ(b, 1 + 253 % 200);
}

TEST(VhdxLog, AHugeLogPastTheEndOfTheFileIsSearchedQuickly) {
    // A 4 GiB - 1 MiB log named by the header, almost all past the file.
    auto img = make_image();
    Header h;
    h.sequence = 3;
    h.version = 1;
    h.log_length = uint32_t(4096 * MiB - 1 * MiB);
    h.log_offset = kLogAt;
    h.log_guid = kLogGuid;
    store_header(std::span<uint8_t>(img.data() + kHeader2Offset, kHeaderSize), h);
    put_entry(img, 0, 5, {{kDataAt, 0x77}});
    auto r = open_over(img);
    ASSERT_FALSE(r);  // the entry at its start is found
    EXPECT_EQ(r.error().code, EPERM);
}

TEST(VhdxLog, ChoosesTheSequenceWithTheHighestNumber) {
    auto img = make_image();
    write_header(img, kHeader2Offset, 2, kLogGuid);
    uint32_t pos = put_entry(img, 0, 7, {{kDataAt, 0x11}});
    pos += 4096 * 3;
    put_entry(img, pos, 9, {{kDataAt, 0x22}});
    auto mem = std::make_shared<test::MemNode>(img);
    LogPlace log{kLogAt, uint32_t(1 * MiB), kLogGuid};
    auto seq = find_log_sequence(*mem, log);
    ASSERT_TRUE(seq);
    ASSERT_TRUE(*seq);
    EXPECT_EQ((*seq)->first_sequence, 9u);
    EXPECT_EQ((*seq)->start, pos);
    auto n = open_over(mem, true);
    ASSERT_TRUE(n);
    uint8_t b = 0;
    ASSERT_TRUE((*n)->read(1 * MiB + 100, &b, 1));
    EXPECT_EQ(b, 0x22);
}

}  // namespace
}  // namespace qimg::vhdx
