// qcow2 backing-chain maintenance: write_header_safely() must leave a header
// that parses as the old or the new one whatever subset of the sectors
// written since the last flush reached the disk (a torn multi-sector write).
#include <gtest/gtest.h>

#include <cstring>

#include "format/qcow2/header.h"
#include "lib/mem_node.h"

namespace qimg::qcow2 {
namespace {

// The shared in-memory file (tests/lib/mem_node.h), recording its writes
// grouped by flushes.
class RecordingFile final : public test::MemNode {
public:
    explicit RecordingFile(std::vector<uint8_t> d) : test::MemNode(std::move(d)) { epochs.emplace_back(); }
    std::string_view driver_name() const override { return "file"; }
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(test::MemNode::write(off, buf, len));
        epochs.back().push_back({off, std::vector<uint8_t>(static_cast<const uint8_t *>(buf),
                                                           static_cast<const uint8_t *>(buf) + len)});
        return ok();
    }
    Result<void> flush() override {
        epochs.emplace_back();
        return test::MemNode::flush();
    }
    struct Write {
        uint64_t off;
        std::vector<uint8_t> bytes;
    };
    std::vector<std::vector<Write>> epochs;
};

Header base_header(const std::string &backing, const std::string &fmt) {
    Header h;
    h.cluster_bits = 16;
    h.size = 1 << 20;
    h.l1_size = 1;
    h.l1_table_offset = 3 << 16;
    h.refcount_table_offset = 1 << 16;
    h.refcount_table_clusters = 1;
    h.backing_file = backing;
    h.backing_format = fmt;
    return h;
}

// Every state a power cut could leave: for each epoch, any subset of the
// 512-byte sectors written in it, over the state at the flush before.
void expect_torn_states_readable(std::vector<uint8_t> before, const RecordingFile &f, const std::string &old_name,
                                 const std::string &new_name) {
    for (const auto &epoch : f.epochs) {
        std::vector<uint64_t> sectors;
        std::vector<uint8_t> after = before;
        for (const auto &w : epoch) {
            std::memcpy(after.data() + w.off, w.bytes.data(), w.bytes.size());
            for (uint64_t s = w.off / 512; s * 512 < w.off + w.bytes.size(); s++)
                if (std::find(sectors.begin(), sectors.end(), s) == sectors.end()) sectors.push_back(s);
        }
        ASSERT_LE(sectors.size(), 12u);
        for (uint32_t mask = 0; mask < (1u << sectors.size()); mask++) {
            std::vector<uint8_t> mix = before;
            for (size_t i = 0; i < sectors.size(); i++)
                if (mask & (1u << i)) std::memcpy(&mix[sectors[i] * 512], &after[sectors[i] * 512], 512);
            RecordingFile m(mix);
            auto h = read_header(m, false);
            ASSERT_TRUE(h) << h.error().message;
            EXPECT_TRUE(h->backing_file == old_name || h->backing_file == new_name) << "got '" << h->backing_file << "'";
        }
        before = after;
    }
}

void check_change(const std::string &old_name, const std::string &old_fmt, const std::string &new_name,
                  const std::string &new_fmt, bool torn_safe = true) {
    Header h = base_header(old_name, old_fmt);
    auto first = serialize_header(h);
    ASSERT_TRUE(first);
    RecordingFile f(*first);
    f.data_.resize(4 << 16);
    std::vector<uint8_t> before = f.data_;
    h.backing_file = new_name;
    h.backing_format = new_fmt;
    ASSERT_TRUE(write_header_safely(f, h));
    auto got = read_header(f, false);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->backing_file, new_name);
    if (!new_name.empty()) {
        EXPECT_EQ(got->backing_format, new_fmt);
    }
    // The final layout is QEMU's, byte for byte.
    Header want = base_header(new_name, new_fmt);
    auto expect = serialize_header(want);
    ASSERT_TRUE(expect);
    EXPECT_TRUE(std::equal(expect->begin(), expect->end(), f.data_.begin()));
    if (torn_safe) expect_torn_states_readable(before, f, old_name, new_name);
}

TEST(Qcow2HeaderUpdate, RenameAndFormatChange) { check_change("base.raw", "raw", "other-name.qcow2", "qcow2"); }
TEST(Qcow2HeaderUpdate, SameFormatLongerName) {
    check_change("b", "qcow2", std::string(600, 'x') + ".qcow2", "qcow2");
}
TEST(Qcow2HeaderUpdate, DropBackingFile) { check_change("base.qcow2", "qcow2", "", ""); }
TEST(Qcow2HeaderUpdate, AddBackingFile) { check_change("", "", "new-base.qcow2", "qcow2"); }
// Known limit: a format name of 9-15 characters grows the backing format
// extension, which shifts the extensions that straddle sectors 0 and 1;
// no order of sector writes avoids a torn mix, so this is one write as in
// QEMU (safe against a process kill, not against a torn sector).
TEST(Qcow2HeaderUpdate, LongFormatName) { check_change("a.img", "raw", "b.img", "parallels", false); }

}  // namespace
}  // namespace qimg::qcow2
