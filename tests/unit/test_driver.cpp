// The driver registry (block/driver.h): protocol prefixes parsed as QEMU's
// path_has_protocol/bdrv_find_protocol, and capabilities that agree with
// what each driver record provides.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <unistd.h>

#include "block/driver.h"
#include "block/open.h"

namespace qimg {
namespace {

TEST(ProtocolPrefix, FirstColonBeforeAnySlash) {
    EXPECT_EQ(protocol_prefix("nbd://host/x"), "nbd");
    EXPECT_EQ(protocol_prefix("file:a.img"), "file");
    EXPECT_EQ(protocol_prefix(":a.img"), "");  // an empty protocol name, as QEMU's
    EXPECT_EQ(protocol_prefix("a\\b:c"), "a\\b");  // '\\' is no separator on POSIX
    EXPECT_FALSE(protocol_prefix("dir/a:b"));
    EXPECT_FALSE(protocol_prefix("/abs/a:b"));
    EXPECT_FALSE(protocol_prefix("plain.img"));
}

TEST(ProtocolPrefix, FindProtocolDriver) {
    auto plain = find_protocol_driver("a.img");
    ASSERT_TRUE(plain);
    EXPECT_EQ((*plain)->name, "file");
    auto file = find_protocol_driver("file:a:b");
    ASSERT_TRUE(file);
    EXPECT_EQ((*file)->name, "file");
    // A device path is host_device's (QEMU's bdrv_probe_device), and its
    // prefix names it too.
    auto dev = find_protocol_driver("/dev/null");
    ASSERT_TRUE(dev);
    EXPECT_EQ((*dev)->name, "host_device");
    auto prefixed = find_protocol_driver("host_device:/dev/null");
    ASSERT_TRUE(prefixed);
    EXPECT_EQ((*prefixed)->name, "host_device");
    auto unknown = find_protocol_driver("nope:x");
    ASSERT_FALSE(unknown);
    EXPECT_EQ(unknown.error().message, "Unknown protocol 'nope'");
    auto empty = find_protocol_driver(":x");
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.error().message, "Unknown protocol ''");
    // QEMU's message holds at most 127 characters of the prefix.
    auto longer = find_protocol_driver(std::string(200, 'p') + ":x");
    ASSERT_FALSE(longer);
    EXPECT_EQ(longer.error().message, "Unknown protocol '" + std::string(127, 'p') + "'");
}

TEST(DriverCapabilities, AgreeWithTheRecord) {
    for (const Driver *d : all_drivers()) {
        SCOPED_TRACE(d->name);
        EXPECT_TRUE(!d->can_create() || d->create) << "creation options without create()";
        EXPECT_TRUE(!d->supports_compression || !d->is_protocol);
        EXPECT_TRUE(!d->supports_check || !d->is_protocol);
    }
    ASSERT_NE(find_driver("qcow2"), nullptr);
    EXPECT_TRUE(find_driver("qcow2")->supports_check);
    EXPECT_FALSE(find_driver("raw")->supports_check);
    EXPECT_FALSE(find_driver("raw")->can_amend());
    EXPECT_TRUE(find_driver("qcow2")->supports_snapshots);
    EXPECT_TRUE(find_driver("qcow2")->supports_bitmaps);
    EXPECT_FALSE(find_driver("raw")->supports_snapshots);
    EXPECT_FALSE(find_driver("raw")->read_only);
    // Only protocols recognise devices by path, and only those whose names
    // after the prefix are host paths strip it.
    for (const Driver *d : all_drivers())
        EXPECT_TRUE((!d->probe_device && !d->path_after_prefix) || d->is_protocol) << d->name;
}

// A format declared read-only (as dmg, bochs and cloop will be): the
// opener refuses it for writing with the driver's reason, and reads it.
class ReadOnlyTestNode final : public BlockNode {
public:
    explicit ReadOnlyTestNode(NodePtr f) { set_file(std::move(f)); }
    std::string_view driver_name() const override { return "qimg-ro-test"; }
    uint64_t length() const override { return file()->length(); }
    Result<void> read(uint64_t off, void *buf, size_t len) override { return file()->read(off, buf, len); }
};

const Driver *make_read_only_test_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "qimg-ro-test";
        d.read_only = true;
        d.read_only_reason = "qimg-ro-test images are read-only";
        d.probe = [](std::span<const uint8_t> head, const std::string &) {
            return head.size() >= 8 && std::memcmp(head.data(), "QIMGROTS", 8) == 0 ? 100 : 0;
        };
        d.open = [](OpenRequest &req) -> Result<NodePtr> { return NodePtr(std::make_shared<ReadOnlyTestNode>(req.file)); };
        return d;
    }();
    return &d;
}
QIMG_REGISTER_DRIVER(make_read_only_test_driver);

TEST(DriverCapabilities, ReadOnlyFormatRefusesWriters) {
    char path[] = "/tmp/qimg-ro-test-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "QIMGROTSpayload!", 16), 16);
    close(fd);
    BlockOpener opener;
    OpenOptions o;
    o.flags.read_write = true;
    auto rw = opener.open_image(path, o);
    ASSERT_FALSE(rw);
    EXPECT_EQ(rw.error().code, EACCES);
    EXPECT_EQ(rw.error().message, "qimg-ro-test images are read-only");
    o.flags.read_write = false;
    auto ro = opener.open_image(path, o);
    ASSERT_TRUE(ro) << ro.error().message;
    EXPECT_EQ((*ro)->driver_name(), "qimg-ro-test");
    char buf[7] = {};
    ASSERT_TRUE((*ro)->read(8, buf, 7));
    EXPECT_EQ(std::string(buf, 7), "payload");
    unlink(path);
}

}  // namespace
}  // namespace qimg
