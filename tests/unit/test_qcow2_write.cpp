// qimg_writes_qemu_reads: images created and written by the qcow2 driver
// must be byte-identical to qemu-img's fresh images, pass the real
// `qemu-img check` without errors or leaks, and hold the expected data
// (`qemu-img compare` against a raw mirror written alongside).
#include "qcow2_test_util.h"

#include <filesystem>
#include <random>

#include "format/qcow2/qcow2.h"

namespace qimg::test {
namespace {

Result<void> create(const std::string &file, uint64_t size, std::map<std::string, std::string> opts) {
    const Driver *d = find_driver("qcow2");
    if (!d) return make_error("no qcow2 driver");
    BlockOpener op;
    CreateRequest req;
    req.filename = file;
    req.size = size;
    req.options = std::move(opts);
    req.opener = &op;
    return d->create(req);
}

std::string opts_string(const std::map<std::string, std::string> &o) {
    std::string s;
    for (auto &[k, v] : o) s += (s.empty() ? "" : ",") + k + "=" + v;
    return s;
}

void expect_identical_create(const std::map<std::string, std::string> &o, const std::string &size_str, uint64_t size) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string out;
    std::string opt = opts_string(o);
    ASSERT_EQ(sh("cd " + d.path + " && qemu-img create -q -f qcow2 " + (opt.empty() ? "" : "-o " + opt) + " ref.qcow2 " + size_str, &out), 0) << out;
    std::string cwd = std::filesystem::current_path().string();
    ASSERT_EQ(chdir(d.path.c_str()), 0);
    auto r = create("our.qcow2", size, o);
    ASSERT_EQ(chdir(cwd.c_str()), 0);
    ASSERT_TRUE(r) << r.error().message;
    auto a = read_file(d / "ref.qcow2"), b = read_file(d / "our.qcow2");
    EXPECT_EQ(a.size(), b.size()) << opt;
    size_t first = 0;
    while (first < std::min(a.size(), b.size()) && a[first] == b[first]) first++;
    EXPECT_TRUE(a == b) << "images differ for -o " << opt << " at byte " << first;
}

TEST(Qcow2Create, IdenticalToQemu) {
    expect_identical_create({}, "1G", 1ull << 30);
    expect_identical_create({}, "0", 0);
    expect_identical_create({}, "1000", 1000);
    expect_identical_create({{"cluster_size", "512"}}, "100M", 100ull << 20);
    expect_identical_create({{"cluster_size", "4k"}}, "5G", 5ull << 30);
    expect_identical_create({{"cluster_size", "2M"}}, "5T", 5ull << 40);
    expect_identical_create({{"compat", "0.10"}}, "1G", 1ull << 30);
    expect_identical_create({{"lazy_refcounts", "on"}}, "1G", 1ull << 30);
    expect_identical_create({{"refcount_bits", "1"}}, "1G", 1ull << 30);
    expect_identical_create({{"refcount_bits", "64"}}, "1G", 1ull << 30);
    expect_identical_create({{"extended_l2", "on"}}, "1G", 1ull << 30);
    expect_identical_create({{"compression_type", "zstd"}}, "1G", 1ull << 30);
    expect_identical_create({{"data_file", "d.raw"}}, "64M", 64ull << 20);
    expect_identical_create({{"preallocation", "metadata"}}, "64M", 64ull << 20);
    expect_identical_create({{"data_file", "d.raw"}, {"data_file_raw", "on"}}, "3M", 3ull << 20);
}

// Preallocated layouts that are not yet byte-identical with QEMU's (QEMU
// moves the refcount table behind the header for falloc/full and places
// refcount blocks differently for multi-block metadata preallocation):
// the images must still be consistent and read as zeroes.
TEST(Qcow2Create, PreallocConsistent) {
    if (!have_qemu()) GTEST_SKIP();
    for (auto o : std::vector<std::map<std::string, std::string>>{
             {{"preallocation", "metadata"}, {"cluster_size", "4k"}},
             {{"preallocation", "full"}},
             {{"preallocation", "falloc"}},
             {{"preallocation", "full"}, {"extended_l2", "on"}}}) {
        TempDir d;
        std::string img = d / "p.qcow2", out;
        auto r = create(img, 20 << 20, o);
        ASSERT_TRUE(r) << r.error().message;
        EXPECT_EQ(sh("qemu-img check " + img, &out), 0) << opts_string(o) << out;
        EXPECT_EQ(sh("qemu-io -c 'read -P 0 0 20M' " + img + " | grep -c verification", &out), 1) << out;
    }
}

TEST(Qcow2Create, BackingFile) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string out;
    ASSERT_EQ(sh("cd " + d.path + " && qemu-img create -q -f raw b.raw 1M && qemu-img create -q -f qcow2 -b b.raw -F raw ref.qcow2 1M", &out), 0) << out;
    std::string cwd = std::filesystem::current_path().string();
    ASSERT_EQ(chdir(d.path.c_str()), 0);
    auto r = create("our.qcow2", 1 << 20, {{"backing_file", "b.raw"}, {"backing_fmt", "raw"}});
    ASSERT_EQ(chdir(cwd.c_str()), 0);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_TRUE(read_file(d / "ref.qcow2") == read_file(d / "our.qcow2"));
}

TEST(Qcow2Create, Errors) {
    TempDir d;
    auto err = [&](std::map<std::string, std::string> o) {
        auto r = create(d / "e.qcow2", 1 << 20, o);
        EXPECT_EQ(access((d / "e.qcow2").c_str(), F_OK), -1);  // removed again, as QEMU does
        return r ? std::string("<ok>") : r.error().message;
    };
    EXPECT_EQ(err({{"compat", "0.11"}}), "Parameter 'version' does not accept value '0.11'");
    EXPECT_EQ(err({{"cluster_size", "1000"}}), "Cluster size must be a power of two between 512 and 2048k");
    EXPECT_EQ(err({{"refcount_bits", "3"}}), "Refcount width must be a power of two and may not exceed 64 bits");
    EXPECT_EQ(err({{"compat", "0.10"}, {"refcount_bits", "8"}}),
              "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)");
    EXPECT_EQ(err({{"extended_l2", "on"}, {"cluster_size", "4k"}}),
              "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
    EXPECT_EQ(err({{"backing_fmt", "raw"}}), "Backing format cannot be used without backing file");
    EXPECT_EQ(err({{"data_file_raw", "on"}}), "data-file-raw requires data-file");
    EXPECT_EQ(err({{"compression_type", "lz4"}}), "Parameter 'compression-type' does not accept value 'lz4'");
    EXPECT_EQ(err({{"preallocation", "foo"}}), "Parameter 'preallocation' does not accept value 'foo'");
    EXPECT_EQ(err({{"encryption", "on"}}), "Parameter 'encrypt.key-secret' is required for cipher");
}

// Random writes/zeroes/discards on the driver and a raw mirror; then the real
// tools check the image and compare the content.
void random_io(const std::map<std::string, std::string> &o, uint64_t size, int ops, bool with_backing = false,
               bool compressed = false) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string out;
    std::vector<uint8_t> mirror(size, 0);
    auto opts = o;
    if (with_backing) {
        ASSERT_EQ(sh("cd " + d.path + " && qemu-img create -q -f raw base.raw " + std::to_string(size / 2) +
                         " && qemu-io -f raw -c 'write -P 0x99 0 " + std::to_string(size / 2) + "' base.raw", &out), 0) << out;
        std::fill(mirror.begin(), mirror.begin() + size / 2, 0x99);
        opts["backing_file"] = "base.raw";
        opts["backing_fmt"] = "raw";
    }
    std::string cwd = std::filesystem::current_path().string();
    ASSERT_EQ(chdir(d.path.c_str()), 0);
    {
        auto r = create("w.qcow2", size, opts);
        ASSERT_TRUE(r) << r.error().message;
        BlockOpener op;
        auto n = open_image(op, "w.qcow2", true);
        ASSERT_TRUE(n) << n.error().message;
        auto *q = dynamic_cast<qcow2::Qcow2Node *>(n->get());
        ASSERT_TRUE(q);
        const uint64_t cs = q->cluster_size();
        std::mt19937_64 rng(42);
        for (int i = 0; i < ops; i++) {
            uint64_t off = rng() % size, len = std::min<uint64_t>(size - off, 1 + rng() % (3 * cs));
            int kind = int(rng() % 10);
            if (compressed && kind < 4) {
                off = off / cs * cs;
                len = std::min<uint64_t>(cs, size - off);
                std::vector<uint8_t> b(len);
                for (size_t k = 0; k < len; k++) b[k] = uint8_t((k / 100) * 7 + i);
                auto r2 = q->write_compressed(off, b.data(), len);
                ASSERT_TRUE(r2) << r2.error().message;
                std::copy(b.begin(), b.end(), mirror.begin() + off);
            } else if (kind < 7) {
                std::vector<uint8_t> b(len, uint8_t(i + 1));
                auto r2 = q->write(off, b.data(), len);
                ASSERT_TRUE(r2) << r2.error().message;
                std::copy(b.begin(), b.end(), mirror.begin() + off);
            } else if (kind < 9) {
                auto r2 = q->write_zeroes(off, len, kind == 8 ? unsigned{kZeroMayUnmap} : 0u);
                ASSERT_TRUE(r2) << r2.error().message;
                std::fill(mirror.begin() + off, mirror.begin() + off + len, 0);
            } else {
                // Discard: content is unspecified afterwards; rewrite it to keep the mirror exact.
                ASSERT_TRUE(q->discard(off, len));
                std::vector<uint8_t> b(len, 0x42);
                ASSERT_TRUE(q->write(off, b.data(), len));
                std::copy(b.begin(), b.end(), mirror.begin() + off);
            }
            if (i % 50 == 0) {
                std::vector<uint8_t> b(len);
                ASSERT_TRUE(q->read(off, b.data(), len));
                ASSERT_TRUE(std::equal(b.begin(), b.end(), mirror.begin() + off)) << "op " << i;
            }
        }
        ASSERT_TRUE(q->flush());
        auto all = read_all(*q);
        ASSERT_TRUE(all == mirror);
    }
    write_file("mirror.raw", mirror);
    EXPECT_EQ(sh("qemu-img check w.qcow2", &out), 0) << opts_string(opts) << "\n" << out;
    EXPECT_EQ(sh("qemu-img compare -f qcow2 -F raw w.qcow2 mirror.raw", &out), 0) << opts_string(opts) << "\n" << out;
    ASSERT_EQ(chdir(cwd.c_str()), 0);
}

TEST(Qcow2Write, Default) { random_io({}, 8 << 20, 300); }
TEST(Qcow2Write, SmallClusters) { random_io({{"cluster_size", "512"}}, 12 << 20, 400); }
TEST(Qcow2Write, SmallClustersRefcountGrowth) { random_io({{"cluster_size", "512"}, {"refcount_bits", "64"}}, 24 << 20, 300); }
TEST(Qcow2Write, RefcountBits1) { random_io({{"cluster_size", "4k"}, {"refcount_bits", "1"}}, 4 << 20, 300); }
TEST(Qcow2Write, Version2) { random_io({{"compat", "0.10"}}, 4 << 20, 200); }
TEST(Qcow2Write, ExtendedL2) { random_io({{"extended_l2", "on"}}, 8 << 20, 300); }
TEST(Qcow2Write, ExtendedL2Backing) { random_io({{"extended_l2", "on"}}, 8 << 20, 300, true); }
TEST(Qcow2Write, Backing) { random_io({{"cluster_size", "4k"}}, 4 << 20, 300, true); }
TEST(Qcow2Write, LazyRefcounts) { random_io({{"lazy_refcounts", "on"}}, 4 << 20, 200); }
TEST(Qcow2Write, DataFile) { random_io({{"data_file", "d.raw"}}, 4 << 20, 200); }
TEST(Qcow2Write, DataFileRaw) { random_io({{"data_file", "d.raw"}, {"data_file_raw", "on"}}, 4 << 20, 200); }
TEST(Qcow2Write, Compressed) { random_io({{"cluster_size", "4k"}}, 4 << 20, 300, false, true); }
TEST(Qcow2Write, CompressedZstd) { random_io({{"compression_type", "zstd"}}, 8 << 20, 200, false, true); }
TEST(Qcow2Write, PreallocMetadata) { random_io({{"preallocation", "metadata"}}, 4 << 20, 100); }

TEST(Qcow2Write, TruncateGrowsL1) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    std::string img = d / "t.qcow2", out;
    ASSERT_TRUE(create(img, 1 << 20, {{"cluster_size", "4k"}}));
    {
        BlockOpener op;
        auto n = open_image(op, img, true);
        ASSERT_TRUE(n);
        ASSERT_TRUE((*n)->truncate(1ull << 40, Prealloc::Off, false));
        std::vector<uint8_t> b(4096, 0x77);
        ASSERT_TRUE((*n)->write((1ull << 40) - 4096, b.data(), b.size()));
    }
    EXPECT_EQ(sh("qemu-img check " + img, &out), 0) << out;
    EXPECT_EQ(sh("qemu-io -c 'read -P 0x77 1099511623680 4096' " + img, &out), 0) << out;
    EXPECT_EQ(out.find("Pattern verification failed"), std::string::npos) << out;
}

}  // namespace
}  // namespace qimg::test
