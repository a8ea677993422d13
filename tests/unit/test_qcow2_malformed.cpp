// Malformed qcow2 images built in temp files: every broken field must give
// an error with QEMU's wording (or an EIO on read), never a crash.
#include "qcow2_test_util.h"

#include "format/qcow2/header.h"
#include "format/qcow2/l1l2.h"
#include "util/endian.h"

namespace qimg::test {
namespace {

using qcow2::kMagic;

// A minimal valid v3 image: 64 KiB clusters, 1 MiB, header / reftable /
// refblock / L1 / one L2 table mapping guest cluster 0 to host cluster 5.
std::vector<uint8_t> good_image(uint32_t cluster_bits = 16) {
    const uint64_t cs = uint64_t{1} << cluster_bits;
    std::vector<uint8_t> v(6 * cs, 0);
    uint8_t *h = v.data();
    put_be32(h, kMagic);
    put_be32(h + 4, 3);
    put_be32(h + 20, cluster_bits);
    put_be64(h + 24, 1 << 20);
    put_be32(h + 36, 1);            // l1_size
    put_be64(h + 40, 3 * cs);       // l1 offset
    put_be64(h + 48, cs);           // reftable
    put_be32(h + 56, 1);
    put_be32(h + 96, 4);
    put_be32(h + 100, 112);
    put_be64(&v[cs], 2 * cs);
    for (int i = 0; i < 6; i++) put_be16(&v[2 * cs + 2 * i], 1);
    put_be64(&v[3 * cs], (4 * cs) | (1ull << 63));
    put_be64(&v[4 * cs], (5 * cs) | (1ull << 63));
    std::fill(v.begin() + 5 * cs, v.begin() + 6 * cs, 0x5a);
    return v;
}

Result<NodePtr> open_bytes(const TempDir &d, const std::vector<uint8_t> &img, std::vector<uint8_t> *content = nullptr) {
    write_file(d / "m.qcow2", img);
    BlockOpener op;
    auto n = open_image(op, d / "m.qcow2");
    if (!n) return n;
    if (content) {
        content->resize((*n)->length());
        auto r = (*n)->read(0, content->data(), content->size());
        if (!r) return Err(r.error());
    }
    return n;
}

std::string open_error(const std::vector<uint8_t> &img, bool read = false) {
    TempDir d;
    std::vector<uint8_t> c;
    auto n = open_bytes(d, img, read ? &c : nullptr);
    return n ? std::string("<ok>") : n.error().message;
}

TEST(Qcow2Malformed, GoodImageReads) {
    TempDir d;
    std::vector<uint8_t> c;
    auto n = open_bytes(d, good_image(), &c);
    ASSERT_TRUE(n) << n.error().message;
    EXPECT_EQ(c[0], 0x5a);
    EXPECT_EQ(c[65535], 0x5a);
    EXPECT_EQ(c[65536], 0);
}

TEST(Qcow2Malformed, HeaderFields) {
    auto v = good_image();
    EXPECT_EQ(open_error(std::vector<uint8_t>(v.begin(), v.begin() + 50)), "qcow2 header too short");
    EXPECT_EQ(open_error(std::vector<uint8_t>(v.begin(), v.begin() + 3)), "Image is not in qcow2 format");
    auto w = v; put_be32(&w[4], 4);
    EXPECT_EQ(open_error(w), "Unsupported qcow2 version 4");
    w = v; put_be32(&w[20], 8);
    EXPECT_EQ(open_error(w), "Unsupported cluster size: 2^8");
    w = v; put_be32(&w[20], 22);
    EXPECT_EQ(open_error(w), "Unsupported cluster size: 2^22");
    w = v; put_be32(&w[100], 100);
    EXPECT_EQ(open_error(w), "qcow2 header too short");
    w = v; put_be32(&w[100], 70000);
    EXPECT_EQ(open_error(w), "qcow2 header exceeds cluster size");
    w = v; put_be64(&w[8], 70000);
    EXPECT_EQ(open_error(w), "Invalid backing file offset");
    w = v; put_be32(&w[96], 7);
    EXPECT_EQ(open_error(w), "Reference count entry width too large; may not exceed 64 bits");
    w = v; put_be32(&w[56], 0);
    EXPECT_EQ(open_error(w), "Image does not contain a reference count table");
    w = v; put_be32(&w[56], 0x10000000);
    EXPECT_EQ(open_error(w), "Reference count table too large");
    w = v; put_be64(&w[48], 65536 + 8);
    EXPECT_EQ(open_error(w), "Reference count table offset invalid");
    w = v; put_be32(&w[36], 0x7fffffff);
    EXPECT_EQ(open_error(w), "Active L1 table too large");
    w = v; put_be64(&w[40], 12345);
    EXPECT_EQ(open_error(w), "Active L1 table offset invalid");
    w = v; put_be64(&w[40], 0x7fffffffffff0000ull);  // far past EOF: reads as zeroes, as in QEMU
    EXPECT_EQ(open_error(w, true), "<ok>");
    w = v; put_be64(&w[40], 0x7ffffffffffffe00ull);
    EXPECT_EQ(open_error(w), "Active L1 table offset invalid");
    w = v; put_be32(&w[36], 0);
    EXPECT_EQ(open_error(w), "L1 table is too small");
    w = v; put_be64(&w[24], 0x7fffffffffffffffull);
    EXPECT_EQ(open_error(w), "Image is too big");
    w = v; put_be32(&w[60], 70000);
    EXPECT_EQ(open_error(w), "Snapshot table too large");
    w = v; w[104] = 7;
    EXPECT_EQ(open_error(w), "qcow2: unknown compression type: 7");
    w = v; w[104] = 1;
    EXPECT_EQ(open_error(w), "qcow2: Compression type incompatible feature bit must be set");
    w = v; put_be64(&w[72], 1u << 3);
    EXPECT_EQ(open_error(w), "qcow2: Compression type incompatible feature bit must not be set");
    w = v; put_be64(&w[72], 1u << 5);
    EXPECT_EQ(open_error(w), "Unsupported qcow2 feature(s): Unknown incompatible feature: 20");
    w = v; put_be64(&w[72], 1u << 2);
    EXPECT_EQ(open_error(w), "'data-file' is required for this image");
    w = v; put_be32(&w[32], 2);
    EXPECT_NE(open_error(w), "<ok>");
}

TEST(Qcow2Malformed, Extensions) {
    auto v = good_image();
    auto w = v;
    put_be32(&w[112], 0x12345678);
    put_be32(&w[116], 0xfffffff0);  // length overflow
    EXPECT_EQ(open_error(w), "Header extension too large");
    w = v;
    put_be32(&w[112], qcow2::kExtBackingFormat);
    put_be32(&w[116], 20);
    EXPECT_EQ(open_error(w), "ERROR: ext_backing_format: len=20 too large (>=16)");
    // Feature names are used for unknown incompatible bits.
    w = v;
    put_be64(&w[72], 1ull << 9);
    put_be32(&w[112], qcow2::kExtFeatureTable);
    put_be32(&w[116], 48);
    w[120] = 0;
    w[121] = 9;
    std::memcpy(&w[122], "shiny feature", 13);
    EXPECT_EQ(open_error(w), "Unsupported qcow2 feature(s): shiny feature");
    // Backing file name too long.
    w = v;
    put_be64(&w[8], 1024);
    put_be32(&w[16], 2000);
    EXPECT_EQ(open_error(w), "Backing file name too long");
    w = v;
    put_be64(&w[8], 65000);
    put_be32(&w[16], 1000);
    EXPECT_EQ(open_error(w), "Backing file name too long");
    // Bitmaps extension with zero bitmaps.
    w = v;
    put_be64(&w[88], 1);
    put_be32(&w[112], qcow2::kExtBitmaps);
    put_be32(&w[116], 24);
    EXPECT_EQ(open_error(w), "found bitmaps extension with zero bitmaps");
}

TEST(Qcow2Malformed, MappingEntries) {
    const uint64_t cs = 65536;
    auto v = good_image();
    auto w = v;
    // Corruption events: reported on stderr (qcow2_signal_corruption, not
    // fatal on a read-only node), the read fails with a plain EIO.
    put_be64(&w[3 * cs], (4 * cs + 512) | (1ull << 63));  // unaligned L2 table
    testing::internal::CaptureStderr();
    EXPECT_EQ(open_error(w, true), "Input/output error");
    EXPECT_EQ(testing::internal::GetCapturedStderr(),
              "qcow2: Image is corrupt: L2 table offset 0x40200 unaligned (L1 index: 0); further non-fatal "
              "corruption events will be suppressed\n");
    w = v;
    put_be64(&w[4 * cs], (5 * cs + 512) | (1ull << 63));  // unaligned data cluster
    testing::internal::CaptureStderr();
    EXPECT_EQ(open_error(w, true), "Input/output error");
    EXPECT_NE(testing::internal::GetCapturedStderr().find("Cluster allocation offset 0x50200 unaligned (L2 offset: "
                                                          "0x40000, L2 index: 0)"),
              std::string::npos);
    // L2 table and data far past the end of the file read as zeroes, as in QEMU.
    w = v;
    put_be64(&w[4 * cs], (1ull << 40) | (1ull << 63));
    EXPECT_EQ(open_error(w, true), "<ok>");
    w = v;
    put_be64(&w[3 * cs], (1ull << 40) | (1ull << 63));
    EXPECT_EQ(open_error(w, true), "<ok>");
    // Data cluster inside the header: readable, but never writable.
    w = v;
    put_be64(&w[4 * cs], 0 | (1ull << 63) | 0);
    put_be64(&w[4 * cs + 8], cs | (1ull << 63));
    {
        TempDir d;
        write_file(d / "m.qcow2", w);
        BlockOpener op;
        auto n = open_image(op, d / "m.qcow2", true);
        ASSERT_TRUE(n) << n.error().message;
        std::vector<uint8_t> b(100, 1);
        EXPECT_FALSE((*n)->write(cs, b.data(), b.size()));
    }
    // Corrupt compressed data: EIO, not a crash.
    w = v;
    put_be64(&w[4 * cs], (5 * cs) | qcow2::kOflagCompressed | (uint64_t{3} << (62 - 8)));
    EXPECT_NE(open_error(w, true).find("Could not decompress"), std::string::npos);
    // Compressed descriptor beyond the end of the file.
    w = v;
    put_be64(&w[4 * cs], (uint64_t{1} << 40) | qcow2::kOflagCompressed);
    EXPECT_NE(open_error(w, true), "<ok>");
    // Extended L2 bitmap with both bits set.
}

TEST(Qcow2Malformed, RefcountEntries) {
    const uint64_t cs = 65536;
    auto w = good_image();
    put_be64(&w[cs], 2 * cs + 512);  // unaligned refcount block
    TempDir d;
    write_file(d / "m.qcow2", w);
    BlockOpener op;
    auto n = open_image(op, d / "m.qcow2", true);
    ASSERT_TRUE(n) << n.error().message;
    std::vector<uint8_t> b(cs, 7);
    auto r = (*n)->write(cs, b.data(), b.size());  // needs a new cluster
    EXPECT_FALSE(r);
}

TEST(Qcow2Malformed, FuzzedBytesNeverCrash) {
    // Flip bytes all over the metadata of a valid image; every outcome is fine except a crash.
    TempDir d;
    auto v = good_image(9);
    uint32_t seed = 12345;
    for (int iter = 0; iter < 400; iter++) {
        auto w = v;
        for (int k = 0; k < 4; k++) {
            seed = seed * 1103515245 + 12345;
            size_t pos = (seed >> 8) % (5 * 512);
            w[pos] = uint8_t(seed >> 3);
        }
        write_file(d / "f.qcow2", w);
        BlockOpener op;
        auto n = open_image(op, d / "f.qcow2");
        if (!n) continue;
        uint64_t len = std::min<uint64_t>((*n)->length(), 1 << 20);
        std::vector<uint8_t> buf(len);
        (void)(*n)->read(0, buf.data(), len);
        (void)(*n)->block_status(0, len ? len : 1);
        (void)(*n)->specific_info();
    }
}

}  // namespace
}  // namespace qimg::test
