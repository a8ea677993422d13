// Unit tests of the qcow driver: images built in memory (tests/lib/mem_node.h)
// as qemu-img 7.2 lays them out, read, written (new, partial, compressed
// clusters) and reopened, and hostile headers and tables refused with a
// clear error or read as I/O errors, never a crash or a huge allocation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "block/driver.h"
#include "codec/codec.h"
#include "crypto/qcow_aes.h"
#include "crypto/secret.h"
#include "format/qcow/header.h"
#include "lib/mem_node.h"
#include "util/endian.h"

namespace qimg::qcow {
namespace {

// A qemu-img-made image: header, L1 of zeroed sectors right after it.
std::vector<uint8_t> make_image(uint64_t size, uint8_t cluster_bits = 12, uint8_t l2_bits = 9) {
    Header h;
    h.size = size;
    h.cluster_bits = cluster_bits;
    h.l2_bits = l2_bits;
    h.l1_table_offset = kHeaderSize;
    std::vector<uint8_t> img(kHeaderSize + (h.l1_entries() * 8 + 511) / 512 * 512, 0);
    HeaderBytes hb = encode_header(h);
    std::memcpy(img.data(), hb.data(), hb.size());
    return img;
}

Result<NodePtr> open_over(std::shared_ptr<test::MemNode> mem, bool rw = false) {
    return test::open_format_over("qcow", std::move(mem), rw);
}
std::string open_error(std::vector<uint8_t> img) { return test::open_error("qcow", std::move(img)); }

TEST(QcowHeader, RoundTripAndProbe) {
    auto img = make_image(10 << 20);
    EXPECT_TRUE(probe_header(img));
    auto h = parse_header(img);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->size, 10u << 20);
    EXPECT_EQ(h->cluster_size(), 4096u);
    EXPECT_EQ(h->l1_entries(), 5u);
    img[7] = 2;
    EXPECT_FALSE(probe_header(img));
}

TEST(QcowHeader, QemuChecksInQemusWords) {
    auto img = make_image(1 << 20);
    img[0] = 'X';
    EXPECT_EQ(open_error(img), "Image not in qcow format");
    img = make_image(1 << 20);
    put_be32(img.data() + 4, 2);
    EXPECT_EQ(open_error(img), "qcow (v1) does not support qcow version 2");
    img = make_image(1 << 20);
    put_be64(img.data() + 24, 1);
    EXPECT_EQ(open_error(img), "Image size is too small (must be at least 2 bytes)");
    img = make_image(1 << 20);
    img[32] = 17;
    EXPECT_EQ(open_error(img), "Cluster size must be between 512 and 64k");
    img = make_image(1 << 20);
    img[33] = 14;
    EXPECT_EQ(open_error(img), "L2 table size must be between 512 and 64k");
    img = make_image(1 << 20);
    put_be32(img.data() + 36, 7);
    EXPECT_EQ(open_error(img), "invalid encryption method in qcow header");
    img = make_image(1 << 20);
    put_be64(img.data() + 24, UINT64_MAX - 10);
    EXPECT_EQ(open_error(img), "Image too large");
}

TEST(QcowHeader, HostileTablesAndNames) {
    // An L1 table of 2 GiB claimed by a tiny file: refused before allocating.
    auto img = make_image(1 << 20, 9, 6);
    put_be64(img.data() + 24, (1ull << 40));
    EXPECT_NE(open_error(img).find("past the end of the file"), std::string::npos);
    // An L1 offset that wraps.
    img = make_image(1 << 20);
    put_be64(img.data() + 40, UINT64_MAX - 8);
    EXPECT_EQ(open_error(img), "qcow: L1 table offset invalid");
    // A backing file name over QEMU's limit.
    img = make_image(1 << 20);
    put_be64(img.data() + 8, 48);
    put_be32(img.data() + 16, 4000);
    EXPECT_EQ(open_error(img), "Backing file name too long");
}

TEST(QcowNode, WritesReadBackAndSurviveReopen) {
    auto mem = std::make_shared<test::MemNode>(make_image(3 << 20));
    std::vector<uint8_t> pattern(10000);
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = uint8_t(i * 7 + 1);
    {
        auto n = open_over(mem, true);
        ASSERT_TRUE(n);
        // Unaligned, across clusters and L2 tables (2 MiB each).
        ASSERT_TRUE((*n)->write(100, pattern.data(), pattern.size()));
        ASSERT_TRUE((*n)->write((2 << 20) - 5000, pattern.data(), pattern.size()));
        std::vector<uint8_t> back(pattern.size());
        ASSERT_TRUE((*n)->read(100, back.data(), back.size()));
        EXPECT_EQ(back, pattern);
        // Before a flush nothing on disk names the new clusters.
        auto before = open_over(std::make_shared<test::MemNode>(mem->bytes()));
        ASSERT_TRUE(before);
        ASSERT_TRUE((*before)->read(100, back.data(), back.size()));
        EXPECT_EQ(back, std::vector<uint8_t>(back.size(), 0));
        ASSERT_TRUE((*n)->flush());
    }
    auto n = open_over(mem);
    ASSERT_TRUE(n);
    std::vector<uint8_t> back(pattern.size());
    ASSERT_TRUE((*n)->read((2 << 20) - 5000, back.data(), back.size()));
    EXPECT_EQ(back, pattern);
    std::vector<uint8_t> head(100);
    ASSERT_TRUE((*n)->read(0, head.data(), head.size()));
    EXPECT_EQ(head, std::vector<uint8_t>(100, 0));
    auto st = (*n)->block_status(0, 3 << 20);
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->flags & kStatusData);
    EXPECT_TRUE(st->flags & kStatusOffsetValid);
}

TEST(QcowNode, CompressedClustersReadAndPartiallyRewritten) {
    auto mem = std::make_shared<test::MemNode>(make_image(1 << 20));
    auto n = open_over(mem, true);
    ASSERT_TRUE(n);
    std::vector<uint8_t> c(4096, 0x5a);
    auto z = (*n)->compress_cluster(c.data(), c.size(), CompressOptions{});
    ASSERT_TRUE(z);
    ASSERT_FALSE(z->empty());
    ASSERT_TRUE((*n)->write_compressed_data(8192, *z, c.data(), c.size()));
    auto st = (*n)->block_status(8192, 4096);
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->flags & kStatusData);
    EXPECT_FALSE(st->flags & kStatusOffsetValid);
    uint8_t x[3] = {1, 2, 3};
    ASSERT_TRUE((*n)->write(8192 + 10, x, 3));
    std::vector<uint8_t> back(4096);
    ASSERT_TRUE((*n)->read(8192, back.data(), back.size()));
    c[10] = 1, c[11] = 2, c[12] = 3;
    EXPECT_EQ(back, c);
    // Only whole clusters are written compressed.
    EXPECT_FALSE((*n)->write_compressed_data(100, *z, c.data(), c.size()));
}

// Random unaligned writes (plain and compressed, over a backing file)
// against a flat model of the guest content, reopened between rounds.
TEST(QcowNode, RandomWritesMatchAModel) {
    const uint64_t size = 3 * (1 << 20) + 1536;
    auto backing = std::make_shared<test::MemNode>(size - 4096);
    std::vector<uint8_t> model(size, 0);
    for (size_t i = 0; i < size - 4096; ++i) model[i] = uint8_t(i / 512 + 3);
    ASSERT_TRUE(backing->write(0, model.data(), size - 4096));
    auto mem = std::make_shared<test::MemNode>(make_image(size));
    uint32_t seed = 12345;
    auto rnd = [&seed](uint32_t n) { seed = seed * 1103515245 + 12345; return (seed >> 8) % n; };
    for (int round = 0; round < 4; ++round) {
        auto n = open_over(mem, true);
        ASSERT_TRUE(n);
        (*n)->set_backing(backing);
        for (int i = 0; i < 40; ++i) {
            if (rnd(4) == 0) {
                uint64_t c = rnd(uint32_t(size / 4096)) * 4096;
                size_t len = size_t(std::min<uint64_t>(4096, size - c));
                std::vector<uint8_t> d(len, uint8_t(rnd(256)));
                auto z = (*n)->compress_cluster(d.data(), len, CompressOptions{});
                ASSERT_TRUE(z);
                ASSERT_TRUE((*n)->write_compressed_data(c, *z, d.data(), len));
                std::memcpy(model.data() + c, d.data(), len);
            } else {
                uint64_t off = rnd(uint32_t(size));
                size_t len = size_t(std::min<uint64_t>(rnd(300000) + 1, size - off));
                std::vector<uint8_t> d(len);
                for (auto &b : d) b = uint8_t(rnd(256));
                ASSERT_TRUE((*n)->write(off, d.data(), len));
                std::memcpy(model.data() + off, d.data(), len);
            }
        }
        std::vector<uint8_t> all(size);
        ASSERT_TRUE((*n)->read(0, all.data(), all.size()));
        ASSERT_EQ(all, model) << "round " << round;
        ASSERT_TRUE((*n)->flush());
    }
    auto n = open_over(mem);
    ASSERT_TRUE(n);
    (*n)->set_backing(backing);
    std::vector<uint8_t> all(size);
    ASSERT_TRUE((*n)->read(0, all.data(), all.size()));
    EXPECT_EQ(all, model);
}

TEST(QcowNode, HostileEntriesAreIoErrors) {
    auto img = make_image(1 << 20);
    // L1[0] -> L2 at 4096; L2[0] unaligned, L2[1] far past INT64_MAX,
    // L2[2] a compressed cluster of garbage.
    img.resize(4096 + 4096 + 512, 0xee);
    std::memset(img.data() + 4096, 0, 4096);
    put_be64(img.data() + kHeaderSize, 4096);
    put_be64(img.data() + 4096, 4096 + 4096 + 3);
    put_be64(img.data() + 4096 + 8, (1ull << 63) - 4096);
    put_be64(img.data() + 4096 + 16, encode_compressed(8192, 100, 12));
    auto n = open_over(std::make_shared<test::MemNode>(img));
    ASSERT_TRUE(n);
    std::vector<uint8_t> buf(4096);
    EXPECT_FALSE((*n)->read(0, buf.data(), buf.size()));
    EXPECT_FALSE((*n)->read(4096, buf.data(), buf.size()));
    EXPECT_FALSE((*n)->read(8192, buf.data(), buf.size()));
    ASSERT_TRUE((*n)->read(12288, buf.data(), buf.size()));
}

// Legacy AES (crypt_method 1): opened with encrypt.key-secret, data
// encrypted on disk sector by sector with the guest sector as IV.
Result<NodePtr> open_aes(std::shared_ptr<test::MemNode> mem, const SecretStore &secrets,
                         std::map<std::string, std::string> opts, bool rw = false) {
    OpenRequest req;
    req.file = std::move(mem);
    req.flags.read_write = rw;
    req.options = std::move(opts);
    req.secrets = &secrets;
    return find_driver("qcow")->open(req);
}

TEST(QcowAes, WritesEncryptedAndReadsBackWithTheKeyOnly) {
    auto img = make_image(1 << 20);
    put_be32(img.data() + 36, kCryptAes);
    auto mem = std::make_shared<test::MemNode>(img);
    SecretStore secrets;
    for (auto [id, data] : {std::pair{"s", "passphrase"}, std::pair{"w", "other"}}) {
        ObjectSpec spec;
        spec.qom_type = "secret";
        spec.id = id;
        spec.props["data"] = data;
        ASSERT_TRUE(secrets.add(spec));
    }
    std::vector<uint8_t> pattern(10000);
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = uint8_t(i * 13 + 5);
    {
        auto n = open_aes(mem, secrets, {{"encrypt.key-secret", "s"}}, true);
        ASSERT_TRUE(n) << n.error().message;
        EXPECT_TRUE((*n)->encrypted());
        ASSERT_TRUE((*n)->write(100, pattern.data(), pattern.size()));  // unaligned both ends
        ASSERT_TRUE((*n)->write(8192, pattern.data(), 512));            // in place, aligned
        ASSERT_TRUE((*n)->flush());
    }
    // The plaintext is nowhere in the file.
    const auto bytes = mem->bytes();
    EXPECT_EQ(std::search(bytes.begin(), bytes.end(), pattern.begin(), pattern.begin() + 64), bytes.end());
    // The rest of the last cluster written (guest 8..12 KiB) was zeros, and
    // is stored as zeros encrypted with their guest sector as IV (sector 20).
    auto cipher = crypto::qcow_aes_cipher("passphrase");
    ASSERT_TRUE(cipher);
    std::vector<uint8_t> zero_sector(512, 0);
    ASSERT_TRUE((*cipher)->encrypt(20, zero_sector.data(), 512));
    EXPECT_NE(std::search(bytes.begin(), bytes.end(), zero_sector.begin(), zero_sector.end()), bytes.end());

    auto n = open_aes(mem, secrets, {{"encrypt.key-secret", "s"}});
    ASSERT_TRUE(n);
    std::vector<uint8_t> back(pattern.size());
    ASSERT_TRUE((*n)->read(100, back.data(), back.size()));
    std::vector<uint8_t> expect = pattern;
    std::memcpy(expect.data() + 8192 - 100, pattern.data(), 512);
    EXPECT_EQ(back, expect);
    auto st = (*n)->block_status(0, 4096);
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->flags & kStatusData);
    EXPECT_FALSE(st->flags & kStatusOffsetValid);  // as QEMU: no host offset for encrypted data
    // Any passphrase opens (there is no check); the wrong one reads garbage.
    auto wrong = open_aes(mem, secrets, {{"encrypt.key-secret", "w"}});
    ASSERT_TRUE(wrong);
    ASSERT_TRUE((*wrong)->read(100, back.data(), back.size()));
    EXPECT_NE(back, expect);
}

TEST(QcowAes, OpenOptionsInQemusWords) {
    auto img = make_image(1 << 20);
    put_be32(img.data() + 36, kCryptAes);
    SecretStore secrets;
    auto err = [&](std::vector<uint8_t> i, std::map<std::string, std::string> o) {
        auto r = open_aes(std::make_shared<test::MemNode>(std::move(i)), secrets, std::move(o));
        return r ? std::string("opened") : r.error().message;
    };
    EXPECT_EQ(err(img, {}), "Parameter 'encrypt.key-secret' is required for cipher");
    EXPECT_EQ(err(img, {{"encrypt.format", "luks"}, {"encrypt.key-secret", "s"}}),
              "Header reported 'aes' encryption format but options specify 'luks'");
    EXPECT_EQ(err(img, {{"encrypt.key-secret", "nosuch"}}), "No secret with id 'nosuch'");
    EXPECT_EQ(err(make_image(1 << 20), {{"encrypt.format", "aes"}}),
              "No encryption in image header, but options specified format 'aes'");
    // Without I/O (qemu-img info) no key is needed.
    OpenRequest req;
    req.file = std::make_shared<test::MemNode>(img);
    req.flags.no_io = true;
    auto n = find_driver("qcow")->open(req);
    ASSERT_TRUE(n) << n.error().message;
    EXPECT_TRUE((*n)->encrypted());
    EXPECT_EQ(crypto::qcow_aes_key(std::string("0123456789abcdefXYZ")), "0123456789abcdef");
    EXPECT_EQ(crypto::qcow_aes_key(std::string("ab\0cd", 5)), std::string("ab") + std::string(14, '\0'));
}

TEST(QcowL2, EntryCoding) {
    uint64_t e = encode_compressed(12345, 999, 12);
    L2Entry d = decode_l2(e, 12);
    EXPECT_EQ(d.kind, L2Entry::Compressed);
    EXPECT_EQ(d.offset, 12345u);
    EXPECT_EQ(d.compressed_bytes, 999u);
    EXPECT_EQ(encode_compressed(1ull << 51, 10, 12), 0u);
    EXPECT_EQ(encode_compressed(0, 4096, 12), 0u);
    EXPECT_EQ(decode_l2(0, 12).kind, L2Entry::Unallocated);
    EXPECT_EQ(decode_l2(4096, 12).kind, L2Entry::Normal);
}

}  // namespace
}  // namespace qimg::qcow
