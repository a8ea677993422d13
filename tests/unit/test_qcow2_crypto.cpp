// qcow2 encryption: the IV rule (LUKS numbers sectors by host offset, legacy
// AES by guest offset), the qcow AES key, and encrypted images created,
// written (unaligned, across clusters, over a backing file) and read back
// through the driver. The real tools check the same images in
// tests/interop/cases/qcow2_luks.txt.
#include "qcow2_test_util.h"

#include <cstring>
#include <filesystem>

#include "crypto/qcow_aes.h"
#include "crypto/secret.h"
#include "format/qcow2/crypto.h"

namespace qimg::test {
namespace {

TEST(Qcow2Crypto, IvSectorIsHostOffsetForLuksGuestOffsetForAes) {
    qcow2::Encryption luks, aes;
    luks.method = qcow2::kCryptLuks;
    aes.method = qcow2::kCryptAes;
    EXPECT_EQ(luks.iv_sector(0x250000, 0x1200), 0x250000u / 512);
    EXPECT_EQ(aes.iv_sector(0x250000, 0x1200), 0x1200u / 512);
}

TEST(Qcow2Crypto, EncryptUsesTheRuleAndWholeSectors) {
    auto cipher = crypto::qcow_aes_cipher("secret");
    ASSERT_TRUE(cipher) << cipher.error().message;
    std::vector<uint8_t> plain(1024);
    for (size_t i = 0; i < plain.size(); i++) plain[i] = uint8_t(i * 7);
    for (uint32_t method : {qcow2::kCryptLuks, qcow2::kCryptAes}) {
        qcow2::Encryption e;
        e.method = method;
        e.cipher = *cipher;
        const uint64_t host = 0x30000 + 1024, guest = 0x7000 + 1024;
        std::vector<uint8_t> a = plain, b = plain;
        ASSERT_TRUE(e.encrypt(host, guest, a.data(), a.size()));
        ASSERT_TRUE((*cipher)->encrypt((method == qcow2::kCryptLuks ? host : guest) / 512, b.data(), b.size()));
        EXPECT_EQ(a, b);
        ASSERT_TRUE(e.decrypt(host, guest, a.data(), a.size()));
        EXPECT_EQ(a, plain);
        // Not whole sectors: refused, never a partial chain.
        EXPECT_FALSE(e.encrypt(host + 1, guest + 1, a.data(), 512));
        EXPECT_FALSE(e.encrypt(host, guest, a.data(), 100));
    }
    qcow2::Encryption keyless;
    keyless.method = qcow2::kCryptLuks;
    EXPECT_FALSE(keyless.decrypt(0, 0, plain.data(), 512));
}

TEST(QcowAes, KeyIsThePassphrasePaddedOrTruncatedTo16Bytes) {
    EXPECT_EQ(crypto::qcow_aes_key("abc"), std::string("abc") + std::string(13, '\0'));
    EXPECT_EQ(crypto::qcow_aes_key("0123456789abcdefXYZ"), "0123456789abcdef");
    EXPECT_EQ(crypto::qcow_aes_key(std::string("ab\0cd", 5)), std::string("ab") + std::string(14, '\0'));
    EXPECT_EQ(crypto::qcow_aes_key(""), std::string(16, '\0'));
    // AES-128-CBC, plain64 IV: sector 0 of 16 zero bytes under key "abc"
    // is E(K, 0) (IV 0), the same as ECB.
    auto cbc = crypto::qcow_aes_cipher("abc");
    auto ecb = crypto::SectorCipher::make({"aes-128", "ecb", "plain64", "aes-128", std::nullopt}, crypto::qcow_aes_key("abc"));
    ASSERT_TRUE(cbc && ecb);
    std::vector<uint8_t> x(16, 0), y(16, 0);
    ASSERT_TRUE((*cbc)->encrypt(0, x.data(), 16));
    ASSERT_TRUE((*ecb)->encrypt(0, y.data(), 16));
    EXPECT_EQ(x, y);
}

class Qcow2CryptoImage : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        static bool added = false;
        if (!added) {
            ObjectSpec spec;
            spec.qom_type = "secret";
            spec.id = "qcow2-crypto-test";
            spec.props["data"] = "pass word";
            ASSERT_TRUE(SecretStore::global().add(spec));
            added = true;
        }
    }

    Result<void> create(const std::string &file, uint64_t size, std::map<std::string, std::string> o) {
        const Driver *d = find_driver("qcow2");
        BlockOpener op;
        CreateRequest req;
        req.filename = file;
        req.size = size;
        req.options = std::move(o);
        req.options["encrypt.format"] = GetParam();
        req.options["encrypt.key-secret"] = "qcow2-crypto-test";
        if (GetParam() == "luks") req.options["encrypt.iter-time"] = "10";
        req.opener = &op;
        return d->create(req);
    }

    Result<NodePtr> open(BlockOpener &op, const std::string &file, bool rw) {
        OpenOptions o;
        o.format = "qcow2";
        o.flags.read_write = rw;
        o.extra["encrypt.key-secret"] = "qcow2-crypto-test";
        return op.open_image(file, o);
    }
};

TEST_P(Qcow2CryptoImage, UnalignedWritesReadBackAndStayEncrypted) {
    TempDir d;
    const std::string img = d / "e.qcow2";
    const uint64_t size = (3u << 20) + 512 * 3;  // not a whole number of clusters
    ASSERT_TRUE(create(img, size, {{"cluster_size", "4096"}}));
    std::vector<uint8_t> mirror(size, 0);
    {
        BlockOpener op;
        auto n = open(op, img, true);
        ASSERT_TRUE(n) << n.error().message;
        struct W { uint64_t off; size_t len; uint8_t v; };
        for (W w : {W{1000, 3, 0xa1}, W{4090, 700, 0xb2}, W{8192, 12288, 0xc3}, W{9000, 17, 0xd4},
                    W{size - 600, 600, 0xe5}, W{65536 + 511, 2, 0xf6}}) {
            std::vector<uint8_t> buf(w.len, w.v);
            ASSERT_TRUE((*n)->write(w.off, buf.data(), buf.size())) << w.off;
            std::memset(mirror.data() + w.off, w.v, w.len);
        }
        EXPECT_TRUE((*n)->write(777, mirror.data(), 0));  // empty and unaligned: nothing to merge
        EXPECT_EQ(read_all(**n), mirror);
        ASSERT_TRUE((*n)->flush());
    }
    BlockOpener op;
    auto n = open(op, img, false);
    ASSERT_TRUE(n) << n.error().message;
    EXPECT_EQ(read_all(**n), mirror);
    // No plaintext on disk: the 12 KiB run of 0xc3 is nowhere in the file.
    auto raw = read_file(img);
    const std::vector<uint8_t> needle(4096, 0xc3);
    EXPECT_EQ(std::search(raw.begin(), raw.end(), needle.begin(), needle.end()), raw.end());
    // Without the key, only metadata.
    OpenOptions o;
    o.format = "qcow2";
    EXPECT_FALSE(op.open_image(img, o));
}

TEST_P(Qcow2CryptoImage, CopyOnWriteOverAPlainBackingFile) {
    TempDir d;
    const std::string base = d / "base.qcow2", top = d / "top.qcow2";
    {
        BlockOpener op;
        const Driver *q = find_driver("qcow2");
        CreateRequest req;
        req.filename = base;
        req.size = 1 << 20;
        req.opener = &op;
        ASSERT_TRUE(q->create(req));
        auto n = open_as(op, base, "qcow2", true);
        ASSERT_TRUE(n);
        std::vector<uint8_t> b(1 << 20);
        for (size_t i = 0; i < b.size(); i++) b[i] = uint8_t(i / 512 + 1);
        ASSERT_TRUE((*n)->write(0, b.data(), b.size()));
    }
    ASSERT_TRUE(create(top, 1 << 20, {{"backing_file", base}, {"backing_fmt", "qcow2"}}));
    BlockOpener op;
    auto n = open(op, top, true);
    ASSERT_TRUE(n) << n.error().message;
    std::vector<uint8_t> expect(1 << 20);
    for (size_t i = 0; i < expect.size(); i++) expect[i] = uint8_t(i / 512 + 1);
    std::vector<uint8_t> w(1000, 0x99);
    ASSERT_TRUE((*n)->write(70000, w.data(), w.size()));
    std::memset(expect.data() + 70000, 0x99, 1000);
    EXPECT_EQ(read_all(**n), expect);
}

INSTANTIATE_TEST_SUITE_P(Methods, Qcow2CryptoImage, ::testing::Values("luks", "aes"));

}  // namespace
}  // namespace qimg::test
