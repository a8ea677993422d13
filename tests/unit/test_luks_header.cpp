// LUKS1 header parsing (crypto/luks_header.h): a header as qemu-img writes
// it, every check with QEMU's message, and malformed input that must be
// refused without crashing.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "crypto/luks_header.h"
#include "util/endian.h"

namespace qimg::crypto {
namespace {

// The header `qemu-img create -o encrypt.format=luks` writes for a 64-byte
// aes-256-xts key: key material of 4000 stripes at 4 KiB + 252 KiB * i,
// payload after the 8th slot.
std::vector<uint8_t> good_header() {
    std::vector<uint8_t> b(kLuksHeaderSize, 0);
    std::memcpy(b.data(), "LUKS\xba\xbe", 6);
    put_be16(&b[6], 1);
    std::strcpy(reinterpret_cast<char *>(&b[8]), "aes");
    std::strcpy(reinterpret_cast<char *>(&b[40]), "xts-plain64");
    std::strcpy(reinterpret_cast<char *>(&b[72]), "sha256");
    put_be32(&b[104], 4040);
    put_be32(&b[108], 64);
    put_be32(&b[164], 1000);
    std::strcpy(reinterpret_cast<char *>(&b[168]), "01234567-89ab-cdef-0123-456789abcdef");
    for (uint32_t i = 0; i < 8; i++) {
        uint8_t *s = &b[208 + 48 * i];
        put_be32(s, i == 0 ? kLuksKeySlotEnabled : kLuksKeySlotDisabled);
        put_be32(s + 4, i == 0 ? 2000 : 0);
        put_be32(s + 40, 8 + 504 * i);
        put_be32(s + 44, kLuksStripes);
    }
    return b;
}

std::string error_of(const std::vector<uint8_t> &b) {
    auto r = parse_luks_header(b);
    EXPECT_FALSE(r);
    return r ? std::string() : r.error().message;
}

TEST(LuksHeader, ParsesQemuLayout) {
    auto h = parse_luks_header(good_header());
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(h->cipher_alg, "aes-256");
    EXPECT_EQ(h->mode, "xts");
    EXPECT_EQ(h->ivgen_alg, "plain64");
    EXPECT_FALSE(h->ivgen_hash_alg);
    EXPECT_EQ(h->hash_alg, "sha256");
    EXPECT_EQ(h->payload_offset(), 4040u * 512);
    EXPECT_EQ(h->uuid, "01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_EQ(h->key_material_sectors(kLuksStripes), 504u);
    EXPECT_TRUE(h->key_slots[0].enabled());
    EXPECT_FALSE(h->key_slots[1].enabled());
    EXPECT_TRUE(is_luks_header(good_header()));

    const auto j = luks_info_json(*h);
    EXPECT_EQ(j["payload-offset"], 4040u * 512);
    EXPECT_EQ(j["master-key-iters"], 1000u);
    EXPECT_EQ(j["slots"].size(), 8u);
    EXPECT_EQ(j["slots"][0]["iters"], 2000u);
    EXPECT_EQ(j["slots"][0]["key-offset"], 4096u);
    EXPECT_FALSE(j["slots"][1].contains("iters"));
    EXPECT_FALSE(j.contains("ivgen-hash-alg"));
}

TEST(LuksHeader, EssivAndOtherCiphers) {
    auto b = good_header();
    std::strcpy(reinterpret_cast<char *>(&b[40]), "cbc-essiv:sha256");
    put_be32(&b[108], 16);
    auto h = parse_luks_header(b);
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(h->cipher_alg, "aes-128");
    EXPECT_EQ(h->ivgen_cipher_alg, "aes-256");  // keyed by a 32-byte digest
    EXPECT_EQ(luks_info_json(*h)["ivgen-hash-alg"], "sha256");

    std::strcpy(reinterpret_cast<char *>(&b[40]), "cbc-essiv:sha1");
    EXPECT_EQ(error_of(b), "No AES cipher with key size 20 available");
    std::memset(&b[8], 0, 32);
    std::strcpy(reinterpret_cast<char *>(&b[8]), "cast5");
    std::strcpy(reinterpret_cast<char *>(&b[40]), "cbc-essiv:sha256");
    EXPECT_EQ(error_of(b), "Cipher cast5-128 not supported with essiv");
    std::strcpy(reinterpret_cast<char *>(&b[40]), "cbc-essiv");
    EXPECT_EQ(error_of(b), "Missing IV generator hash specification");
    // A hash after plain64 is accepted and ignored, as dm-crypt does.
    std::strcpy(reinterpret_cast<char *>(&b[40]), "cbc-plain64:sha1");
    EXPECT_TRUE(parse_luks_header(b));
}

TEST(LuksHeader, RefusesMalformedFields) {
    auto with = [](auto patch) {
        auto b = good_header();
        patch(b);
        return error_of(b);
    };
    EXPECT_EQ(error_of(std::vector<uint8_t>(100, 0)), "LUKS header truncated");
    EXPECT_EQ(with([](auto &b) { b[5] = 0; }), "Volume is not in LUKS format");
    EXPECT_EQ(with([](auto &b) { put_be16(&b[6], 2); }), "LUKS version 2 is not supported");
    EXPECT_EQ(with([](auto &b) { std::memset(&b[8], 'a', 32); }), "LUKS header cipher name is not NUL terminated");
    EXPECT_EQ(with([](auto &b) { std::memset(&b[40], 'a', 32); }), "LUKS header cipher mode is not NUL terminated");
    EXPECT_EQ(with([](auto &b) { std::memset(&b[72], 'a', 32); }), "LUKS header hash spec is not NUL terminated");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[104], 7); }), "LUKS payload is overlapping with the header");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[164], 0); }), "LUKS key iteration count is zero");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[208 + 48 * 2 + 44], 0xffffffff); }),
              "Keyslot 2 is corrupted (stripes -1 != 4000)");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[208], 5); }), "Keyslot 0 state (active/disable) is corrupted");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[208 + 4], 0); }), "Keyslot 0 iteration count is zero");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[208 + 40], 7); }), "Keyslot 0 is overlapping with the LUKS header");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[208 + 48 * 7 + 40], 4000); }),
              "Keyslot 7 is overlapping with the encrypted payload");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[208 + 48 * 3 + 40], 1100); }),
              "Keyslots 2 and 3 are overlapping in the header");
    // 2^31 * 4000 wraps to 0 in QEMU's 32-bit product: the slots pass, the
    // cipher lookup refuses the key size.
    EXPECT_EQ(with([](auto &b) { put_be32(&b[108], 1u << 31); }),
              "Algorithm 'aes' with key size 1073741824 bytes not supported");
    EXPECT_EQ(with([](auto &b) { std::strcpy(reinterpret_cast<char *>(&b[40]), "xts"); }),
              "Unexpected cipher mode string format 'xts'");
    EXPECT_EQ(with([](auto &b) { std::strcpy(reinterpret_cast<char *>(&b[40]), "gcm-plain64"); }),
              "Cipher mode 'gcm' not supported");
    EXPECT_EQ(with([](auto &b) { std::strcpy(reinterpret_cast<char *>(&b[40]), "xts-random"); }),
              "IV generator 'random' not supported");
    EXPECT_EQ(with([](auto &b) { std::strcpy(reinterpret_cast<char *>(&b[72]), "sha3"); }),
              "Hash algorithm 'sha3' not supported");
    EXPECT_EQ(with([](auto &b) { put_be32(&b[108], 20); }), "Algorithm 'aes' with key size 10 bytes not supported");
}

// QEMU's 32-bit sums let a slot at the top of the sector range through; so
// does qimg, for the same answer as qemu-img info.
TEST(LuksHeader, WrappingSlotOffsetAsQemu) {
    auto b = good_header();
    put_be32(&b[208 + 48 * 7 + 40], 0xfffffff8);
    auto h = parse_luks_header(b);
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(luks_info_json(*h)["slots"][7]["key-offset"], uint64_t{0xfffffff8} * 512);
}

// Every byte of the header set to a few values: parsing either succeeds or
// gives a message, never crashes (sanitizer builds check the rest).
TEST(LuksHeader, ByteMutationsAreRefusedOrParsed) {
    const auto good = good_header();
    for (size_t i = 0; i < good.size(); i++) {
        for (uint8_t v : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
            auto b = good;
            b[i] = v;
            auto r = parse_luks_header(b);
            if (r) (void)luks_info_json(*r);
            else EXPECT_FALSE(r.error().message.empty());
        }
    }
}

}  // namespace
}  // namespace qimg::crypto
