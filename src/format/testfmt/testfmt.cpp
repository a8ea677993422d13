// testfmt: a read-only format that exists only to test the driver machinery
// and to show, in docs/adding-a-format.md, what adding a format takes. Built
// only with -DQIMG_TEST_FORMATS=ON (TEST_ONLY in this folder's CMakeLists.txt),
// into qimg_unit_tests and qimg_test; never into the shipped qimg.
//
// Layout (all little-endian):
//   0   8  magic "QIMGTFMT"
//   8   4  version (1)
//   12  4  header_size: where the payload starts; a multiple of 512, at
//          least 512 and at most 64 KiB
//   16  8  virtual_size: guest bytes; the payload holds them in order, and
//          a file shorter than header_size + virtual_size reads as zeroes
//          past its end (as a sparse raw file)
//
// Concurrency: the node is immutable after open; requests go straight to the
// protocol child, which is thread-safe.
#include <algorithm>
#include <array>
#include <cstring>

#include "block/driver.h"
#include "block/status.h"
#include "util/bytes.h"
#include "util/checked.h"

namespace qimg {
namespace {

constexpr std::array<uint8_t, 8> kMagic = {'Q', 'I', 'M', 'G', 'T', 'F', 'M', 'T'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMinHeader = 512, kMaxHeader = 64 * 1024;

// The header's fields, named once (util/bytes.h).
namespace hdr {
constexpr Le32 version{8};
constexpr Le32 header_size{12};
constexpr Le64 virtual_size{16};
constexpr size_t kSize = 24;
}  // namespace hdr

struct Header {
    uint32_t header_size = 0;
    uint64_t virtual_size = 0;
};

// Every field is checked before use: the version, the payload offset's
// bounds and alignment, and that offset + size cannot wrap.
Result<Header> parse_header(std::span<const uint8_t> b) {
    ByteReader r(b);
    if (!r.has(0, hdr::kSize) || std::memcmp(b.data(), kMagic.data(), kMagic.size()) != 0)
        return make_error(EINVAL, "Image not in testfmt format");
    Header h;
    uint32_t version = r.get(hdr::version);
    h.header_size = r.get(hdr::header_size);
    h.virtual_size = r.get(hdr::virtual_size);
    if (!r) return make_error(EINVAL, "Image not in testfmt format");
    if (version != kVersion) return make_error(ENOTSUP, "Unsupported testfmt version " + std::to_string(version));
    if (h.header_size < kMinHeader || h.header_size > kMaxHeader || h.header_size % 512 != 0)
        return make_error(EINVAL, "Invalid testfmt header size " + std::to_string(h.header_size));
    if (!checked_add<uint64_t>(h.header_size, h.virtual_size) || h.virtual_size > uint64_t(INT64_MAX))
        return make_error(EFBIG, "Image too large");
    return h;
}

class TestfmtNode final : public BlockNode {
public:
    TestfmtNode(NodePtr file, Header h) : h_(h) { file_ = std::move(file); }

    std::string_view driver_name() const override { return "testfmt"; }
    uint64_t length() const override { return h_.virtual_size; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (!range_fits(off, len, h_.virtual_size)) return make_error(EIO, "Request beyond the end of the image");
        // read_padded: the payload may end before the virtual size.
        return read_padded(*file_, h_.header_size + off, buf, len);
    }

    // The payload is in guest order: the file's holes are the image's zeroes,
    // and data maps one to one (as raw with an offset).
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        QIMG_ASSIGN(BlockStatus s, node_status(*file_, h_.header_size + off, len));
        if (s.bytes == 0) {  // past the end of the file: zeroes
            s.flags = kStatusZero;
            s.bytes = len;
            return s;
        }
        s.flags &= ~kStatusEof;
        if (!(s.flags & (kStatusData | kStatusZero))) return s;
        s.flags |= kStatusOffsetValid | kStatusAllocated;
        s.host_offset = h_.header_size + off;
        s.host_node = file_.get();
        return s;
    }

    nlohmann::ordered_json specific_info() const override {
        return {{"type", "testfmt"}, {"data", {{"header-size", h_.header_size}}}};
    }

private:
    Header h_;
};

int testfmt_probe(std::span<const uint8_t> head, const std::string &) {
    return head.size() >= kMagic.size() && std::memcmp(head.data(), kMagic.data(), kMagic.size()) == 0 ? 100 : 0;
}

Result<NodePtr> testfmt_open(OpenRequest &req) {
    std::array<uint8_t, hdr::kSize> b{};
    QIMG_TRY(read_padded(*req.file, 0, b.data(), b.size()));
    QIMG_ASSIGN(Header h, parse_header(b));
    return NodePtr(std::make_shared<TestfmtNode>(req.file, h));
}

const Driver *make_testfmt_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "testfmt";
        d.probe = testfmt_probe;
        d.open = testfmt_open;
        // Only ever read, as dmg, bochs and cloop: opening it for writing
        // fails with "Image is read-only".
        d.read_only = true;
        // No create, measure, backing, compression or check: every one of
        // those answers with qemu-img's "does not support" message.
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_testfmt_driver);

}  // namespace qimg
