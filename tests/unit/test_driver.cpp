// The driver registry (block/driver.h): protocol prefixes parsed as QEMU's
// path_has_protocol/bdrv_find_protocol, and capabilities that agree with
// what each driver record provides.
#include <gtest/gtest.h>

#include "block/driver.h"

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
}

}  // namespace
}  // namespace qimg
