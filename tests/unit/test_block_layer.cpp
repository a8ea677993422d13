// Unit tests of the block layer: the file protocol, the raw format, format
// probing and the allocation-status walk, on temporary files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "block/driver.h"
#include "block/open.h"
#include "block/status.h"
#include "lib/test_util.h"

namespace qimg {
namespace {

using test::TempDir;

void write_file(const std::string &path, const std::vector<uint8_t> &data, off_t truncate_to = -1) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    if (truncate_to >= 0) {
        ASSERT_EQ(::ftruncate(fd, truncate_to), 0);
    }
    ::close(fd);
}

NodePtr open_raw(BlockOpener &op, const std::string &path, bool rw = false, const std::string &fmt = "raw",
                 OptionMap extra = {}) {
    OpenOptions o;
    o.format = fmt;
    o.flags.read_write = rw;
    o.extra = std::move(extra);
    auto r = op.open_image(path, o);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    return r ? *r : nullptr;
}

TEST(FileProtocol, MissingFileGivesQemuMessage) {
    BlockOpener op;
    OpenOptions o;
    auto r = op.open_image("/nonexistent/x.img", o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Could not open '/nonexistent/x.img': No such file or directory");
}

TEST(FileProtocol, DirectoryIsRefused) {
    TempDir d;
    BlockOpener op;
    auto r = op.open_image(d.file(""), OpenOptions{});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("driver requires"), std::string::npos) << r.error().message;
}

TEST(FileProtocol, ReadPastEndIsZeroes) {
    TempDir d;
    write_file(d.file("a"), std::vector<uint8_t>(100, 0xab));
    BlockOpener op;
    auto r = op.open_protocol(d.file("a"), {}, OpenFlags{});
    ASSERT_TRUE(r);
    std::vector<uint8_t> buf(300, 0x11);
    ASSERT_TRUE((*r)->read(0, buf.data(), buf.size()));
    for (size_t i = 0; i < 100; i++) ASSERT_EQ(buf[i], 0xab);
    for (size_t i = 100; i < 300; i++) ASSERT_EQ(buf[i], 0);
}

TEST(FileProtocol, HolesAreZeroExtents) {
    TempDir d;
    std::string p = d.file("sparse");
    write_file(p, {}, 8 << 20);
    {
        int fd = ::open(p.c_str(), O_WRONLY);
        std::vector<uint8_t> data(65536, 1);
        ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 1 << 20), 65536);
        ::close(fd);
    }
    BlockOpener op;
    NodePtr n = open_raw(op, p);
    ASSERT_TRUE(n);
    auto s0 = node_status(*n, 0, n->length());
    ASSERT_TRUE(s0);
    EXPECT_TRUE(s0->flags & kStatusZero);
    EXPECT_TRUE(s0->flags & kStatusAllocated);
    EXPECT_EQ(s0->bytes, 1u << 20);
    auto s1 = node_status(*n, 1 << 20, n->length() - (1 << 20));
    ASSERT_TRUE(s1);
    EXPECT_TRUE(s1->flags & kStatusData);
    EXPECT_EQ(s1->bytes, 65536u);
    EXPECT_EQ(s1->host_offset, 1u << 20);
}

TEST(FileProtocol, WriteZeroesAndDiscardKeepContentZero) {
    TempDir d;
    std::string p = d.file("z");
    write_file(p, std::vector<uint8_t>(1 << 20, 0x5a));
    BlockOpener op;
    NodePtr n = open_raw(op, p, true);
    ASSERT_TRUE(n);
    ASSERT_TRUE(n->write_zeroes(4096, 65536, kZeroMayUnmap));
    ASSERT_TRUE(n->write_zeroes(100, 50, 0));
    std::vector<uint8_t> buf(1 << 20);
    ASSERT_TRUE(n->read(0, buf.data(), buf.size()));
    for (size_t i = 0; i < buf.size(); i++) {
        bool zero = (i >= 100 && i < 150) || (i >= 4096 && i < 4096 + 65536);
        ASSERT_EQ(buf[i], zero ? 0 : 0x5a) << i;
    }
    EXPECT_EQ(n->length(), 1u << 20);
}

TEST(FileProtocol, DirectIoHandlesUnalignedRequests) {
    TempDir d;
    std::string p = d.file("direct");
    write_file(p, std::vector<uint8_t>(3 * 4096, 0x33));
    BlockOpener op;
    OpenOptions o;
    o.format = "raw";
    o.flags.read_write = true;
    o.flags.cache.direct = true;
    auto r = op.open_image(p, o);
    if (!r && r.error().code == EINVAL) GTEST_SKIP() << "O_DIRECT unsupported here";
    ASSERT_TRUE(r) << r.error().message;
    uint8_t msg[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    ASSERT_TRUE((*r)->write(4090, msg, sizeof msg));
    uint8_t back[12];
    ASSERT_TRUE((*r)->read(4089, back, sizeof back));
    EXPECT_EQ(back[0], 0x33);
    EXPECT_EQ(std::memcmp(back + 1, msg, 10), 0);
    EXPECT_EQ(back[11], 0x33);
    EXPECT_EQ((*r)->length(), 3u * 4096);
}

TEST(RawFormat, OffsetAndSizeWindow) {
    TempDir d;
    std::vector<uint8_t> data(4096);
    for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i / 512);
    write_file(d.file("w"), data);
    BlockOpener op;
    NodePtr n = open_raw(op, d.file("w"), false, "raw", {{"offset", "1024"}, {"size", "2048"}});
    ASSERT_TRUE(n);
    EXPECT_EQ(n->length(), 2048u);
    uint8_t b[2];
    ASSERT_TRUE(n->read(0, b, 1));
    EXPECT_EQ(b[0], 2);
    EXPECT_FALSE(n->read(2047, b, 2));  // past the window
}

TEST(RawFormat, WindowMustFitInFile) {
    TempDir d;
    write_file(d.file("w"), std::vector<uint8_t>(4096));
    BlockOpener op;
    OpenOptions o;
    o.format = "raw";
    o.extra = {{"offset", "1024"}, {"size", "4096"}};
    auto r = op.open_image(d.file("w"), o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message,
              "The sum of offset (1024) and size (4096) has to be smaller or equal to the actual size of the "
              "containing file (4096)");
}

TEST(RawFormat, UnknownOptionIsRefused) {
    TempDir d;
    write_file(d.file("w"), std::vector<uint8_t>(512));
    BlockOpener op;
    OpenOptions o;
    o.format = "raw";
    o.extra = {{"bogus", "1"}};
    auto r = op.open_image(d.file("w"), o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Block format 'raw' does not support the option 'bogus'");
}

TEST(Probe, EmptyAndUnknownFilesProbeAsRaw) {
    TempDir d;
    write_file(d.file("empty"), {});
    write_file(d.file("junk"), std::vector<uint8_t>(1000, 0x7f));
    BlockOpener op;
    NodePtr a = open_raw(op, d.file("empty"), false, "");
    NodePtr b = open_raw(op, d.file("junk"), false, "");
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->driver_name(), "raw");
    EXPECT_EQ(b->driver_name(), "raw");
    EXPECT_EQ(a->length(), 0u);
}

TEST(Probe, UnknownDriverAndProtocol) {
    BlockOpener op;
    OpenOptions o;
    o.format = "nosuchformat";
    auto r = op.open_image("/dev/null", o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Unknown driver 'nosuchformat'");
    auto p = op.open_image("foo:bar", OpenOptions{});
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().message, "Unknown protocol 'foo'");
}

TEST(Probe, ProbedRawRefusesBlock0WritesThatLookLikeAnotherFormat) {
    if (!find_driver("qcow2")) GTEST_SKIP() << "no qcow2 driver to probe as";
    TempDir d;
    write_file(d.file("r"), std::vector<uint8_t>(65536));
    BlockOpener op;
    OpenOptions o;
    o.flags.read_write = true;
    o.warn_probed_raw = false;
    auto r = op.open_image(d.file("r"), o);
    ASSERT_TRUE(r);
    std::vector<uint8_t> hdr(512, 0);
    const uint8_t magic[] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
    std::memcpy(hdr.data(), magic, sizeof magic);
    auto w = (*r)->write(0, hdr.data(), hdr.size());
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().code, EPERM);
    std::vector<uint8_t> plain(512, 0x42);
    EXPECT_TRUE((*r)->write(0, plain.data(), plain.size()));
}

TEST(BackingPath, CombinesRelativeNames) {
    EXPECT_EQ(combine_backing_path("/a/b/top.qcow2", "base.qcow2"), "/a/b/base.qcow2");
    EXPECT_EQ(combine_backing_path("top.qcow2", "base.qcow2"), "base.qcow2");
    EXPECT_EQ(combine_backing_path("dir/top.qcow2", "/abs/base"), "/abs/base");
    EXPECT_EQ(combine_backing_path("dir/top.qcow2", "nbd://host/x"), "nbd://host/x");
}

TEST(CacheMode, ParsesQemuNames) {
    EXPECT_TRUE(parse_cache_mode("none")->direct);
    EXPECT_TRUE(parse_cache_mode("directsync")->writethrough);
    EXPECT_TRUE(parse_cache_mode("unsafe")->no_flush);
    EXPECT_FALSE(parse_cache_mode("writeback")->direct);
    EXPECT_FALSE(parse_cache_mode("bogus"));
}

}  // namespace
}  // namespace qimg
