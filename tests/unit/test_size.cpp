// parse_size / cvtnum / size_to_str against what qemu-img 7.2 does
// (expected values taken from `qemu-img create -f raw x <size>` and
// `qemu-img info`).
#include <gtest/gtest.h>

#include "util/size.h"

namespace qimg {
namespace {

uint64_t ok_size(std::string_view s, char def = 'B') {
    auto r = parse_size(s, def);
    EXPECT_TRUE(r) << "'" << s << "': " << (r ? "" : r.error().message);
    return r ? *r : 0;
}

int err_code(std::string_view s, char def = 'B') {
    auto r = parse_size(s, def);
    EXPECT_FALSE(r) << "'" << s << "' parsed as " << (r ? *r : 0);
    return r ? 0 : r.error().code;
}

TEST(ParseSize, PlainAndSuffixes) {
    EXPECT_EQ(ok_size("0"), 0u);
    EXPECT_EQ(ok_size("512"), 512u);
    EXPECT_EQ(ok_size("1b"), 1u);
    EXPECT_EQ(ok_size("1B"), 1u);
    EXPECT_EQ(ok_size("1k"), 1024u);
    EXPECT_EQ(ok_size("1K"), 1024u);
    EXPECT_EQ(ok_size("1m"), 1u << 20);
    EXPECT_EQ(ok_size("1M"), 1u << 20);
    EXPECT_EQ(ok_size("2G"), 2ULL << 30);
    EXPECT_EQ(ok_size("3T"), 3ULL << 40);
    EXPECT_EQ(ok_size("4P"), 4ULL << 50);
    EXPECT_EQ(ok_size("15E"), 15ULL << 60);
    EXPECT_EQ(ok_size("8191P"), 9222246136947933184ULL);
}

TEST(ParseSize, DefaultSuffix) {
    EXPECT_EQ(ok_size("2", 'M'), 2u << 20);
    EXPECT_EQ(ok_size("2k", 'M'), 2048u);
    EXPECT_EQ(ok_size("1.5", 'M'), 3u << 19);
    auto bad = parse_size("1", 'x');
    EXPECT_FALSE(bad);
}

TEST(ParseSize, Fractions) {
    EXPECT_EQ(ok_size("1.5G"), 1610612736u);
    EXPECT_EQ(ok_size("1.5K"), 1536u);
    EXPECT_EQ(ok_size("0.5k"), 512u);
    EXPECT_EQ(ok_size("1.k"), 1024u);    // no fractional digits
    EXPECT_EQ(ok_size("1."), 1u);        // "1." is accepted, no scale needed
    EXPECT_EQ(ok_size("1.0"), 1u);       // a zero fraction needs no scale
    EXPECT_EQ(ok_size("1.0k"), 1024u);
    EXPECT_EQ(ok_size("1.00000000000000000001k"), 1024u);
    // A fraction that rounds to 1.0 as a double contributes nothing (QEMU on x86-64).
    EXPECT_EQ(ok_size("1.9999999999999999999999999k"), 1024u);
    EXPECT_EQ(ok_size("7.999999999999999999E"), 8070450532247928832ULL);
    EXPECT_EQ(ok_size("0.001k"), 1u);    // 1.024 rounds to 1
    EXPECT_EQ(ok_size("0.0005k"), 1u);   // 0.512 rounds up
    EXPECT_EQ(err_code("1.5"), EINVAL);  // fraction without scale
    EXPECT_EQ(err_code("0.5"), EINVAL);
    EXPECT_EQ(err_code("1.5b"), EINVAL);
    EXPECT_EQ(err_code(".5K"), EINVAL);
    EXPECT_EQ(err_code("1.5e3k"), EINVAL);
    EXPECT_EQ(err_code("1e3"), EINVAL);
    EXPECT_EQ(err_code("1.5.k"), EINVAL);
}

TEST(ParseSize, Hex) {
    EXPECT_EQ(ok_size("0x10"), 16u);
    EXPECT_EQ(ok_size("0X1f"), 31u);
    std::string warning;
    auto r = parse_size("0x10k", 'B', &warning);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 16384u);
    EXPECT_EQ(warning, "Using a multiplier suffix on hex numbers is deprecated: 0x10k");
    warning.clear();
    EXPECT_TRUE(parse_size("0x10", 'B', &warning));
    EXPECT_EQ(warning, "");
    EXPECT_EQ(err_code("0x1.8"), EINVAL);
    EXPECT_EQ(err_code("0x"), EINVAL);
    EXPECT_EQ(err_code("0xg"), EINVAL);
    EXPECT_EQ(err_code("0x10 "), EINVAL);
    EXPECT_EQ(err_code("0xFFFFFFFFFFFFFFFFFF"), ERANGE);
    EXPECT_EQ(err_code("0xFFFFFFFFFFFFFFFFFFk"), EINVAL);  // trailing text beats ERANGE
    EXPECT_EQ(ok_size("0xFFFFFFFFFFFFFFFF"), UINT64_MAX);
    EXPECT_EQ(ok_size("0x10000000000000k"), 1ULL << 62);
    EXPECT_EQ(err_code("0x40000000000000k"), ERANGE);
}

TEST(ParseSize, WhitespaceSignsAndJunk) {
    EXPECT_EQ(ok_size(" 1"), 1u);  // strtoull skips leading space
    EXPECT_EQ(ok_size("+1"), 1u);
    EXPECT_EQ(err_code("1 "), EINVAL);
    EXPECT_EQ(err_code("-1"), EINVAL);
    EXPECT_EQ(err_code("-0"), EINVAL);
    EXPECT_EQ(err_code(" -1"), EINVAL);
    EXPECT_EQ(err_code("1-"), EINVAL);
    EXPECT_EQ(err_code(""), EINVAL);
    EXPECT_EQ(err_code(" "), EINVAL);
    EXPECT_EQ(err_code("k"), EINVAL);
    EXPECT_EQ(err_code("1x"), EINVAL);
    EXPECT_EQ(err_code("1kk"), EINVAL);
    EXPECT_EQ(err_code("1KiB"), EINVAL);
    EXPECT_EQ(err_code("08x"), EINVAL);
    EXPECT_EQ(err_code(std::string_view("1\0k", 3)), EINVAL);  // embedded NUL is junk
    EXPECT_EQ(ok_size("010"), 10u);                             // never octal
}

TEST(ParseSize, Overflow) {
    EXPECT_EQ(ok_size("18446744073709551615"), UINT64_MAX);
    EXPECT_EQ(err_code("18446744073709551616"), ERANGE);
    EXPECT_EQ(err_code("16E"), ERANGE);
    EXPECT_EQ(ok_size("15.99999999999999999E"), 15ULL << 60);  // fraction rounds to 1.0, adds 0
    EXPECT_EQ(ok_size("15.9999E"), 18446628781559090944ULL);
    EXPECT_EQ(err_code("16.5E"), ERANGE);
    EXPECT_EQ(ok_size("16383P"), 16383ULL << 50);
    EXPECT_EQ(err_code("16384P"), ERANGE);
    EXPECT_EQ(err_code("17179869184G"), ERANGE);
    EXPECT_EQ(err_code("99999999999999999999999k"), EINVAL);  // QEMU quirk
    EXPECT_EQ(err_code("-99999999999999999999999"), ERANGE);  // QEMU quirk
}

constexpr const char *kSuffixMessage =
    "Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n"
    "qemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.";
constexpr const char *kRangeMessage = "Invalid image size specified. Must be between 0 and 9223372036854775807.";

TEST(Cvtnum, MessagesMatchQemuImgCreate) {
    struct Case {
        const char *in;
        const char *message;
    };
    for (const Case &c : {Case{"1x", kSuffixMessage}, Case{"", kSuffixMessage}, Case{"1e3", kSuffixMessage},
                          Case{"-1", kSuffixMessage}, Case{"-0", kSuffixMessage}, Case{"1 ", kSuffixMessage},
                          Case{"1.5", kSuffixMessage}, Case{"0x1.8", kSuffixMessage},
                          Case{"99999999999999999999999k", kSuffixMessage}, Case{"9E", kRangeMessage},
                          Case{"8E", kRangeMessage}, Case{"16E", kRangeMessage},
                          Case{"18446744073709551615", kRangeMessage}, Case{"18446744073709551616", kRangeMessage},
                          Case{"9223372036854775808", kRangeMessage}, Case{"0x8000000000000000", kRangeMessage},
                          Case{"-99999999999999999999999", kRangeMessage}}) {
        auto r = cvtnum("image size", c.in);
        ASSERT_FALSE(r) << c.in;
        EXPECT_EQ(r.error().message, c.message) << c.in;
    }
    EXPECT_EQ(*cvtnum("image size", "9223372036854775807"), INT64_MAX);
    EXPECT_EQ(*cvtnum("image size", "1.5G"), 1610612736);
    EXPECT_EQ(*cvtnum("image size", "0"), 0);
}

TEST(Cvtnum, ProgramNameAndBounds) {
    auto r = cvtnum("image size", "1x", "myimg");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find("\nmyimg: kilobytes"), std::string::npos);

    auto low = cvtnum_full("buffer size", "511", 512, 1024);
    ASSERT_FALSE(low);
    EXPECT_EQ(low.error().code, ERANGE);
    EXPECT_EQ(low.error().message, "Invalid buffer size specified. Must be between 512 and 1024.");
    EXPECT_EQ(*cvtnum_full("buffer size", "1k", 512, 1024), 1024);
    EXPECT_FALSE(cvtnum_full("buffer size", "1025", 512, 1024));

    std::string warning;
    EXPECT_EQ(*cvtnum("image size", "0x1k", "qemu-img", &warning), 1024);
    EXPECT_EQ(warning, "Using a multiplier suffix on hex numbers is deprecated: 0x1k");
}

TEST(SizeToStr, MatchesQemuImgInfo) {
    EXPECT_EQ(size_to_str(0), "0 B");
    EXPECT_EQ(size_to_str(1), "1 B");
    EXPECT_EQ(size_to_str(512), "512 B");
    EXPECT_EQ(size_to_str(999), "999 B");
    EXPECT_EQ(size_to_str(1000), "0.977 KiB");
    EXPECT_EQ(size_to_str(1024), "1 KiB");
    EXPECT_EQ(size_to_str(1536), "1.5 KiB");
    EXPECT_EQ(size_to_str(4096), "4 KiB");
    EXPECT_EQ(size_to_str(999 * 1024), "999 KiB");
    EXPECT_EQ(size_to_str(1000448), "977 KiB");
    EXPECT_EQ(size_to_str(1023488), "1e+03 KiB");  // %0.3g, as QEMU prints it
    EXPECT_EQ(size_to_str(1047552), "0.999 MiB");
    EXPECT_EQ(size_to_str(1048576), "1 MiB");
    EXPECT_EQ(size_to_str(1572864), "1.5 MiB");
    EXPECT_EQ(size_to_str(1073741824), "1 GiB");
    EXPECT_EQ(size_to_str(1073741825), "1 GiB");
    EXPECT_EQ(size_to_str(1073742336), "1 GiB");
    EXPECT_EQ(size_to_str(1ULL << 40), "1 TiB");
    EXPECT_EQ(size_to_str(1ULL << 50), "1 PiB");
    EXPECT_EQ(size_to_str(1ULL << 60), "1 EiB");
    EXPECT_EQ(size_to_str(UINT64_MAX), "16 EiB");
}

}  // namespace
}  // namespace qimg
