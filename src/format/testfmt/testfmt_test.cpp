// Unit tests of the test format, built into qimg_unit_tests with the driver
// (UNIT_TESTS in this folder's CMakeLists.txt). The driver is opened over the
// shared in-memory node (tests/lib/mem_node.h) as its file child, and through
// the opener on a temp file, where probing must find it.
#include <gtest/gtest.h>

#include <cstring>

#include "block/driver.h"
#include "block/open.h"
#include "lib/mem_node.h"
#include "lib/test_util.h"
#include "util/endian.h"

namespace qimg {
namespace {

// An image: header of `header_size` bytes, then `payload`.
std::vector<uint8_t> make_image(const std::vector<uint8_t> &payload, uint64_t virtual_size,
                                uint32_t header_size = 512, uint32_t version = 1) {
    std::vector<uint8_t> img(header_size);
    std::memcpy(img.data(), "QIMGTFMT", 8);
    put_le32(img.data() + 8, version);
    put_le32(img.data() + 12, header_size);
    put_le64(img.data() + 16, virtual_size);
    img.insert(img.end(), payload.begin(), payload.end());
    return img;
}

Result<NodePtr> open_over(std::vector<uint8_t> bytes) {
    const Driver *d = find_driver("testfmt");
    if (!d) return make_error(ENOENT, "testfmt not registered");
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(std::move(bytes));
    return d->open(req);
}

TEST(Testfmt, ReadsPayloadAndZeroesPastIt) {
    auto payload = test::pattern(3000, 0x21);
    auto node = open_over(make_image(payload, 8192));
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->length(), 8192u);
    std::vector<uint8_t> want = payload;
    want.resize(8192, 0);
    EXPECT_EQ(test::read_all(**node), want);
    // Unaligned, across the end of the payload.
    std::vector<uint8_t> buf(100);
    ASSERT_TRUE((*node)->read(2950, buf.data(), buf.size()));
    EXPECT_TRUE(std::equal(buf.begin(), buf.end(), want.begin() + 2950));
    EXPECT_FALSE((*node)->read(8100, buf.data(), buf.size()));
}

TEST(Testfmt, IsReadOnly) {
    auto node = open_over(make_image({}, 4096));
    ASSERT_TRUE(node);
    uint8_t b[512] = {};
    EXPECT_FALSE((*node)->write(0, b, sizeof b));
    const Driver *d = find_driver("testfmt");
    EXPECT_FALSE(d->can_create());
    EXPECT_FALSE(d->supports_check);
}

TEST(Testfmt, RejectsHostileHeaders) {
    EXPECT_FALSE(open_over(make_image({}, 4096, 512, 2)));          // version
    EXPECT_FALSE(open_over(make_image({}, 4096, 100)));             // header size not a sector multiple
    EXPECT_FALSE(open_over(make_image({}, 4096, 128 * 1024)));      // header size too large
    EXPECT_FALSE(open_over(make_image({}, UINT64_MAX - 100)));      // offset + size wraps
    EXPECT_FALSE(open_over(std::vector<uint8_t>(10, 'Q')));          // short file
}

TEST(Testfmt, ProbedThroughTheOpener) {
    test::TempDir d;
    test::write_file(d / "a.tst", make_image(test::pattern(4096, 7), 4096));
    BlockOpener op;
    auto node = test::open_as(op, d / "a.tst", "");
    ASSERT_TRUE(node) << node.error().message;
    EXPECT_EQ((*node)->driver_name(), "testfmt");
    EXPECT_EQ(test::read_all(**node), test::pattern(4096, 7));
}

}  // namespace
}  // namespace qimg
