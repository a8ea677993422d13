// The qcow2 refcount width rewrite (amend -o refcount_bits) and amend's
// version changes through the block layer: every width round trip keeps
// refcounts and guest data (checked by the real qemu-img), refcounts that
// do not fit are refused, and damaged refcount tables fail cleanly.
#include "qcow2_test_util.h"

#include "format/qcow2/qcow2.h"
#include "util/endian.h"

namespace qimg::test {
namespace {

Result<void> amend(const std::string &file, std::map<std::string, std::string> o) {
    BlockOpener op;
    QIMG_ASSIGN(NodePtr n, open_image(op, file, true));
    return n->amend(o, false, {});
}

TEST(Qcow2Amend, RefcountWidthRoundTrips) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    const std::string img = d / "a.qcow2";
    std::string out;
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o cluster_size=4k " + img + " 64M && qemu-io -c 'write -P 0x5a 0 3M' -c "
                 "'write -c -P 0x11 8M 64k' " + img + " >/dev/null && qemu-img snapshot -c s " + img,
                 &out),
              0)
        << out;
    for (const char *bits : {"8", "32", "64", "16", "8", "64"}) {
        auto r = amend(img, {{"refcount_bits", bits}});
        ASSERT_TRUE(r) << bits << ": " << r.error().message;
        ASSERT_EQ(sh("qemu-img check " + img, &out), 0) << bits << ": " << out;
        ASSERT_EQ(sh("qemu-io -c 'read -P 0x5a 0 3M' -c 'read -P 0x11 8M 64k' " + img + " | grep -c Pattern", &out), 1)
            << out;
        ASSERT_EQ(sh("qemu-img info " + img + " | grep 'refcount bits'", &out), 0);
        EXPECT_EQ(out, std::string("    refcount bits: ") + bits + "\n");
    }
}

TEST(Qcow2Amend, OneBitRefcountsRoundTrip) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    const std::string img = d / "a.qcow2";
    std::string out;
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o cluster_size=512 " + img + " 8M && qemu-io -c 'write -P 0x5a 0 1M' " +
                 img + " >/dev/null", &out), 0) << out;
    for (const char *bits : {"1", "64", "16"}) {
        auto r = amend(img, {{"refcount_bits", bits}});
        ASSERT_TRUE(r) << bits << ": " << r.error().message;
        ASSERT_EQ(sh("qemu-img check " + img, &out), 0) << bits << ": " << out;
        ASSERT_EQ(sh("qemu-io -c 'read -P 0x5a 0 1M' " + img + " | grep -c Pattern", &out), 1) << out;
    }
}

TEST(Qcow2Amend, RefcountTooLargeForWidth) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    const std::string img = d / "a.qcow2";
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + img + " 1M && qemu-io -c 'write 0 64k' " + img +
                 " >/dev/null && qemu-img snapshot -c a " + img + " && qemu-img snapshot -c b " + img),
              0);
    auto r = amend(img, {{"refcount_bits", "1"}});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x"),
              std::string::npos)
        << r.error().message;
    std::string out;
    EXPECT_EQ(sh("qemu-img check " + img, &out), 0) << out;  // left as it was (at worst leaks)
    EXPECT_TRUE(amend(img, {{"refcount_bits", "2"}}));
    EXPECT_EQ(sh("qemu-img check " + img, &out), 0) << out;
}

TEST(Qcow2Amend, UnalignedRefblockIsAnError) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    const std::string img = d / "a.qcow2";
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + img + " 1M"), 0);
    auto f = read_file(img);
    const uint64_t rt = be64(&f[48]);
    // A second refcount table entry that points into the middle of a cluster.
    put_be64(&f[rt + 8], 0x30200);
    write_file(img, f);
    auto r = amend(img, {{"refcount_bits", "8"}});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Image is corrupt (unaligned refblock offset)");
}

TEST(Qcow2Amend, DowngradeExpandsZeroClustersUnderBacking) {
    if (!have_qemu()) GTEST_SKIP();
    TempDir d;
    const std::string base = d / "b.qcow2", img = d / "a.qcow2";
    std::string out;
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + base + " 1M && qemu-io -c 'write -P 0x77 0 1M' " + base +
                 " >/dev/null && qemu-img create -q -f qcow2 -b " + base + " -F qcow2 " + img +
                 " 1M && qemu-io -c 'write -z 0 256k' " + img + " >/dev/null",
                 &out),
              0)
        << out;
    ASSERT_TRUE(amend(img, {{"compat", "0.10"}}));
    EXPECT_EQ(sh("qemu-img check " + img, &out), 0) << out;
    EXPECT_EQ(sh("qemu-io -c 'read -P 0 0 256k' -c 'read -P 0x77 256k 768k' " + img + " | grep -c Pattern", &out), 1)
        << out;
    EXPECT_EQ(sh("qemu-img info " + img + " | grep -q 'compat: 0.10'"), 0);
}

}  // namespace
}  // namespace qimg::test
