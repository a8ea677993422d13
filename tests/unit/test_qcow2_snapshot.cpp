// qcow2 internal snapshots: malformed snapshot tables give QEMU's errors
// (never a crash), the table round-trips, and writes after a snapshot
// (partial clusters, shared L2 tables) keep the snapshot's content, checked
// by the real qemu-img when it is installed.
#include "qcow2_test_util.h"

#include "format/qcow2/qcow2.h"
#include "format/qcow2/snapshot.h"
#include "util/endian.h"

namespace qimg::test {
namespace {

using qcow2::Qcow2Node;
using qcow2::Snapshot;

// A qemu-made image with one snapshot "s" over 64 KiB of 0x01.
bool make_snap_image(const TempDir &d, const std::string &name = "a.qcow2") {
    return sh("qemu-img create -q -f qcow2 " + d / name + " 1M && qemu-io -c 'write -P 1 0 64k' " + d / name +
              " >/dev/null && qemu-img snapshot -c s " + d / name) == 0;
}

uint64_t table_offset(const std::vector<uint8_t> &img) { return be64(&img[64]); }

std::string open_error(const std::string &path) {
    BlockOpener op;
    auto n = open_image(op, path);
    return n ? std::string("<ok>") : n.error().message;
}

TEST(Qcow2Snapshot, TableRoundTrip) {
    std::vector<Snapshot> list(2);
    list[0].id = "1";
    list[0].name = "first";
    list[0].l1_table_offset = 0x30000;
    list[0].l1_size = 1;
    list[0].disk_size = 1 << 20;
    list[0].icount = 0;
    list[0].extra_data_size = 24;
    list[1].id = "2";
    list[1].name = "x";
    list[1].vm_state_size = 1ull << 33;  // needs the 64-bit field
    list[1].extra_data_size = 32;
    list[1].unknown_extra = {1, 2, 3, 4, 5, 6, 7, 8};
    auto raw = qcow2::serialize_snapshot_table(list);
    ASSERT_TRUE(raw);
    TempDir d;
    std::vector<uint8_t> file(0x20000, 0);
    std::copy(raw->begin(), raw->end(), file.begin() + 0x10000);
    write_file(d / "t", file);
    BlockOpener op;
    OpenOptions o;
    o.format = "raw";
    auto n = op.open_image(d / "t", o);
    ASSERT_TRUE(n);
    qcow2::Header h;
    h.nb_snapshots = 2;
    h.snapshots_offset = 0x10000;
    auto t = qcow2::read_snapshot_table(**n, h, 123);
    ASSERT_TRUE(t) << t.error().message;
    ASSERT_EQ(t->list.size(), 2u);
    EXPECT_EQ(t->size, raw->size());
    EXPECT_EQ(t->list[0].name, "first");
    EXPECT_EQ(t->list[0].disk_size, 1u << 20);
    EXPECT_EQ(t->list[1].vm_state_size, 1ull << 33);
    EXPECT_EQ(t->list[1].unknown_extra, list[1].unknown_extra);
    EXPECT_EQ(qcow2::new_snapshot_id(t->list), "3");
    EXPECT_EQ(qcow2::find_snapshot_by_id_or_name(t->list, "x"), 1);
    EXPECT_EQ(qcow2::find_snapshot_by_id_or_name(t->list, "1"), 0);
}

TEST(Qcow2Snapshot, MalformedTables) {
    if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
    TempDir d;
    ASSERT_TRUE(make_snap_image(d));
    const auto good = read_file(d / "a.qcow2");
    const uint64_t to = table_offset(good);
    auto with = [&](auto patch) {
        auto img = good;
        patch(img);
        write_file(d / "m.qcow2", img);
        return open_error(d / "m.qcow2");
    };
    EXPECT_EQ(with([](auto &) {}), "<ok>");
    EXPECT_EQ(with([](auto &v) { put_be32(&v[60], 65537); }), "Snapshot table too large");
    EXPECT_EQ(with([](auto &v) { put_be32(&v[60], 0xffffffffu); }), "Snapshot table too large");
    EXPECT_EQ(with([](auto &v) { put_be64(&v[64], 0x10008); }), "Snapshot table offset invalid");
    EXPECT_EQ(with([](auto &v) { put_be64(&v[64], 0x7ffffffffffff000ull); }), "Snapshot table offset invalid");
    // Past QEMU's request limit (BDRV_MAX_LENGTH): the read fails.
    EXPECT_EQ(with([](auto &v) { put_be64(&v[64], 0x7fffffffffff0000ull); }),
              "Failed to read snapshot table: Input/output error");
    EXPECT_EQ(with([&](auto &v) { put_be32(&v[to + 36], 1025); }),
              "Too much extra metadata in snapshot table entry 0\n"
              "You can force-remove this extra metadata with qemu-img check -r all");
    // Past the end of the file: zeroes, as QEMU reads them.
    EXPECT_EQ(with([](auto &v) { put_be64(&v[64], 1ull << 40); }), "<ok>");
    // 65536 entries of maximal size exceed the 64 MiB table limit.
    std::string big = with([&](auto &v) {
        put_be32(&v[60], 65536);
        put_be32(&v[to + 36], 1024);
        put_be16(&v[to + 12], 0xffff);
    });
    EXPECT_EQ(big.rfind("<ok>", 0), 0u) << big;  // one big entry, then zero entries: fits
    // 520 entries of 40+1024+65535+65535 bytes exceed 64 MiB (a sparse file).
    {
        auto v = good;
        put_be32(&v[60], 600);
        put_be64(&v[64], 0x100000);
        write_file(d / "m.qcow2", v);
        FILE *f = std::fopen((d / "m.qcow2").c_str(), "r+b");
        ASSERT_TRUE(f);
        uint64_t off = 0x100000;
        for (int i = 0; i < 600; i++) {
            uint8_t e[40] = {};
            put_be16(e + 12, 0xffff);
            put_be16(e + 14, 0xffff);
            put_be32(e + 36, 1024);
            std::fseek(f, long(off), SEEK_SET);
            std::fwrite(e, 1, sizeof e, f);
            off = (off + 40 + 1024 + 2 * 0xffff + 7) & ~7ull;
        }
        std::fclose(f);
        std::string e = open_error(d / "m.qcow2");
        EXPECT_EQ(e.rfind("Snapshot table is too big\nYou can force-remove all ", 0), 0u) << e;
    }
}

TEST(Qcow2Snapshot, BadSnapshotL1Tables) {
    if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
    TempDir d;
    ASSERT_TRUE(make_snap_image(d));
    auto img = read_file(d / "a.qcow2");
    const uint64_t to = table_offset(img);
    put_be32(&img[to + 8], 0x00ffffff);
    write_file(d / "m.qcow2", img);
    {
        BlockOpener op;
        auto n = open_image(op, d / "m.qcow2", true);
        ASSERT_TRUE(n) << n.error().message;
        auto r = (*n)->snapshot_goto("s");
        ASSERT_FALSE(r);
        // As QEMU: the reason is reported on stderr at once, the error
        // carries only its errno (iotest 080).
        EXPECT_EQ(r.error().message, "Failed to load snapshot: File too large");
        auto r2 = (*n)->snapshot_delete("1", "s");
        ASSERT_FALSE(r2);
        EXPECT_EQ(r2.error().message, "Snapshot L1 table too large");
    }
    put_be32(&img[to + 8], 1);
    put_be64(&img[to], 0x30200);
    write_file(d / "m.qcow2", img);
    {
        BlockOpener op;
        auto n = open_image(op, d / "m.qcow2");
        ASSERT_TRUE(n);
        std::string id = "1";
        auto r = (*n)->snapshot_load_tmp(&id, nullptr);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().message, "Snapshot L1 table offset invalid");
    }
}

// Partial-cluster writes into clusters and L2 tables shared with a
// snapshot: the active image changes, the snapshot does not, and qemu-img
// check finds no errors and no leaks.
TEST(Qcow2Snapshot, WritesAfterSnapshotCopyOnWrite) {
    if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
    TempDir d;
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + d / "a.qcow2" + " 4M && qemu-io -c 'write -P 0x11 0 4M' " +
                 d / "a.qcow2" + " >/dev/null"),
              0);
    {
        BlockOpener op;
        auto n = open_image(op, d / "a.qcow2", true);
        ASSERT_TRUE(n) << n.error().message;
        SnapshotInfo sn;
        sn.name = "s";
        sn.icount = 0;
        ASSERT_TRUE((*n)->snapshot_create(sn));
        std::vector<uint8_t> p(1000, 0x22);
        ASSERT_TRUE((*n)->write(100, p.data(), p.size()));
        ASSERT_TRUE((*n)->write((3 << 20) + 65000, p.data(), p.size()));  // spans two clusters
        ASSERT_TRUE((*n)->write_zeroes(1 << 20, 64 << 10, 0));
        ASSERT_TRUE((*n)->discard(2 << 20, 128 << 10));
        ASSERT_TRUE((*n)->flush());
    }
    std::string out;
    EXPECT_EQ(sh("qemu-img check " + d / "a.qcow2", &out), 0) << out;
    EXPECT_EQ(sh("qemu-io -c 'read -P 0x11 0 100' -c 'read -P 0x22 100 1000' -c 'read -P 0x11 1100 64k' "
                 "-c 'read -P 0 1M 64k' -c 'read -P 0x22 3210728 1000' " +
                     d / "a.qcow2",
                 &out),
              0)
        << out;
    EXPECT_EQ(out.find("Pattern verification failed"), std::string::npos) << out;
    EXPECT_EQ(sh("qemu-img convert -l s -O raw " + d / "a.qcow2" + " " + d / "s.raw" +
                     " && qemu-io -f raw -c 'read -P 0x11 0 4M' " + d / "s.raw",
                 &out),
              0);
    EXPECT_EQ(out.find("Pattern verification failed"), std::string::npos) << out;
    // Back to the snapshot, then delete it: no leaks either way.
    {
        BlockOpener op;
        auto n = open_image(op, d / "a.qcow2", true);
        ASSERT_TRUE(n);
        ASSERT_TRUE((*n)->snapshot_goto("s"));
        auto v = read_all(**n);
        EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0x11; }));
        ASSERT_TRUE((*n)->snapshot_delete("1", "s"));
    }
    EXPECT_EQ(sh("qemu-img check " + d / "a.qcow2", &out), 0) << out;
    EXPECT_EQ(sh("qemu-io -c 'write -P 0x33 0 4M' " + d / "a.qcow2" + " >/dev/null && qemu-img check " +
                     d / "a.qcow2",
                 &out),
              0)
        << out;
}

}  // namespace
}  // namespace qimg::test
