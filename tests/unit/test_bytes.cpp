// util/bytes.h: typed fields at named offsets, and reads/writes past the
// end failing instead of touching memory outside the span.
#include <gtest/gtest.h>

#include <vector>

#include "util/bytes.h"

namespace qimg {
namespace {

constexpr Be32 kMagicField{0};
constexpr Le16 kCountField{4};
constexpr Be64 kOffsetField{6};
constexpr U8 kFlagField{14};

TEST(Bytes, ReadsTypedFieldsInTheirByteOrder) {
    const uint8_t b[] = {0x51, 0x46, 0x49, 0xfb, 0x34, 0x12, 0, 0, 0, 0, 0, 1, 0, 0, 0x80};
    ByteReader r(b);
    EXPECT_EQ(r.get(kMagicField), 0x514649fbu);
    EXPECT_EQ(r.get(kCountField), 0x1234u);
    EXPECT_EQ(r.get(kOffsetField), 0x10000u);
    EXPECT_EQ(r.get(kFlagField), 0x80u);
    EXPECT_EQ(r.le32(0), 0xfb494651u);
    EXPECT_EQ(r.be16(4), 0x3412u);
    EXPECT_TRUE(r.ok());
}

TEST(Bytes, ReadPastTheEndFailsForGood) {
    const uint8_t b[] = {1, 2, 3, 4, 5, 6, 7};
    ByteReader r(b);
    EXPECT_EQ(r.get(kOffsetField), 0u);  // needs bytes 6..13
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.get(kMagicField), 0x01020304u);  // in range still reads
    EXPECT_FALSE(r);                             // but the failure sticks
    ByteReader r2(b);
    EXPECT_TRUE(r2.has(0, 7));
    EXPECT_TRUE(r2.has(kMagicField));
    EXPECT_FALSE(r2.has(kOffsetField));
    EXPECT_FALSE(r2.has(1, 7));
    EXPECT_FALSE(r2.has(SIZE_MAX, 2));  // off + len wraps
    EXPECT_FALSE(r2.has(8, 0));
    EXPECT_TRUE(r2.bytes(3, SIZE_MAX).empty());
    EXPECT_FALSE(r2);
    ByteReader empty(std::span<const uint8_t>{});
    EXPECT_EQ(empty.u8(0), 0u);
    EXPECT_FALSE(empty);
}

TEST(Bytes, RelativeFieldsAndStrings) {
    const uint8_t b[] = {0, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 'a', 'b', 0, 'z'};
    ByteReader r(b);
    EXPECT_EQ(r.get(kMagicField.at(8)), 0xaabbccddu);
    EXPECT_EQ(r.cstring(12, 4), "ab");
    EXPECT_EQ(r.cstring(13, 1), "b");  // no NUL within the field: its whole length
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.cstring(12, 5), "");
    EXPECT_FALSE(r.ok());
}

TEST(Bytes, WriterStaysInsideItsSpan) {
    std::vector<uint8_t> b(15, 0xee);
    ByteWriter w(b);
    w.put(kMagicField, 0x514649fb);
    w.put(kCountField, 0x1234);
    w.put(kOffsetField, 0x0102030405060708ull);
    w.put(kFlagField, 7);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(b, (std::vector<uint8_t>{0x51, 0x46, 0x49, 0xfb, 0x34, 0x12, 1, 2, 3, 4, 5, 6, 7, 8, 7}));
    w.put(kOffsetField.at(8), 1);
    w.bytes(14, "xy", 2);
    EXPECT_FALSE(w.ok());
    EXPECT_EQ(b[14], 7);  // nothing written by the failed calls
    ByteReader back(b);
    EXPECT_EQ(back.get(kOffsetField), 0x0102030405060708ull);
}

}  // namespace
}  // namespace qimg
