// qemu_writes_qimg_reads: images made by the real qemu-img/qemu-io (every
// cluster size, v2/v3, compressed zlib/zstd, extended L2, backing chains,
// external data files, refcount widths) read by the qcow2 driver, compared
// with what the real qemu-img converts to raw.
#include "qcow2_test_util.h"

#include "block/status.h"

namespace qimg::test {
namespace {

// Creates `img` with `opts`, writes a few patterns with qemu-io, then
// checks that qimg reads what `qemu-img convert -O raw` produces.
void roundtrip(const std::string &opts, const std::string &size, const std::string &io_cmds,
               const std::string &convert_flags = "") {
    if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
    TempDir d;
    std::string img = d / "a.qcow2", raw = d / "a.raw", out;
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o '" + opts + "' " + img + " " + size, &out), 0) << out;
    if (!io_cmds.empty()) {
        ASSERT_EQ(sh("qemu-io -f qcow2 " + io_cmds + " " + img + " >/dev/null", &out), 0) << out;
    }
    if (!convert_flags.empty()) {
        std::string c = d / "c.qcow2";
        ASSERT_EQ(sh("qemu-img convert -f qcow2 -O qcow2 " + convert_flags + " " + img + " " + c, &out), 0) << out;
        img = c;
    }
    ASSERT_EQ(sh("qemu-img convert -f qcow2 -O raw " + img + " " + raw, &out), 0) << out;
    BlockOpener op;
    auto n = open_image(op, img);
    ASSERT_TRUE(n) << n.error().message;
    std::vector<uint8_t> want = read_file(raw), got = read_all(**n);
    ASSERT_EQ(want.size(), got.size());
    EXPECT_TRUE(want == got) << "content differs for " << opts;
    // Unaligned small reads agree too.
    for (uint64_t off : {uint64_t{1}, uint64_t{511}, uint64_t{65535}, uint64_t{100000}}) {
        if (off + 700 > want.size()) continue;
        std::vector<uint8_t> b(700);
        ASSERT_TRUE((*n)->read(off, b.data(), b.size()));
        EXPECT_TRUE(std::equal(b.begin(), b.end(), want.begin() + off)) << "at " << off;
    }
}

const std::string kPatterns =
    "-c 'write -P 0x11 0 4k' -c 'write -P 0x22 70k 130k' -c 'write -z 300k 64k' -c 'write -P 0x33 1020k 4k'";

TEST(Qcow2Read, ClusterSizes) {
    for (const char *cs : {"512", "1k", "4k", "16k", "64k", "256k", "1M", "2M"})
        roundtrip(std::string("cluster_size=") + cs, "3M", kPatterns);
}

TEST(Qcow2Read, Version2) { roundtrip("compat=0.10", "2M", kPatterns); }

TEST(Qcow2Read, RefcountWidths) {
    for (const char *b : {"1", "2", "4", "8", "32", "64"}) roundtrip(std::string("refcount_bits=") + b, "2M", kPatterns);
}

TEST(Qcow2Read, CompressedZlib) { roundtrip("cluster_size=4k", "2M", kPatterns, "-c"); }
TEST(Qcow2Read, CompressedZlib64k) { roundtrip("cluster_size=65536", "2M", kPatterns, "-c"); }
TEST(Qcow2Read, CompressedZstd) { roundtrip("compression_type=zstd", "2M", kPatterns, "-c -o compression_type=zstd"); }

TEST(Qcow2Read, ExtendedL2) {
    roundtrip("extended_l2=on", "2M", kPatterns + " -c 'write -P 0x44 1500k 1k' -c 'write -z 1600k 2k'");
    roundtrip("extended_l2=on,cluster_size=2M", "6M", kPatterns);
}

TEST(Qcow2Read, LazyRefcounts) { roundtrip("lazy_refcounts=on", "2M", kPatterns); }

TEST(Qcow2Read, BackingChain) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string out;
    ASSERT_EQ(sh("cd " + d.path + " && qemu-img create -q -f raw base.raw 3M && qemu-io -f raw -c 'write -P 0xaa 0 3M' base.raw"
                 " && qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 2M && qemu-io -c 'write -P 0xbb 64k 64k' mid.qcow2"
                 " && qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 4M && qemu-io -c 'write -P 0xcc 96k 8k' "
                 "-c 'write -z 0 1k' top.qcow2 && qemu-img convert -O raw top.qcow2 top.raw", &out), 0) << out;
    BlockOpener op;
    auto n = open_image(op, d / "top.qcow2");
    ASSERT_TRUE(n) << n.error().message;
    EXPECT_EQ((*n)->backing_filename(), "mid.qcow2");
    EXPECT_EQ((*n)->backing_format(), "qcow2");
    EXPECT_TRUE(read_all(**n) == read_file(d / "top.raw"));
    // The status walk sees three layers.
    auto s = chain_status(**n, nullptr, 300 * 1024, 4096);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->depth, 2);
    auto s2 = chain_status(**n, nullptr, 3 * 1024 * 1024 + 100, 4096);  // past the 2M middle layer
    ASSERT_TRUE(s2);
    EXPECT_TRUE(s2->flags & kStatusZero);
}

TEST(Qcow2Read, ExternalDataFile) {
    if (!have_qemu()) GTEST_SKIP();
    for (const char *raw_opt : {"off", "on"}) {
        TempDir d;
        std::string out;
        ASSERT_EQ(sh(std::string("cd ") + d.path + " && qemu-img create -q -f qcow2 -o data_file=d.raw,data_file_raw=" +
                         raw_opt + " a.qcow2 2M && qemu-io -c 'write -P 0x5a 4k 100k' -c 'write -z 200k 64k' a.qcow2 >/dev/null"
                         " && qemu-img convert -O raw a.qcow2 a.raw", &out), 0) << out;
        std::string cwd = std::filesystem::current_path().string();
        ASSERT_EQ(chdir(d.path.c_str()), 0);  // the data file name is relative to the cwd, as in QEMU 7.2
        BlockOpener op;
        auto n = open_image(op, "a.qcow2");
        ASSERT_TRUE(n) << n.error().message;
        EXPECT_TRUE(read_all(**n) == read_file("a.raw"));
        auto info = (*n)->specific_info();
        EXPECT_EQ(info["data"]["data-file"], "d.raw");
        EXPECT_EQ(info["data"]["data-file-raw"], std::string(raw_opt) == "on");
        // qemu-img 7.2: a cluster mapped into a hole of the raw data file is
        // plain data (no recursion into the data file) ...
        if (std::string(raw_opt) == "on") {
            auto s = (*n)->block_status(1 << 20, 4096);
            ASSERT_TRUE(s);
            EXPECT_EQ(s->flags & (kStatusData | kStatusZero | kStatusRecurse), kStatusData);
        }
        // ... and "disk size" is the qcow2 file's alone.
        auto a = (*n)->allocated_size();
        ASSERT_TRUE(a);
        struct stat st {};
        ASSERT_EQ(stat("a.qcow2", &st), 0);
        EXPECT_EQ(*a, uint64_t(st.st_blocks) * 512);
        ASSERT_EQ(chdir(cwd.c_str()), 0);
    }
}

TEST(Qcow2Read, LargeSparse) {
    // > 2 TiB virtual, sparse: data past 2 TiB, found by status and read back.
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string out, img = d / "a.qcow2";
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + img + " 3T && qemu-io -c 'write -P 7 2T 64k' " + img, &out), 0) << out;
    BlockOpener op;
    auto n = open_image(op, img);
    ASSERT_TRUE(n) << n.error().message;
    EXPECT_EQ((*n)->length(), 3ull << 40);
    std::vector<uint8_t> b(128 * 1024);
    ASSERT_TRUE((*n)->read((2ull << 40) - 64 * 1024, b.data(), b.size()));
    EXPECT_EQ(b[0], 0);
    EXPECT_EQ(b[64 * 1024], 7);
    EXPECT_EQ(b.back(), 7);
    auto s = (*n)->block_status(2ull << 40, 1 << 20);
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->flags & kStatusData);
    EXPECT_EQ(s->bytes, 65536u);
}

TEST(Qcow2Read, SpecificInfo) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string out;
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on,refcount_bits=8,extended_l2=on " + (d / "a.qcow2") +
                     " 1M && qemu-img bitmap --add " + (d / "a.qcow2") + " b0", &out), 0) << out;
    BlockOpener op;
    auto n = open_image(op, d / "a.qcow2");
    ASSERT_TRUE(n) << n.error().message;
    EXPECT_EQ((*n)->specific_info().dump(),
              R"({"type":"qcow2","data":{"compat":"1.1","compression-type":"zlib","lazy-refcounts":true,)"
              R"("bitmaps":[{"flags":["auto"],"name":"b0","granularity":65536}],"refcount-bits":8,"corrupt":false,"extended-l2":true}})");
    EXPECT_EQ((*n)->cluster_size(), 65536u);
    EXPECT_FALSE((*n)->is_dirty());
}

TEST(Qcow2Read, BlockStatus) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string out, img = d / "a.qcow2";
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + img + " 1M && qemu-io -c 'write -P 1 0 128k' -c 'write -z 256k 64k' " + img, &out), 0);
    BlockOpener op;
    auto n = open_image(op, img);
    ASSERT_TRUE(n);
    auto s = (*n)->block_status(0, 1 << 20);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->bytes, 128u * 1024);
    EXPECT_EQ(s->flags & (kStatusData | kStatusOffsetValid), kStatusData | kStatusOffsetValid);
    EXPECT_EQ(s->host_offset, 0x50000u);
    auto z = (*n)->block_status(256 * 1024, 1 << 20);
    ASSERT_TRUE(z);
    EXPECT_TRUE(z->flags & kStatusZero);
    EXPECT_EQ(z->bytes, 64u * 1024);
    auto u = (*n)->block_status(128 * 1024, 128 * 1024);
    ASSERT_TRUE(u);
    EXPECT_EQ(u->flags & (kStatusData | kStatusZero), 0u);
}

}  // namespace
}  // namespace qimg::test
