// Unit tests of the vdi driver: images built in memory (tests/lib/mem_node.h)
// read and written, the allocation order (data, then at a flush: flush,
// header and map together), check's findings, and hostile headers and block maps refused
// with qemu-img's messages or a clear error.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "block/open.h"
#include "format/vdi/format.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg::vdi {
namespace {

// An image as qemu-img lays it out: header, map at 512, data after the map.
std::vector<uint8_t> make_image(uint64_t size, bool is_static = false) {
    uint32_t blocks = uint32_t((size + kBlockSize - 1) / kBlockSize);
    uint64_t bmap = (uint64_t(blocks) * 4 + 511) / 512 * 512;
    std::vector<uint8_t> img(512 + bmap + (is_static ? uint64_t(blocks) * kBlockSize : 0), 0);
    uint8_t *h = img.data();
    std::memcpy(h, kText, std::strlen(kText));
    put_le32(h + hdr::signature.offset, kSignature);
    put_le32(h + hdr::version.offset, kVersion11);
    put_le32(h + hdr::header_size.offset, 0x180);
    put_le32(h + hdr::image_type.offset, is_static ? kTypeStatic : kTypeDynamic);
    put_le32(h + hdr::offset_bmap.offset, 512);
    put_le32(h + hdr::offset_data.offset, uint32_t(512 + bmap));
    put_le32(h + hdr::sector_size.offset, 512);
    put_le64(h + hdr::disk_size.offset, size);
    put_le32(h + hdr::block_size.offset, kBlockSize);
    put_le32(h + hdr::blocks_in_image.offset, blocks);
    put_le32(h + hdr::blocks_allocated.offset, is_static ? blocks : 0);
    for (uint32_t i = 0; i < blocks; ++i) put_le32(h + 512 + 4 * i, is_static ? i : kUnallocated);
    return img;
}

Result<NodePtr> open_over(std::shared_ptr<test::MemNode> mem, bool rw = false) {
    OpenRequest req;
    req.file = std::move(mem);
    req.flags.read_write = rw;
    return find_driver("vdi")->open(req);
}

std::string open_error(std::vector<uint8_t> img) {
    auto r = open_over(std::make_shared<test::MemNode>(std::move(img)));
    return r ? std::string("opened") : r.error().message;
}

TEST(Vdi, DynamicReadWriteReopen) {
    uint64_t size = 3 * kBlockSize + 4096;
    auto mem = std::make_shared<test::MemNode>(make_image(size));
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), size);
    EXPECT_EQ((*node)->cluster_size(), kBlockSize);
    EXPECT_TRUE((*node)->has_zero_init());
    EXPECT_EQ(test::read_all(**node), std::vector<uint8_t>(size, 0));
    // Across blocks 0 and 1, then into block 3 and block 0 again.
    auto a = test::pattern(100000, 3), b = test::pattern(4000, 9);
    ASSERT_TRUE((*node)->write(kBlockSize - 50000, a.data(), a.size()));
    ASSERT_TRUE((*node)->write(size - 4000, b.data(), b.size()));
    ASSERT_TRUE((*node)->write(7, b.data(), 100));
    std::vector<uint8_t> want(size, 0);
    std::copy(a.begin(), a.end(), want.begin() + kBlockSize - 50000);
    std::copy(b.begin(), b.end(), want.begin() + size - 4000);
    std::copy(b.begin(), b.begin() + 100, want.begin() + 7);
    EXPECT_EQ(test::read_all(**node), want);
    // Nothing names the blocks on disk before a flush.
    EXPECT_EQ(le32(mem->bytes().data() + hdr::blocks_allocated.offset), 0u);
    EXPECT_EQ(le32(mem->bytes().data() + 512), kUnallocated);
    ASSERT_TRUE((*node)->flush());
    // Three whole blocks appended, in the order of first writes.
    std::vector<uint8_t> bytes = mem->bytes();
    ASSERT_EQ(bytes.size(), 1024u + 3 * kBlockSize);
    EXPECT_EQ(le32(bytes.data() + hdr::blocks_allocated.offset), 3u);
    EXPECT_EQ(le32(bytes.data() + 512), 0u);
    EXPECT_EQ(le32(bytes.data() + 516), 1u);
    EXPECT_EQ(le32(bytes.data() + 520), kUnallocated);
    EXPECT_EQ(le32(bytes.data() + 524), 2u);
    auto again = open_over(std::make_shared<test::MemNode>(bytes));
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ(test::read_all(**again), want);
    auto st = (*again)->block_status(0, size);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags, uint32_t(kStatusData | kStatusOffsetValid));
    EXPECT_EQ(st->bytes, kBlockSize);
    EXPECT_EQ(st->host_offset, 1024u);
    st = (*again)->block_status(2 * kBlockSize, size);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->flags, uint32_t(kStatusZero));
    EXPECT_EQ(st->bytes, kBlockSize);
    auto rep = (*again)->check(CheckRepair::None);
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions, 0);
}

TEST(Vdi, StaticImageWritesInPlace) {
    uint64_t size = 2 * kBlockSize;
    auto mem = std::make_shared<test::MemNode>(make_image(size, true));
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    auto a = test::pattern(8192, 5);
    ASSERT_TRUE((*node)->write(kBlockSize + 512, a.data(), a.size()));
    EXPECT_EQ(mem->bytes().size(), 1024u + size);
    EXPECT_EQ(std::memcmp(mem->bytes().data() + 1024 + kBlockSize + 512, a.data(), a.size()), 0);
    auto st = (*node)->block_status(0, size);
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->flags & kStatusRecurse);
}

TEST(Vdi, DiscardedBlocksReadAsZeroesAndAreReallocated) {
    auto img = make_image(2 * kBlockSize);
    img.resize(1024 + kBlockSize, 0x77);
    put_le32(img.data() + 512, kDiscarded);
    auto mem = std::make_shared<test::MemNode>(img);
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ(test::read_all(**node), std::vector<uint8_t>(2 * kBlockSize, 0));
    uint8_t x = 1;
    ASSERT_TRUE((*node)->write(10, &x, 1));
    ASSERT_TRUE((*node)->flush());
    EXPECT_EQ(le32(mem->bytes().data() + 512), 0u);
    EXPECT_EQ(mem->bytes()[1024], 0);  // the new block is zeroed around the write
    EXPECT_EQ(mem->bytes()[1034], 1);
}

// The file's writes and flushes in order.
class LoggingNode : public test::MemNode {
public:
    using test::MemNode::MemNode;
    std::vector<std::pair<char, uint64_t>> log;  // ('w', offset) or ('f', 0)
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        log.push_back({'w', off});
        return test::MemNode::write(off, buf, len);
    }
    Result<void> flush() override {
        log.push_back({'f', 0});
        return test::MemNode::flush();
    }
};

TEST(Vdi, AllocationPublishesAtFlushInOneMetadataWrite) {
    auto mem = std::make_shared<LoggingNode>(make_image(4 * kBlockSize));
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    auto a = test::pattern(kBlockSize + 8192, 7);
    ASSERT_TRUE((*node)->write(kBlockSize + 4096, a.data(), a.size()));
    ASSERT_EQ(mem->log.size(), 2u);
    EXPECT_EQ(mem->log[0], std::make_pair('w', uint64_t(1024)));
    EXPECT_EQ(mem->log[1], std::make_pair('w', uint64_t(1024 + kBlockSize)));
    ASSERT_TRUE((*node)->flush());
    ASSERT_EQ(mem->log.size(), 5u);
    EXPECT_EQ(mem->log[2], std::make_pair('f', uint64_t(0)));
    EXPECT_EQ(mem->log[3], std::make_pair('w', uint64_t(0)));  // header and map at once
    EXPECT_EQ(mem->log[4], std::make_pair('f', uint64_t(0)));
    // Nothing left to publish: a second flush writes nothing.
    ASSERT_TRUE((*node)->flush());
    EXPECT_EQ(mem->log.size(), 6u);
}

TEST(Vdi, HeaderAndMapTogetherPastTheFirst16GiB) {
    // Before, a map entry past 16 GiB was written apart from the header, and
    // a kill between the two left a count that check calls a mismatch.
    uint64_t size = 20ull << 30;
    auto mem = std::make_shared<LoggingNode>(make_image(size));
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    uint8_t x = 9;
    ASSERT_TRUE((*node)->write(size - 1, &x, 1));
    ASSERT_TRUE((*node)->flush());
    uint32_t last = uint32_t(size / kBlockSize - 1);
    uint64_t data = 512 + (uint64_t(last + 1) * 4 + 511) / 512 * 512;
    ASSERT_EQ(mem->log.size(), 4u);
    EXPECT_EQ(mem->log[0], std::make_pair('w', data));
    EXPECT_EQ(mem->log[1], std::make_pair('f', uint64_t(0)));
    EXPECT_EQ(mem->log[2], std::make_pair('w', uint64_t(0)));
    EXPECT_EQ(mem->log[3], std::make_pair('f', uint64_t(0)));
    auto again = open_over(std::make_shared<test::MemNode>(mem->bytes()));
    ASSERT_TRUE(again);
    uint8_t y = 0;
    ASSERT_TRUE((*again)->read(size - 1, &y, 1));
    EXPECT_EQ(y, 9);
}

TEST(Vdi, HeaderBeforeMapWhenTheyAreApart) {
    // A map that does not follow the header (not what qemu-img or
    // VirtualBox make): the header first, then the map sector.
    auto img = make_image(4 * kBlockSize);
    std::vector<uint8_t> moved(img.size() + 512, 0);
    std::memcpy(moved.data(), img.data(), 512);
    std::memcpy(moved.data() + 1024, img.data() + 512, img.size() - 512);
    put_le32(moved.data() + hdr::offset_bmap.offset, 1024);
    put_le32(moved.data() + hdr::offset_data.offset, 1536);
    auto mem = std::make_shared<LoggingNode>(moved);
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    uint8_t x = 9;
    ASSERT_TRUE((*node)->write(2 * kBlockSize, &x, 1));
    ASSERT_TRUE((*node)->flush());
    ASSERT_EQ(mem->log.size(), 5u);
    EXPECT_EQ(mem->log[0], std::make_pair('w', uint64_t(1536)));
    EXPECT_EQ(mem->log[1], std::make_pair('f', uint64_t(0)));
    EXPECT_EQ(mem->log[2], std::make_pair('w', uint64_t(0)));
    EXPECT_EQ(mem->log[3], std::make_pair('w', uint64_t(1024)));
    EXPECT_EQ(mem->log[4], std::make_pair('f', uint64_t(0)));
    EXPECT_EQ(le32(mem->bytes().data() + 1024 + 8), 0u);
}

TEST(Vdi, CheckFindsWhatQemuFinds) {
    auto img = make_image(4 * kBlockSize);
    put_le32(img.data() + 512, 1);
    put_le32(img.data() + 516, 1);   // shared
    put_le32(img.data() + 520, 99);  // too large
    put_le32(img.data() + hdr::blocks_allocated.offset, 5);
    auto node = open_over(std::make_shared<test::MemNode>(img));
    ASSERT_TRUE(node) << node.error().message;
    testing::internal::CaptureStderr();
    auto rep = (*node)->check(CheckRepair::None);
    std::string err = testing::internal::GetCapturedStderr();
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions, 3);
    EXPECT_EQ(err,
              "ERROR: block index 1 also used by 1\n"
              "ERROR: block index 2 too large, is 99\n"
              "ERROR: allocated blocks mismatch, is 2, should be 5\n");
    auto fix = (*node)->check(CheckRepair::All);
    ASSERT_FALSE(fix);
    EXPECT_EQ(fix.error().code, ENOTSUP);
}

TEST(Vdi, HostileHeadersGetQemuMessages) {
    auto base = make_image(4 * kBlockSize);
    auto with = [&](auto f) {
        auto img = base;
        f(img.data());
        return open_error(img);
    };
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::signature.offset, 0x1234); }),
              "Image not in VDI format (bad signature 00001234)");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::version.offset, 0x00020003); }),
              "unsupported VDI image (version 2.3)");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::offset_bmap.offset, 513); }),
              "unsupported VDI image (unaligned block map offset 0x201)");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::offset_data.offset, 1000); }),
              "unsupported VDI image (unaligned data offset 0x3e8)");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::sector_size.offset, 4096); }),
              "unsupported VDI image (sector size 4096 is not 512)");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::block_size.offset, 2 << 20); }),
              "unsupported VDI image (block size 2097152 is not 1048576)");
    EXPECT_EQ(with([](uint8_t *h) { put_le64(h + hdr::disk_size.offset, 5 * uint64_t(kBlockSize)); }),
              "unsupported VDI image (disk size 5242880, image bitmap has room for 4194304)");
    EXPECT_EQ(with([](uint8_t *h) { h[hdr::uuid_link + 3] = 1; }), "unsupported VDI image (non-NULL link UUID)");
    EXPECT_EQ(with([](uint8_t *h) { h[hdr::uuid_parent] = 1; }), "unsupported VDI image (non-NULL parent UUID)");
    EXPECT_EQ(with([](uint8_t *h) { put_le32(h + hdr::blocks_in_image.offset, 0xffffffff); }),
              "unsupported VDI image (too many blocks 4294967295, max is 536870784)");
    EXPECT_EQ(with([](uint8_t *h) { put_le64(h + hdr::disk_size.offset, UINT64_MAX); }),
              "Unsupported VDI image size (size is 0xffffffffffffffff, max supported is 0x1fffff8000000)");
    // A file shorter than a header.
    EXPECT_EQ(open_error(std::vector<uint8_t>(100, 0)), "Image not in VDI format (bad signature 00000000)");
    // An odd disk size is rounded up to whole sectors.
    auto img = base;
    put_le64(img.data() + hdr::disk_size.offset, 1000);
    auto node = open_over(std::make_shared<test::MemNode>(img));
    ASSERT_TRUE(node);
    EXPECT_EQ((*node)->length(), 1024u);
}

TEST(Vdi, HostileLayoutsAreNotWritten) {
    // The data area over the block map.
    auto img = make_image(4 * kBlockSize);
    put_le32(img.data() + hdr::offset_data.offset, 512);
    auto node = open_over(std::make_shared<test::MemNode>(img), true);
    ASSERT_TRUE(node) << node.error().message;
    uint8_t x = 1;
    EXPECT_FALSE((*node)->write(0, &x, 1));
    // A count below a block the map uses: a new block would share it.
    img = make_image(4 * kBlockSize);
    img.resize(1024 + kBlockSize);
    put_le32(img.data() + 512, 0);
    put_le32(img.data() + hdr::blocks_allocated.offset, 0);
    auto mem = std::make_shared<test::MemNode>(img);
    node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_TRUE((*node)->write(0, &x, 1));  // into block 0's place: allowed
    EXPECT_FALSE((*node)->write(kBlockSize, &x, 1));
    EXPECT_EQ(mem->bytes().size(), 1024u + kBlockSize);
}

TEST(Vdi, MapPastTheEndOfTheFileReadsAsBlockZero) {
    // As QEMU (qemu-iotests 084): the largest map, of which the file holds
    // one sector; the rest reads as entries 0.
    auto img = make_image(4 * kBlockSize);
    put_le64(img.data() + hdr::disk_size.offset, kMaxDiskSize);
    put_le32(img.data() + hdr::blocks_in_image.offset, kMaxBlocks);
    img.resize(1024 + 512, 0x5a);  // the map's second sector and block 0's start
    put_le32(img.data() + hdr::offset_data.offset, 1024);
    auto mem = std::make_shared<test::MemNode>(img);
    auto node = open_over(mem, true);
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), kMaxDiskSize);
    uint8_t b[4];
    ASSERT_TRUE((*node)->read(kMaxDiskSize - 4, b, 4));  // entry past the file: block 0, past EOF
    ASSERT_TRUE((*node)->read(300 * kBlockSize, b, 4));  // past the 256 entries held
    EXPECT_EQ(b[0], 0x5a);
    // An allocation would take index 0, which the tail of the map uses.
    uint8_t x = 1;
    EXPECT_FALSE((*node)->write(0, &x, 1));
    // check counts the 2^29 entries past the file at once, in a few lines:
    // entries 4-127 are 0 (123 share block 0), 128-255 too large.
    testing::internal::CaptureStderr();
    auto rep = (*node)->check(CheckRepair::None);
    std::string err = testing::internal::GetCapturedStderr();
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->corruptions, 123 + 128 + int64_t(kMaxBlocks - 256) + 1);
    EXPECT_LT(err.size(), 20000u);
}

TEST(Vdi, ProbeAndEmptyImage) {
    auto img = make_image(0);
    EXPECT_EQ(img.size(), 512u);
    std::vector<uint8_t> head(2048, 0);
    std::copy(img.begin(), img.end(), head.begin());
    EXPECT_EQ(find_driver("vdi")->probe(head, "x"), 100);
    head[hdr::signature.offset] ^= 1;
    EXPECT_EQ(find_driver("vdi")->probe(head, "x"), 0);
    auto node = open_over(std::make_shared<test::MemNode>(img));
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), 0u);
}

}  // namespace
}  // namespace qimg::vdi
