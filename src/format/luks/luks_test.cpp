// Unit tests of the LUKS crypto layer (src/crypto: sector cipher vectors,
// PBKDF2 vectors, AF splitter, unlock, hostile headers) and the luks format
// over an in-memory file.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include <fmt/format.h>

#include "block/driver.h"
#include "crypto/luks_header.h"
#include "crypto/luks_keys.h"
#include "crypto/sector_cipher.h"
#include "lib/mem_node.h"

namespace qimg {
namespace {

std::string unhex(std::string_view h) {
    std::string out;
    for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(char(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
    return out;
}

std::string hex(std::string_view s) {
    std::string out;
    for (unsigned char c : s) out += fmt::format("{:02x}", c);
    return out;
}

// IEEE 1619-2007 XTS-AES-128 vectors 1 and 2 (data unit 0 and 0x3333333333).
// Vector 1's key halves are equal, which OpenSSL refuses: it checks the
// composed XTS (the aes-192 path) against the standard.
TEST(LuksCrypto, XtsAesIeee1619Vectors) {
    crypto::SectorCipherSpec spec{"aes-128", "xts", "plain64", "aes-128", std::nullopt};
    auto c = crypto::SectorCipher::make(spec, std::string(32, '\0'));
    ASSERT_TRUE(c) << c.error().message;
    std::string data(32, '\0');
    ASSERT_TRUE((*c)->encrypt(0, reinterpret_cast<uint8_t *>(data.data()), data.size()));
    EXPECT_EQ(hex(data), "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e");
    ASSERT_TRUE((*c)->decrypt(0, reinterpret_cast<uint8_t *>(data.data()), data.size()));
    EXPECT_EQ(data, std::string(32, '\0'));

    auto c2 = crypto::SectorCipher::make(spec, std::string(16, '\x11') + std::string(16, '\x22'));
    ASSERT_TRUE(c2);
    std::string d2(32, '\x44');
    ASSERT_TRUE((*c2)->encrypt(0x3333333333, reinterpret_cast<uint8_t *>(d2.data()), d2.size()));
    EXPECT_EQ(hex(d2), "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0");
}

// The composed XTS (aes-192, which OpenSSL lacks) must agree with the
// definition; checked by running the same composition's structure against
// OpenSSL's native AES-128-XTS is not possible, so round trip plus a sector
// independence check here; interop with qemu-img covers its bytes.
TEST(LuksCrypto, ComposedXtsRoundTripAndPerSectorIv) {
    crypto::SectorCipherSpec spec{"aes-192", "xts", "plain64", "aes-192", std::nullopt};
    auto c = crypto::SectorCipher::make(spec, std::string(48, '\x5a'));
    ASSERT_TRUE(c) << c.error().message;
    std::vector<uint8_t> a(1024, 7), b(512, 7);
    ASSERT_TRUE((*c)->encrypt(10, a.data(), a.size()));
    ASSERT_TRUE((*c)->encrypt(11, b.data(), b.size()));
    EXPECT_EQ(0, std::memcmp(a.data() + 512, b.data(), 512));  // sector 11's own IV
    EXPECT_NE(0, std::memcmp(a.data(), b.data(), 512));
    ASSERT_TRUE((*c)->decrypt(10, a.data(), a.size()));
    EXPECT_EQ(std::vector<uint8_t>(1024, 7), a);
}

TEST(LuksCrypto, CbcPlainAndEssivIvs) {
    // AES-128-CBC with plain IVs: sector 1's IV is 01 00 .. 00; the first
    // block is E(K, P xor IV), computable with ECB.
    const std::string key(16, '\x01');
    auto cbc = crypto::SectorCipher::make({"aes-128", "cbc", "plain", "aes-128", std::nullopt}, key);
    auto ecb = crypto::SectorCipher::make({"aes-128", "ecb", "plain", "aes-128", std::nullopt}, key);
    ASSERT_TRUE(cbc && ecb);
    std::vector<uint8_t> x(16, 0), y(16, 0);
    y[0] = 1;
    ASSERT_TRUE((*cbc)->encrypt(1, x.data(), 16));
    ASSERT_TRUE((*ecb)->encrypt(99, y.data(), 16));
    EXPECT_EQ(x, y);
    // ESSIV: IV = E(sha256(K), sector) with aes-256.
    auto essiv = crypto::SectorCipher::make({"aes-128", "cbc", "essiv", "aes-256", "sha256"}, key);
    ASSERT_TRUE(essiv);
    auto salt = crypto::hash_bytes("sha256", key);
    ASSERT_TRUE(salt);
    auto ivc = crypto::SectorCipher::make({"aes-256", "ecb", "plain", "aes-256", std::nullopt}, *salt);
    ASSERT_TRUE(ivc);
    std::vector<uint8_t> iv(16, 0);
    iv[0] = 5;
    ASSERT_TRUE((*ivc)->encrypt(0, iv.data(), 16));
    std::vector<uint8_t> p(16, 0), q = iv;
    ASSERT_TRUE((*essiv)->encrypt(5, p.data(), 16));
    ASSERT_TRUE((*ecb)->encrypt(0, q.data(), 16));  // P = 0: E(K, IV)
    EXPECT_EQ(p, q);
}

TEST(LuksCrypto, SerpentAndTwofishRefusedClearly) {
    auto c = crypto::SectorCipher::make({"serpent-256", "xts", "plain64", "serpent-256", std::nullopt},
                                        std::string(64, 'k'));
    ASSERT_FALSE(c);
    EXPECT_NE(c.error().message.find("serpent-256"), std::string::npos);
}

TEST(LuksCrypto, Cast5CbcAndCtrRoundTrip) {
    for (const char *mode : {"cbc", "ctr", "ecb"}) {
        auto c = crypto::SectorCipher::make({"cast5-128", mode, "plain64", "cast5-128", std::nullopt}, std::string(16, 'k'));
        ASSERT_TRUE(c) << mode << ": " << c.error().message;
        std::vector<uint8_t> d(1024, 3);
        ASSERT_TRUE((*c)->encrypt(4, d.data(), d.size()));
        EXPECT_NE(std::vector<uint8_t>(1024, 3), d);
        ASSERT_TRUE((*c)->decrypt(4, d.data(), d.size()));
        EXPECT_EQ(std::vector<uint8_t>(1024, 3), d);
    }
}

// RFC 6070 PBKDF2-HMAC-SHA1 vectors.
TEST(LuksCrypto, Pbkdf2Rfc6070) {
    const std::string salt = "salt";
    std::span<const uint8_t> s(reinterpret_cast<const uint8_t *>(salt.data()), salt.size());
    auto a = crypto::pbkdf2("sha1", "password", s, 1, 20);
    auto b = crypto::pbkdf2("sha1", "password", s, 2, 20);
    auto c = crypto::pbkdf2("sha1", "password", s, 4096, 20);
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(hex(*a), "0c60c80f961f0e71f3a9b524af6012062fe037a6");
    EXPECT_EQ(hex(*b), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
    EXPECT_EQ(hex(*c), "4b007901b765489abead49d926f721d065a429c1");
    EXPECT_FALSE(crypto::pbkdf2("whirlpool", "p", s, 1, 20));
}

TEST(LuksCrypto, CalibrationIsPositiveAndScales) {
    auto per = crypto::pbkdf2_iters_per_second("sha256", 20, 10);
    ASSERT_TRUE(per);
    EXPECT_GT(*per, 1000u);
    auto it = crypto::scale_iterations(*per, 2000, 8, 1000);
    ASSERT_TRUE(it);
    EXPECT_GE(*it, 1000u);
    EXPECT_EQ(*crypto::scale_iterations(100, 10, 1, 1000), 1000u);  // the minimum
    EXPECT_FALSE(crypto::scale_iterations(UINT64_MAX / 2, 1000, 1, 1000));  // too large to scale
}

TEST(LuksCrypto, AfSplitMerge) {
    const std::string key = unhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01");
    for (const char *h : {"sha1", "sha256", "sha512", "ripemd160", "md5"}) {
        auto m = crypto::af_split(h, key, 4000);
        ASSERT_TRUE(m) << h;
        EXPECT_EQ(m->size(), key.size() * 4000);
        auto k = crypto::af_merge(h, *m, key.size(), 4000);
        ASSERT_TRUE(k);
        EXPECT_EQ(*k, key) << h;
        std::string damaged = *m;
        damaged[5] ^= 1;
        EXPECT_NE(*crypto::af_merge(h, damaged, key.size(), 4000), key);
    }
    EXPECT_FALSE(crypto::af_merge("sha256", "short", 32, 4000));
}

// A whole volume in memory: header, key material, payload.
std::vector<uint8_t> make_volume(const crypto::LuksCreateParams &p, const std::string &pass, uint64_t size) {
    auto v = crypto::luks_format(p, pass);
    EXPECT_TRUE(v) << v.error().message;
    std::vector<uint8_t> img(v->header.payload_offset() + size, 0);
    std::memcpy(img.data(), v->header_bytes.data(), v->header_bytes.size());
    std::memcpy(img.data() + uint64_t{v->header.key_slots[0].key_offset_sector} * 512, v->slot0_material.data(),
                v->slot0_material.size());
    return img;
}

crypto::LuksReadFn reader_of(const std::vector<uint8_t> &img) {
    return [&img](uint64_t off, void *buf, size_t len) -> Result<void> {
        if (off > img.size() || len > img.size() - off) return make_error(EIO, "past end");
        std::memcpy(buf, img.data() + off, len);
        return ok();
    };
}

TEST(LuksCrypto, FormatThenUnlockRightAndWrongPassphrase) {
    crypto::LuksCreateParams p;
    p.iter_time_ms = 5;
    for (const char *mode : {"xts", "cbc"}) {
        p.cipher_mode = mode;
        p.ivgen_alg = std::string(mode) == "cbc" ? "essiv" : "plain64";
        auto img = make_volume(p, "secret", 4096);
        auto h = crypto::parse_luks_header(std::span<const uint8_t>(img.data(), crypto::kLuksHeaderSize));
        ASSERT_TRUE(h) << h.error().message;
        // QEMU's layout: 8 slots of 4000 stripes of the key, 4 KiB aligned.
        EXPECT_EQ(h->payload_offset(), std::string(mode) == "xts" ? 2068480u : 1052672u);
        auto key = crypto::luks_unlock(*h, "secret", reader_of(img));
        ASSERT_TRUE(key) << key.error().message;
        EXPECT_EQ(key->size(), h->master_key_len);
        auto bad = crypto::luks_unlock(*h, "Secret", reader_of(img));
        ASSERT_FALSE(bad);
        EXPECT_EQ(bad.error().message, "Invalid password, cannot unlock any keyslot");
    }
}

TEST(LuksCrypto, HugeIterationCountRefusedNotRun) {
    crypto::LuksCreateParams p;
    p.iter_time_ms = 5;
    auto img = make_volume(p, "pw", 512);
    // Slot 0's iteration count (offset 208 + 4) to 2^32-1.
    for (int i = 0; i < 4; i++) img[212 + size_t(i)] = 0xff;
    auto h = crypto::parse_luks_header(std::span<const uint8_t>(img.data(), crypto::kLuksHeaderSize));
    ASSERT_TRUE(h);
    auto r = crypto::luks_unlock(*h, "pw", reader_of(img));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("above qimg's limit"), std::string::npos);
    // The master key digest's count (offset 164) likewise.
    auto img2 = make_volume(p, "pw", 512);
    for (int i = 0; i < 4; i++) img2[164 + size_t(i)] = 0xff;
    auto h2 = crypto::parse_luks_header(std::span<const uint8_t>(img2.data(), crypto::kLuksHeaderSize));
    ASSERT_TRUE(h2);
    auto r2 = crypto::luks_unlock(*h2, "pw", reader_of(img2));
    ASSERT_FALSE(r2);
    EXPECT_NE(r2.error().message.find("master key iteration count"), std::string::npos);
}

TEST(LuksCrypto, SerializeParseRoundTrip) {
    crypto::LuksCreateParams p;
    p.iter_time_ms = 1;
    p.cipher_alg = "aes-128";
    p.cipher_mode = "cbc";
    p.ivgen_alg = "essiv";
    p.hash_alg = "sha1";
    auto v = crypto::luks_format(p, "x");
    ASSERT_TRUE(v);
    auto h = crypto::parse_luks_header(v->header_bytes);
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(h->cipher_mode, "cbc-essiv:sha256");
    EXPECT_EQ(h->hash_alg, "sha1");
    EXPECT_EQ(crypto::serialize_luks_header(*h), v->header_bytes);
    EXPECT_EQ(crypto::luks_info_json(*h), crypto::luks_info_json(v->header));
}

TEST(LuksFormat, OpenReadsWhatWasWrittenAndRefusesKeyMaterialPastEof) {
    crypto::LuksCreateParams p;
    p.iter_time_ms = 1;
    auto img = make_volume(p, "pw", 8192);
    const Driver *d = find_driver("luks");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->probe(std::span<const uint8_t>(img.data(), 2048), "x"), 100);
    SecretStore secrets;
    ObjectSpec spec;
    spec.qom_type = "secret";
    spec.id = "s";
    spec.props["data"] = "pw";
    ASSERT_TRUE(secrets.add(spec));
    {
        OpenRequest req;
        req.file = std::make_shared<test::MemNode>(img);
        req.options["key-secret"] = "s";
        req.flags.read_write = true;
        req.secrets = &secrets;
        auto n = d->open(req);
        ASSERT_TRUE(n) << n.error().message;
        EXPECT_EQ((*n)->length(), 8192u);
        std::vector<uint8_t> w(1000, 0xab), r(1000);
        ASSERT_TRUE((*n)->write(700, w.data(), w.size()));  // unaligned both ends
        ASSERT_TRUE((*n)->read(700, r.data(), r.size()));
        EXPECT_EQ(w, r);
        EXPECT_FALSE((*n)->read(8000, r.data(), r.size()));
    }
    {
        OpenRequest req;
        req.file = std::make_shared<test::MemNode>(img);
        req.secrets = &secrets;
        auto n = d->open(req);
        ASSERT_FALSE(n);
        EXPECT_EQ(n.error().message, "Parameter 'key-secret' is required for cipher");
    }
    {
        std::vector<uint8_t> cut(img.begin(), img.begin() + 8192);  // header only
        OpenRequest req;
        req.file = std::make_shared<test::MemNode>(cut);
        req.options["key-secret"] = "s";
        req.secrets = &secrets;
        auto n = d->open(req);
        ASSERT_FALSE(n);
        EXPECT_NE(n.error().message.find("beyond the end of the file"), std::string::npos);
    }
}

// Keyslot management (luks_amend_keyslots) over an in-memory volume whose
// writes and flushes are logged, and can be cut off after N writes to stand
// for a kill.
struct SlotVolume {
    std::vector<uint8_t> img;
    crypto::LuksHeader header;
    std::string master_key;
    std::vector<std::string> log;  // "w@OFFSET" and "flush"
    size_t writes_left = SIZE_MAX;
    std::map<std::string, std::string> secrets = {{"sa", "pw-a"}, {"sb", "pw-b"}, {"sc", "pw-c"}};

    explicit SlotVolume(const std::string &pass) {
        crypto::LuksCreateParams p;
        p.iter_time_ms = 1;
        img = make_volume(p, pass, 4096);
        header = *crypto::parse_luks_header(std::span<const uint8_t>(img.data(), crypto::kLuksHeaderSize));
        master_key = *crypto::luks_unlock(header, pass, reader_of(img));
    }

    Result<void> amend(const crypto::LuksAmendParams &p) {
        crypto::LuksVolumeIo io{
            header,
            master_key,
            reader_of(img),
            [this](uint64_t off, const void *buf, size_t len) -> Result<void> {
                if (writes_left == 0) return make_error(EIO, "killed");
                writes_left--;
                log.push_back(fmt::format("w@{}", off));
                std::memcpy(img.data() + off, buf, len);
                return ok();
            },
            [this]() -> Result<void> {
                log.push_back("flush");
                return ok();
            },
            [this](std::string_view id) -> Result<std::string> {
                auto it = secrets.find(std::string(id));
                if (it == secrets.end()) return make_error(ENOENT, fmt::format("No secret with id '{}'", id));
                return it->second;
            },
        };
        return crypto::luks_amend_keyslots(io, p);
    }

    // Unlocks with the header as it is on "disk" now.
    bool opens(const std::string &pass) const {
        auto h = crypto::parse_luks_header(std::span<const uint8_t>(img.data(), crypto::kLuksHeaderSize));
        if (!h) return false;
        auto k = crypto::luks_unlock(*h, pass, reader_of(img));
        return k && *k == master_key;
    }
};

crypto::LuksAmendParams add_params(const char *secret, std::optional<int32_t> slot = std::nullopt) {
    crypto::LuksAmendParams p;
    p.new_secret = secret;
    p.keyslot = slot;
    p.iter_time_ms = 1;
    return p;
}

crypto::LuksAmendParams erase_params(std::optional<int32_t> slot, std::optional<std::string> old = std::nullopt) {
    crypto::LuksAmendParams p;
    p.activate = false;
    p.keyslot = slot;
    p.old_secret = std::move(old);
    return p;
}

std::string amend_error(SlotVolume &v, const crypto::LuksAmendParams &p) {
    auto r = v.amend(p);
    return r ? "ok" : r.error().message;
}

TEST(LuksKeyslots, AddThenEraseByIndexOverwritesMaterialThenHeader) {
    SlotVolume v("pw-a");
    ASSERT_EQ(amend_error(v, add_params("sb", 3)), "ok");
    EXPECT_TRUE(v.opens("pw-b"));
    EXPECT_TRUE(v.header.key_slots[3].enabled());
    const uint64_t mat = uint64_t{v.header.key_slots[3].key_offset_sector} * 512;
    const std::vector<std::string> add_order = {fmt::format("w@{}", mat), "flush", "w@0", "flush"};
    EXPECT_EQ(v.log, add_order);
    const std::vector<uint8_t> before(v.img.begin() + long(mat), v.img.begin() + long(mat) + 4096);

    v.log.clear();
    ASSERT_EQ(amend_error(v, erase_params(3)), "ok");
    EXPECT_EQ(v.log, add_order);  // material (random data) first, the header after
    EXPECT_FALSE(v.opens("pw-b"));
    EXPECT_TRUE(v.opens("pw-a"));
    const crypto::LuksKeySlot &s = v.header.key_slots[3];
    EXPECT_EQ(s.active, crypto::kLuksKeySlotDisabled);
    EXPECT_EQ(s.iterations, 0u);
    EXPECT_EQ(s.salt, (std::array<uint8_t, 32>{}));
    EXPECT_NE(std::vector<uint8_t>(v.img.begin() + long(mat), v.img.begin() + long(mat) + 4096), before);
    // What was written is what the parser reads back (iterations 0 allowed
    // on an inactive slot, as QEMU writes it).
    auto h = crypto::parse_luks_header(std::span<const uint8_t>(v.img.data(), crypto::kLuksHeaderSize));
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_FALSE(h->key_slots[3].enabled());
}

TEST(LuksKeyslots, EraseByOldSecretErasesEveryMatchingSlot) {
    SlotVolume v("pw-a");
    ASSERT_EQ(amend_error(v, add_params("sb")), "ok");  // first free: 1
    ASSERT_EQ(amend_error(v, add_params("sc")), "ok");  // 2
    ASSERT_EQ(amend_error(v, add_params("sb")), "ok");  // 3
    EXPECT_TRUE(v.header.key_slots[1].enabled() && v.header.key_slots[2].enabled() && v.header.key_slots[3].enabled());
    ASSERT_EQ(amend_error(v, erase_params(std::nullopt, "sb")), "ok");
    EXPECT_FALSE(v.header.key_slots[1].enabled());
    EXPECT_TRUE(v.header.key_slots[2].enabled());
    EXPECT_FALSE(v.header.key_slots[3].enabled());
    EXPECT_FALSE(v.opens("pw-b"));
    EXPECT_TRUE(v.opens("pw-a"));
    EXPECT_TRUE(v.opens("pw-c"));
    // Keyslot and old secret together: the slot must hold that secret.
    EXPECT_EQ(amend_error(v, erase_params(2, "sa")),
              "Given keyslot 2 doesn't contain the given old password for erase operation");
    ASSERT_EQ(amend_error(v, erase_params(2, "sc")), "ok");
    EXPECT_FALSE(v.opens("pw-c"));
}

TEST(LuksKeyslots, RefusalsInQemuWords) {
    SlotVolume v("pw-a");
    EXPECT_EQ(amend_error(v, erase_params(0)),
              "Attempt to erase the only active keyslot 0 which will erase all the data in the image irreversibly - "
              "refusing operation");
    EXPECT_EQ(amend_error(v, erase_params(std::nullopt, "sa")),
              "All the active keyslots match the (old) password that was given and erasing them will erase all the "
              "data in the image irreversibly - refusing operation");
    EXPECT_EQ(amend_error(v, erase_params(1)), "Given keyslot 1 is already erased (inactive) ");
    EXPECT_EQ(amend_error(v, erase_params(8)), "Invalid keyslot 8 specified, must be between 0 and 7");
    EXPECT_EQ(amend_error(v, erase_params(-1)), "Invalid keyslot -1 specified, must be between 0 and 7");
    EXPECT_EQ(amend_error(v, erase_params(std::nullopt)),
              "To erase keyslot(s), either explicit keyslot index or the password currently contained in them must "
              "be given");
    EXPECT_EQ(amend_error(v, erase_params(std::nullopt, "sb")),
              "No keyslots match given (old) password for erase operation");
    EXPECT_EQ(amend_error(v, erase_params(std::nullopt, "nosuch")), "No secret with id 'nosuch'");
    auto with_new = erase_params(0);
    with_new.new_secret = "sb";
    EXPECT_EQ(amend_error(v, with_new), "'new-secret' must not be given when erasing keyslots");
    auto with_iter = erase_params(0);
    with_iter.iter_time_ms = 10;
    EXPECT_EQ(amend_error(v, with_iter), "'iter-time' must not be given when erasing keyslots");

    EXPECT_EQ(amend_error(v, add_params("sb", 0)), "Refusing to overwrite active keyslot 0 - please erase it first");
    EXPECT_EQ(amend_error(v, add_params("sb", 8)), "Invalid keyslot 8 specified, must be between 0 and 7");
    EXPECT_EQ(amend_error(v, add_params("sb", -1)), "Invalid keyslot 4294967295 specified, must be between 0 and 7");
    auto no_new = add_params("sb");
    no_new.new_secret.reset();
    EXPECT_EQ(amend_error(v, no_new), "'new-secret' is required to activate a keyslot");
    auto with_old = add_params("sb");
    with_old.old_secret = "sa";
    EXPECT_EQ(amend_error(v, with_old), "'old-secret' must not be given when activating keyslots");
    EXPECT_TRUE(v.log.empty());  // no refusal wrote anything
    for (int i = 1; i < 8; i++) ASSERT_EQ(amend_error(v, add_params("sb")), "ok");
    EXPECT_EQ(amend_error(v, add_params("sc")), "Can't add a keyslot - all keyslots are in use");
}

TEST(LuksKeyslots, ForceErasesTheLastSlotAndOverwritesAnActiveOne) {
    SlotVolume v("pw-a");
    auto over = add_params("sb", 0);
    over.force = true;
    ASSERT_EQ(amend_error(v, over), "ok");
    EXPECT_TRUE(v.opens("pw-b"));
    EXPECT_FALSE(v.opens("pw-a"));
    auto last = erase_params(0);
    last.force = true;
    ASSERT_EQ(amend_error(v, last), "ok");
    EXPECT_FALSE(v.opens("pw-b"));
    for (const auto &s : v.header.key_slots) EXPECT_FALSE(s.enabled());
}

// A kill after any number of writes: the passphrases meant to survive
// still open the volume, and an interrupted add leaves the old state.
TEST(LuksKeyslots, KillAtAnyWriteKeepsSurvivingPassphrases) {
    for (size_t n = 0; n < 2; n++) {
        SlotVolume v("pw-a");
        v.writes_left = n;
        EXPECT_FALSE(v.amend(add_params("sb", 2)));
        EXPECT_TRUE(v.opens("pw-a")) << n;
        EXPECT_FALSE(v.opens("pw-b")) << n;
    }
    for (size_t n = 0; n <= 4; n++) {
        SlotVolume v("pw-a");
        ASSERT_EQ(amend_error(v, add_params("sb", 2)), "ok");
        ASSERT_EQ(amend_error(v, add_params("sc", 5)), "ok");
        ASSERT_EQ(amend_error(v, add_params("sb", 6)), "ok");
        v.writes_left = n;  // erasing slots 2 and 6 takes 4 writes
        EXPECT_EQ(bool(v.amend(erase_params(std::nullopt, "sb"))), n >= 4);
        EXPECT_TRUE(v.opens("pw-a")) << n;
        EXPECT_TRUE(v.opens("pw-c")) << n;
        // Slot 6 (the second to go) holds pw-b until its material is overwritten.
        EXPECT_EQ(v.opens("pw-b"), n < 3) << n;
    }
}

}  // namespace
}  // namespace qimg
