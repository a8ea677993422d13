// util/crc32c.h against the check value and RFC 3720 (iSCSI) B.4 vectors;
// util/uuid.h parsing, formatting, GUID layout and generation.
#include <gtest/gtest.h>

#include <random>
#include <string_view>
#include <vector>

#include "util/crc32c.h"
#include "util/uuid.h"

namespace qimg {
namespace {

std::span<const uint8_t> as_bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

TEST(Crc32c, KnownVectors) {
    std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), up(32), down(32);
    for (int i = 0; i < 32; i++) up[i] = uint8_t(i), down[i] = uint8_t(31 - i);
    for (auto f : {crc32c, crc32c_portable}) {
        EXPECT_EQ(f(as_bytes("123456789"), 0), 0xE3069283u);
        EXPECT_EQ(f({}, 0), 0u);
        EXPECT_EQ(f(zeros, 0), 0x8A9136AAu);
        EXPECT_EQ(f(ones, 0), 0x62A8AB43u);
        EXPECT_EQ(f(up, 0), 0x46DD794Eu);
        EXPECT_EQ(f(down, 0), 0x113FDB5Cu);
    }
}

TEST(Crc32c, ChainsAndAgreesWithThePortableTable) {
    std::mt19937 g(5);
    std::vector<uint8_t> data(100000);
    for (auto &b : data) b = uint8_t(g());
    const uint32_t whole = crc32c(data);
    EXPECT_EQ(whole, crc32c_portable(data));
    std::span<const uint8_t> s(data);
    EXPECT_EQ(crc32c(s.subspan(777), crc32c(s.first(777))), whole);
    EXPECT_EQ(crc32c_portable(s.subspan(1), crc32c(s.first(1))), whole);
}

TEST(Uuid, ParsesAndFormatsTheCanonicalForm) {
    auto u = Uuid::parse("01234567-89AB-cdef-0123-456789abcdef");
    ASSERT_TRUE(u);
    EXPECT_EQ(u->bytes[0], 0x01);
    EXPECT_EQ(u->bytes[4], 0x89);
    EXPECT_EQ(u->bytes[15], 0xef);
    EXPECT_EQ(u->to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_FALSE(u->is_nil());
    auto nil = Uuid::parse("00000000-0000-0000-0000-000000000000");
    ASSERT_TRUE(nil);
    EXPECT_TRUE(nil->is_nil());
    EXPECT_EQ(Uuid{}.to_string(), "00000000-0000-0000-0000-000000000000");
}

TEST(Uuid, RejectsEveryOtherForm) {
    for (std::string_view bad : {"", "01234567-89ab-cdef-0123-456789abcde", "01234567-89ab-cdef-0123-456789abcdef0",
                                 "0123456789ab-cdef-0123-456789abcdef-", "01234567-89ab-cdef-0123_456789abcdef",
                                 "{1234567-89ab-cdef-0123-456789abcdef}", "0123456g-89ab-cdef-0123-456789abcdef",
                                 "01234567-89ab-cdef-0123-456789abcd f", "0123456789abcdef0123456789abcdef"})
        EXPECT_FALSE(Uuid::parse(bad)) << bad;
}

TEST(Uuid, GuidLayoutSwapsTheLeadingFields) {
    const uint8_t stored[16] = {0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66,
                                0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    Uuid u = Uuid::from_guid_le(stored);
    EXPECT_EQ(u.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
    auto back = u.to_guid_le();
    EXPECT_TRUE(std::equal(back.begin(), back.end(), stored));
}

TEST(Uuid, GeneratesRandomVersion4) {
    auto a = Uuid::generate(), b = Uuid::generate();
    ASSERT_TRUE(a);
    ASSERT_TRUE(b);
    EXPECT_NE(*a, *b);
    EXPECT_EQ(a->bytes[6] >> 4, 4);
    EXPECT_EQ(a->bytes[8] & 0xc0, 0x80);
    EXPECT_EQ(a->to_string()[14], '4');
    EXPECT_EQ(Uuid::parse(a->to_string()), *a);
}

}  // namespace
}  // namespace qimg
