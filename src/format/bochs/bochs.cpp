// The bochs format: the "growing" redolog images of the Bochs emulator
// (bximage), read-only as QEMU reads them. Layout (little-endian):
//
//   0    32  magic "Bochs Virtual HD Image", NUL-terminated
//   32   16  type "Redolog", NUL-terminated
//   48   16  subtype "Growing", NUL-terminated
//   64    4  version: 0x00020000, or 0x00010000 for the older header
//   68    4  header: where the catalog starts (normally 512)
//   72    4  catalog: entries in the catalog
//   76    4  bitmap: bytes of each extent's sector bitmap
//   80    4  extent: bytes of guest data per extent (a power of two)
//   84    8  (version 1) disk size in bytes
//   88    8  (version 2) disk size in bytes (84..87 reserved)
//
// The catalog maps guest extent i to a slot (0xffffffff: not allocated);
// slots follow the catalog, each a bitmap of whole 512-byte blocks then the
// extent's data. A sector whose bitmap bit is clear reads as zeroes.
//
// QEMU's checks are kept (and its messages): a catalog of at most 2^20
// entries, an extent of 512 bytes .. 8 MiB and a power of two, a catalog
// large enough for the disk. Whatever lies past the end of the file
// (the catalog, a bitmap, a slot) reads as zeroes, as through QEMU's file
// driver. Like QEMU, bochs reports no allocation of its own: every byte is
// data without a host offset.
//
// Concurrency: the node is immutable after open; reads go straight to the
// protocol child, which is thread-safe.
#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <vector>

#include "block/driver.h"
#include "block/status.h"
#include "util/bytes.h"
#include "util/checked.h"

namespace qimg {
namespace {

constexpr uint32_t kVersion2 = 0x00020000, kVersion1 = 0x00010000;
constexpr uint32_t kNotAllocated = 0xffffffff;
constexpr uint32_t kMaxCatalog = 0x100000;      // QEMU's bound (bximage's largest, ~8 TB)
constexpr uint32_t kMaxExtent = 0x800000;       // 8 MiB
constexpr uint64_t kSector = 512;

namespace hdr {
constexpr size_t kSize = 512;
constexpr Le32 version{64};
constexpr Le32 header{68};
constexpr Le32 catalog{72};
constexpr Le32 bitmap{76};
constexpr Le32 extent{80};
constexpr Le64 disk_v1{84};
constexpr Le64 disk_v2{88};
}  // namespace hdr

// A NUL-terminated string field equal to `want`, as C's strcmp sees it.
bool field_is(std::span<const uint8_t> b, size_t off, size_t size, std::string_view want) {
    return want.size() < size && off + size <= b.size() && std::memcmp(b.data() + off, want.data(), want.size()) == 0 &&
           b[off + want.size()] == 0;
}

bool is_bochs(std::span<const uint8_t> b, uint32_t &version) {
    if (b.size() < hdr::kSize) return false;
    if (!field_is(b, 0, 32, "Bochs Virtual HD Image") || !field_is(b, 32, 16, "Redolog") ||
        !field_is(b, 48, 16, "Growing"))
        return false;
    ByteReader r(b);
    version = r.get(hdr::version);
    return version == kVersion2 || version == kVersion1;
}

struct Layout {
    uint64_t size = 0;            // guest bytes: whole sectors
    uint64_t data_offset = 0;     // the first slot
    uint64_t slot_bytes = 0;      // bitmap blocks + extent blocks, in bytes
    uint64_t bitmap_bytes = 0;    // the bitmap's whole 512-byte blocks
    uint32_t extent = 0;
    std::vector<uint32_t> catalog;
};

class BochsNode final : public BlockNode {
public:
    BochsNode(NodePtr file, Layout l) : l_(std::move(l)) { file_ = std::move(file); }

    std::string_view driver_name() const override { return "bochs"; }
    uint64_t length() const override { return l_.size; }
    // QEMU's bochs has no bdrv_get_info: info shows no dirty flag.
    bool has_driver_info() const override { return false; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (!range_fits(off, len, l_.size)) return make_error(EIO, "Request beyond the end of the image");
        auto *out = static_cast<uint8_t *>(buf);
        while (len > 0) {
            uint64_t index = off / l_.extent, in_extent = off % l_.extent;
            size_t n = static_cast<size_t>(std::min<uint64_t>(len, l_.extent - in_extent));
            QIMG_TRY(read_in_extent(l_.catalog[index], in_extent, out, n));
            off += n;
            out += n;
            len -= n;
        }
        return ok();
    }

    // No allocation information of its own (QEMU's bochs has no
    // block-status): all data, mapped nowhere that could be shown.
    Result<BlockStatus> block_status(uint64_t, uint64_t len) override { return unmapped_data_status(len); }

private:
    // [in_extent, in_extent+n) of the extent in `slot`: the sectors whose
    // bitmap bit is set come from the slot, the rest are zeroes. Runs of
    // set bits are read in one request each.
    Result<void> read_in_extent(uint32_t slot, uint64_t in_extent, uint8_t *out, size_t n) {
        if (slot == kNotAllocated) {
            std::memset(out, 0, n);
            return ok();
        }
        // A slot far enough out wraps 64 bits (up to 2^32 slots of up to
        // 2^32 + 2^23 bytes): no file holds it.
        auto rel = checked_mul<uint64_t>(slot, l_.slot_bytes);
        auto at = rel ? checked_add<uint64_t>(l_.data_offset, *rel) : std::nullopt;
        if (!at || *at > uint64_t(INT64_MAX) - l_.slot_bytes) return make_error(EIO, "Input/output error");
        uint64_t bitmap_off = *at;
        uint64_t first = in_extent / kSector, last = (in_extent + n - 1) / kSector;
        std::vector<uint8_t> bits(static_cast<size_t>(last / 8 - first / 8 + 1));
        QIMG_TRY(read_padded(*file_, bitmap_off + first / 8, bits.data(), bits.size()));
        auto set = [&](uint64_t sector) { return (bits[sector / 8 - first / 8] >> (sector % 8)) & 1; };
        uint64_t data_off = bitmap_off + l_.bitmap_bytes;
        uint64_t pos = in_extent, end = in_extent + n;
        while (pos < end) {
            uint64_t sector = pos / kSector;
            bool data = set(sector);
            uint64_t run_end = std::min(end, (sector + 1) * kSector);
            while (run_end < end && set(run_end / kSector) == data) run_end = std::min(end, run_end + kSector);
            size_t k = static_cast<size_t>(run_end - pos);
            uint8_t *dst = out + (pos - in_extent);
            if (data) {
                QIMG_TRY(read_padded(*file_, data_off + pos, dst, k));
            } else {
                std::memset(dst, 0, k);
            }
            pos = run_end;
        }
        return ok();
    }

    Layout l_;
};

int bochs_probe(std::span<const uint8_t> head, const std::string &) {
    uint32_t version = 0;
    return is_bochs(head, version) ? 100 : 0;
}

Result<NodePtr> bochs_open(OpenRequest &req) {
    std::array<uint8_t, hdr::kSize> b{};
    QIMG_TRY(read_padded(*req.file, 0, b.data(), b.size()));
    uint32_t version = 0;
    if (!is_bochs(b, version)) return make_error(EINVAL, "Image not in Bochs format");
    ByteReader r(b);
    Layout l;
    uint64_t disk = version == kVersion1 ? r.get(hdr::disk_v1) : r.get(hdr::disk_v2);
    l.size = disk / kSector * kSector;
    uint32_t entries = r.get(hdr::catalog);
    if (entries > kMaxCatalog) return make_error(EFBIG, "Catalog size is too large");
    uint32_t header = r.get(hdr::header);
    l.catalog.resize(entries);
    if (entries) {
        std::vector<uint8_t> raw(size_t{entries} * 4);
        QIMG_TRY(read_padded(*req.file, header, raw.data(), raw.size()));
        ByteReader cr(raw);
        for (uint32_t i = 0; i < entries; ++i) l.catalog[i] = cr.le32(size_t{i} * 4);
    }
    l.data_offset = uint64_t{header} + uint64_t{entries} * 4;
    // Whole 512-byte blocks, in QEMU's 32-bit arithmetic (a zero bitmap size
    // wraps to 2^23 blocks, as there).
    uint32_t bitmap = r.get(hdr::bitmap);
    uint32_t bitmap_blocks = 1 + (bitmap - 1) / 512;
    l.extent = r.get(hdr::extent);
    if (l.extent < kSector) return make_error(EINVAL, "Extent size must be at least 512");
    if (!std::has_single_bit(l.extent))
        return make_error(EINVAL, "Extent size " + std::to_string(l.extent) + " is not a power of two");
    if (l.extent > kMaxExtent) return make_error(EINVAL, "Extent size " + std::to_string(l.extent) + " is too large");
    if (entries < div_round_up<uint64_t>(l.size / kSector, l.extent / kSector))
        return make_error(EINVAL, "Catalog size is too small for this disk size");
    l.bitmap_bytes = uint64_t{bitmap_blocks} * kSector;
    l.slot_bytes = l.bitmap_bytes + l.extent;
    return NodePtr(std::make_shared<BochsNode>(req.file, std::move(l)));
}

const Driver *make_bochs_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "bochs";
        d.probe = bochs_probe;
        d.open = bochs_open;
        d.read_only = true;  // opening for writing: "Image is read-only", as QEMU
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_bochs_driver);

}  // namespace qimg
