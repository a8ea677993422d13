// Unit tests of the vpc driver: the CHS geometry and size rules against
// values qemu-img 7.2 gives, dynamic and fixed images built in memory
// (tests/lib/mem_node.h) read and written, and hostile footers, headers
// and BATs refused with a clear error.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "block/open.h"
#include "format/vpc/format.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg::vpc {
namespace {

FooterBytes footer_for(uint64_t size, uint32_t type, const char *app = "qemu", uint64_t data_offset = 512) {
    FooterBytes f{};
    std::memcpy(f.data(), "conectix", 8);
    put_be64(f.data() + footer::data_offset.offset, data_offset);
    std::memcpy(f.data() + footer::creator_app, app, 4);
    put_be64(f.data() + footer::current_size.offset, size);
    Geometry g = geometry_for(size / 512);
    put_be16(f.data() + footer::cylinders.offset, g.cylinders);
    f[footer::heads.offset] = g.heads;
    f[footer::sectors.offset] = g.sectors;
    put_be32(f.data() + footer::disk_type.offset, type);
    put_be32(f.data() + footer::checksum.offset, checksum(f, footer::checksum.offset));
    return f;
}

void reseal(std::vector<uint8_t> &img, size_t at = 0) {
    put_be32(img.data() + at + footer::checksum.offset,
             checksum(std::span<const uint8_t>(img.data() + at, kFooterSize), footer::checksum.offset));
}

// A dynamic image as qemu-img lays it out: footer, header, BAT at 1536,
// footer. `size` should be a CHS product (the "win " app reads it as is).
std::vector<uint8_t> make_dynamic(uint64_t size, uint32_t block_size = 2 << 20, const char *app = "win ") {
    uint64_t entries = (size + block_size - 1) / block_size;
    uint64_t bat_bytes = (entries * 4 + 511) / 512 * 512;
    std::vector<uint8_t> img(1536 + bat_bytes + 512, 0);
    FooterBytes f = footer_for(size, kTypeDynamic, app);
    std::memcpy(img.data(), f.data(), f.size());
    std::memcpy(img.data() + 1536 + bat_bytes, f.data(), f.size());
    std::memset(img.data() + 1536, 0xff, bat_bytes);
    uint8_t *h = img.data() + 512;
    std::memcpy(h, "cxsparse", 8);
    put_be64(h + dyn::data_offset.offset, UINT64_MAX);
    put_be64(h + dyn::table_offset.offset, 1536);
    put_be32(h + dyn::max_table_entries.offset, uint32_t(entries));
    put_be32(h + dyn::block_size.offset, block_size);
    return img;
}

Result<NodePtr> open_over(std::shared_ptr<test::MemNode> mem, bool rw = false, OptionMap opts = {}) {
    OpenRequest req;
    req.file = std::move(mem);
    req.flags.read_write = rw;
    req.options = std::move(opts);
    return find_driver("vpc")->open(req);
}
Result<NodePtr> open_over(std::vector<uint8_t> img) { return open_over(std::make_shared<test::MemNode>(std::move(img))); }

std::string open_error(std::vector<uint8_t> img) {
    auto r = open_over(std::move(img));
    return r ? std::string("opened") : r.error().message;
}

TEST(VpcGeometry, SizesAsQemuImgRoundsThem) {
    // Values from qemu-img 7.2 (create, then info).
    auto r = rounded_size(10 << 20, false);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->sectors * 512, 10514432u);
    EXPECT_EQ(r->geo.cylinders, 302);
    EXPECT_EQ(r->geo.heads, 4);
    EXPECT_EQ(r->geo.sectors, 17);
    r = rounded_size(10000384, false);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->sectors * 512, 10027008u);
    r = rounded_size(10000384, true);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->sectors * 512, 10000384u);
    EXPECT_EQ(r->geo.total(), kMaxGeometry);
    r = rounded_size(0, false);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->sectors, 0u);
    // Past the largest CHS product the size is kept as is, up to 2040 GiB.
    r = rounded_size(200ull << 30, false);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->sectors * 512, 200ull << 30);
    EXPECT_TRUE(rounded_size(2040ull << 30, true));
    auto big = rounded_size(2041ull << 30, false);
    ASSERT_FALSE(big);
    EXPECT_EQ(big.error().code, EFBIG);
    EXPECT_FALSE(rounded_size(UINT64_MAX & ~511ull, true));
}

TEST(VpcGeometry, EveryRoundingCoversTheRequest) {
    for (uint64_t s = 1; s < 300000; s += 997) {
        auto r = rounded_size(s * 512, false);
        ASSERT_TRUE(r);
        EXPECT_GE(r->sectors, s);
        EXPECT_EQ(r->geo.total(), r->sectors);
        EXPECT_LE(r->geo.heads, 16);
    }
}

TEST(VpcGeometry, SizeSourceByCreatorApp) {
    Footer f;
    f.cylinders = 302, f.heads = 4, f.sectors = 17;
    f.current_size = 10 << 20;
    std::memcpy(f.creator_app.data(), "vpc ", 4);
    EXPECT_EQ(disk_sectors(f, ""), 302u * 4 * 17);
    EXPECT_EQ(disk_sectors(f, "current_size"), 20480u);
    for (const char *app : {"win ", "qem2", "d2v ", "CTXS"}) {
        std::memcpy(f.creator_app.data(), app, 4);
        EXPECT_EQ(disk_sectors(f, ""), 20480u) << app;
        EXPECT_EQ(disk_sectors(f, "chs"), 302u * 4 * 17) << app;
    }
    std::memcpy(f.creator_app.data(), "tap\0", 4);
    EXPECT_EQ(disk_sectors(f, ""), 20480u);
    std::memcpy(f.creator_app.data(), "tap ", 4);  // not XenServer's
    EXPECT_EQ(disk_sectors(f, ""), 302u * 4 * 17);
    // The largest geometry always means current_size.
    std::memcpy(f.creator_app.data(), "vpc ", 4);
    f.cylinders = 65535, f.heads = 16, f.sectors = 255;
    EXPECT_EQ(disk_sectors(f, "chs"), 20480u);
}

TEST(Vpc, DynamicReadWriteReopen) {
    uint64_t size = 5 << 20;
    auto mem = std::make_shared<test::MemNode>(make_dynamic(size));
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), size);
    EXPECT_EQ((*node)->cluster_size(), 2u << 20);
    EXPECT_EQ(test::read_all(**node), std::vector<uint8_t>(size, 0));
    // A write across blocks 0 and 1, then one into block 2 and again into 0.
    auto a = test::pattern(100000, 3), b = test::pattern(5000, 9);
    ASSERT_TRUE((*node)->write((2 << 20) - 50000, a.data(), a.size()));
    ASSERT_TRUE((*node)->write(size - 5000, b.data(), b.size()));
    ASSERT_TRUE((*node)->write(7, b.data(), 100));
    std::vector<uint8_t> want(size, 0);
    std::copy(a.begin(), a.end(), want.begin() + (2 << 20) - 50000);
    std::copy(b.begin(), b.end(), want.begin() + size - 5000);
    std::copy(b.begin(), b.begin() + 100, want.begin() + 7);
    EXPECT_EQ(test::read_all(**node), want);
    // The BAT names new blocks only once they are flushed.
    EXPECT_EQ(be32(mem->bytes().data() + 1536), 0xffffffffu);
    ASSERT_TRUE((*node)->flush());
    // Three blocks of bitmap + 2 MiB appended; the file ends with the footer.
    std::vector<uint8_t> bytes = mem->bytes();
    ASSERT_EQ(bytes.size(), 2048u + 3 * (512 + (2 << 20)) + 512);
    EXPECT_EQ(std::memcmp(bytes.data() + bytes.size() - 512, bytes.data(), 512), 0);
    EXPECT_EQ(be32(bytes.data() + 1536), 2048u / 512);  // block 0 first allocated
    auto again = open_over(std::make_shared<test::MemNode>(bytes));
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ(test::read_all(**again), want);
    auto st = (*again)->block_status(0, size);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags & (kStatusData | kStatusOffsetValid), kStatusData | kStatusOffsetValid);
    EXPECT_EQ(st->bytes, 2u << 20);
}

// The file's writes and flushes in order, to check the allocation order.
class LoggingNode : public test::MemNode {
public:
    using test::MemNode::MemNode;
    struct Event {
        char kind;  // 'w' write, 'f' flush
        uint64_t off = 0, len = 0;
    };
    std::vector<Event> log;
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        log.push_back({'w', off, len});
        return test::MemNode::write(off, buf, len);
    }
    Result<void> flush() override {
        log.push_back({'f'});
        return test::MemNode::flush();
    }
};

TEST(Vpc, AllocationPublishesTheBatEntryAtFlush) {
    auto mem = std::make_shared<LoggingNode>(make_dynamic(4 << 20));
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    auto a = test::pattern(4096, 7);
    ASSERT_TRUE((*node)->write((2 << 20) + 8192, a.data(), a.size()));
    // Nothing names the block until a flush.
    EXPECT_EQ(be32(mem->bytes().data() + 1536 + 4), 0xffffffffu);
    ASSERT_TRUE((*node)->flush());
    // Block 1 goes at 2048 (after the BAT sector and the footer's old place).
    const uint64_t start = 2048, data = start + 512, end = data + (2 << 20);
    auto at = [&](uint64_t off, uint64_t len) {
        for (size_t i = 0; i < mem->log.size(); ++i)
            if (mem->log[i].kind == 'w' && mem->log[i].off == off && mem->log[i].len == len) return int(i);
        return -1;
    };
    int footer = at(end, 512), payload = at(data + 8192, 4096), bitmap = at(start, 512), entry = at(1536 + 4, 4);
    ASSERT_GE(footer, 0);
    ASSERT_GE(payload, 0);
    ASSERT_GE(bitmap, 0);
    ASSERT_GE(entry, 0);
    EXPECT_LT(footer, bitmap);   // the old footer is overwritten only once a new one exists
    EXPECT_LT(payload, bitmap);
    EXPECT_LT(bitmap, entry);
    bool flushed = false;  // a flush between the data and the BAT entry
    for (int i = payload + 1; i < entry; ++i) flushed |= mem->log[i].kind == 'f';
    EXPECT_TRUE(flushed);
    ASSERT_FALSE(mem->log.empty());
    EXPECT_EQ(mem->log.back().kind, 'f');
    EXPECT_EQ(be32(mem->bytes().data() + 1536 + 4), start / 512);
}

// A kill after the data of a new block but before its BAT entry leaves
// bytes behind the last block; the next allocation takes that place again
// and must not show them.
TEST(Vpc, LeftoverTailIsNotReadBack) {
    auto img = make_dynamic(4 << 20);
    img.resize(img.size() + (3 << 20), 0xab);
    auto node = open_over(std::make_shared<test::MemNode>(img), true);
    ASSERT_TRUE(node) << node.error().message;
    auto a = test::pattern(1000, 2);
    ASSERT_TRUE((*node)->write(5000, a.data(), a.size()));
    std::vector<uint8_t> want(4 << 20, 0);
    std::copy(a.begin(), a.end(), want.begin() + 5000);
    EXPECT_EQ(test::read_all(**node), want);
}

TEST(Vpc, UnallocatedRunsAreOneZeroExtent) {
    auto node = open_over(make_dynamic(16 << 20));
    ASSERT_TRUE(node);
    auto st = (*node)->block_status(100, 16 << 20);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags, uint32_t(kStatusZero));
    EXPECT_EQ(st->bytes, (16u << 20) - 100);
}

TEST(Vpc, FixedFooterAtTheEndOnly) {
    uint64_t size = 1 << 20;
    std::vector<uint8_t> img = test::pattern(size, 5);
    FooterBytes f = footer_for(size, kTypeFixed, "win ", UINT64_MAX);
    img.insert(img.end(), f.begin(), f.end());
    auto mem = std::make_shared<test::MemNode>(img);
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), size);
    EXPECT_EQ((*node)->cluster_size(), 0u);
    EXPECT_EQ(test::read_all(**node), test::pattern(size, 5));
    auto b = test::pattern(700, 1);
    ASSERT_TRUE((*node)->write(1000, b.data(), b.size()));
    EXPECT_EQ(std::memcmp(mem->bytes().data() + 1000, b.data(), b.size()), 0);
    EXPECT_FALSE((*node)->write(size - 10, b.data(), 20));
    {
        // A size field larger than the file: reads past it are zeroes,
        // writes there would overwrite the footer and are refused.
        auto big = img;
        put_be64(big.data() + size + footer::current_size.offset, 2 * size);
        reseal(big, size);
        auto bn = open_over(std::make_shared<test::MemNode>(big), true);
        ASSERT_TRUE(bn) << bn.error().message;
        EXPECT_EQ((*bn)->length(), 2 * size);
        std::vector<uint8_t> z(100);
        ASSERT_TRUE((*bn)->read(size + 1000, z.data(), z.size()));
        EXPECT_EQ(z, std::vector<uint8_t>(100, 0));
        EXPECT_TRUE((*bn)->write(size - 100, b.data(), 100));
        EXPECT_FALSE((*bn)->write(size - 100, b.data(), 101));
    }
    // The wrong type at the end is not a VHD.
    put_be32(img.data() + size + footer::disk_type.offset, kTypeDynamic);
    reseal(img, size);
    EXPECT_EQ(open_error(img), "invalid VPC image");
}

TEST(Vpc, HostileFootersAndHeaders) {
    auto base = make_dynamic(4 << 20);
    EXPECT_EQ(open_error(std::vector<uint8_t>(100, 0)), "File too small for a VHD header");
    EXPECT_EQ(open_error(std::vector<uint8_t>(4096, 0)), "invalid VPC image");
    auto img = base;
    img[100] ^= 1;
    EXPECT_EQ(open_error(img), "Incorrect header checksum");
    img = base;
    img[512] = 'X';
    EXPECT_EQ(open_error(img), "Invalid header magic");
    img = base;
    put_be64(img.data() + footer::data_offset.offset, UINT64_MAX);
    reseal(img);
    EXPECT_NE(open_error(img).find("Error reading dynamic VHD header"), std::string::npos);
    for (uint32_t bs : {0u, 256u, 3u << 20}) {
        img = base;
        put_be32(img.data() + 512 + dyn::block_size.offset, bs);
        EXPECT_EQ(open_error(img), "Invalid block size " + std::to_string(bs));
    }
    img = base;
    put_be32(img.data() + 512 + dyn::max_table_entries.offset, 1);
    EXPECT_EQ(open_error(img), "Page table too small");
    img = base;
    put_be32(img.data() + 512 + dyn::max_table_entries.offset, 0x40000000);
    EXPECT_EQ(open_error(img), "Max Table Entries too large (1073741824)");
    // A BAT of 2^28 entries (1 GiB) in a small file is refused before it is read.
    img = base;
    put_be32(img.data() + 512 + dyn::max_table_entries.offset, 0x10000000);
    EXPECT_NE(open_error(img).find("truncated"), std::string::npos);
    img = base;
    put_be64(img.data() + 512 + dyn::table_offset.offset, UINT64_MAX - 2);
    EXPECT_NE(open_error(img).find("truncated"), std::string::npos);
    // Geometry past 2040 GiB.
    img = base;
    put_be64(img.data() + footer::current_size.offset, 2041ull << 30);
    reseal(img);
    auto r = open_over(img);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EFBIG);
    // An unknown size calculation mode.
    auto bad = open_over(std::make_shared<test::MemNode>(base), false, OptionMap{{"force_size_calc", "x"}});
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "Invalid size calculation mode: 'x'");
}

TEST(Vpc, HostileBatEntries) {
    auto base = make_dynamic(4 << 20);
    auto img = base;
    put_be32(img.data() + 1536, 100000);  // past the end of the file
    EXPECT_NE(open_error(img).find("The image has been truncated"), std::string::npos);
    for (uint32_t sector : {0u, 1u, 3u}) {  // footer copy, header, BAT
        img = base;
        img.resize(8 << 20);
        put_be32(img.data() + 1536, sector);
        EXPECT_EQ(open_error(img), "block-vpc: BAT entry 0 overlaps the image metadata") << sector;
    }
}

TEST(Vpc, DifferencingReadsAsDynamicWithoutParent) {
    auto img = make_dynamic(4 << 20);
    put_be32(img.data() + footer::disk_type.offset, kTypeDifferencing);
    reseal(img);
    auto node = open_over(img);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ(test::read_all(**node), std::vector<uint8_t>(4 << 20, 0));
}

TEST(Vpc, CreatedLikeQemuImg) {
    if (!test::have_qemu()) GTEST_SKIP() << "no qemu-img";
    test::TempDir d;
    std::string out;
    ASSERT_EQ(test::sh("/usr/bin/qemu-img create -q -f vpc " + test::quote(d / "q.vhd") + " 10000001", &out), 0) << out;
    BlockOpener op;
    auto node = test::open_as(op, d / "q.vhd", "");
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->driver_name(), "vpc");
    EXPECT_EQ((*node)->length(), 10027008u);
}

}  // namespace
}  // namespace qimg::vpc
