// VHDX headers, region table and metadata: parsing and the checks QEMU's
// vhdx driver makes, in its order, so that the same image fails with the
// same errno (format.h).
#include "format/vhdx/format.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "util/checked.h"
#include "util/crc32c.h"
#include "util/uuid.h"

namespace qimg::vhdx {

Result<Guid> random_guid() {
    QIMG_ASSIGN(Uuid u, Uuid::generate());
    return Guid(u.to_guid_le());
}

uint32_t checksum(std::span<const uint8_t> b, size_t crc_at) {
    static const uint8_t zeros[4] = {};
    if (crc_at + 4 > b.size()) return crc32c(b);
    uint32_t c = crc32c(b.first(crc_at));
    c = crc32c(std::span<const uint8_t>(zeros, 4), c);
    return crc32c(b.subspan(crc_at + 4), c);
}

namespace {
Guid guid_at(ByteReader &r, size_t off) {
    Guid g{};
    auto s = r.bytes(off, 16);
    if (!s.empty()) std::memcpy(g.data(), s.data(), 16);
    return g;
}
}  // namespace

std::optional<Header> parse_header(std::span<const uint8_t> block) {
    if (block.size() < kHeaderSize) return std::nullopt;
    ByteReader r(block);
    if (r.get(hdr::checksum) != checksum(block.first(kHeaderSize), hdr::checksum.offset)) return std::nullopt;
    if (r.get(hdr::signature) != kHeaderSignature || r.get(hdr::version) != 1) return std::nullopt;
    Header h;
    h.sequence = r.get(hdr::sequence);
    h.file_write_guid = guid_at(r, hdr::file_write_guid);
    h.data_write_guid = guid_at(r, hdr::data_write_guid);
    h.log_guid = guid_at(r, hdr::log_guid);
    h.log_version = r.get(hdr::log_version);
    h.version = r.get(hdr::version);
    h.log_length = r.get(hdr::log_length);
    h.log_offset = r.get(hdr::log_offset);
    return h;
}

void store_header(std::span<uint8_t> block, const Header &h) {
    std::fill(block.begin(), block.end(), 0);
    ByteWriter w(block);
    w.put(hdr::signature, kHeaderSignature);
    w.put(hdr::sequence, h.sequence);
    w.bytes(hdr::file_write_guid, h.file_write_guid.data(), 16);
    w.bytes(hdr::data_write_guid, h.data_write_guid.data(), 16);
    w.bytes(hdr::log_guid, h.log_guid.data(), 16);
    w.put(hdr::log_version, h.log_version);
    w.put(hdr::version, h.version);
    w.put(hdr::log_length, h.log_length);
    w.put(hdr::log_offset, h.log_offset);
    w.put(hdr::checksum, checksum(block.first(std::min(block.size(), kHeaderSize)), hdr::checksum.offset));
}

std::optional<ActiveHeader> pick_header(std::span<const uint8_t> b1, std::span<const uint8_t> b2) {
    auto h1 = parse_header(b1), h2 = parse_header(b2);
    if (h1 && !h2) return ActiveHeader{*h1, 0};
    if (!h1 && h2) return ActiveHeader{*h2, 1};
    if (!h1 && !h2) return std::nullopt;
    if (h1->sequence > h2->sequence) return ActiveHeader{*h1, 0};
    if (h2->sequence > h1->sequence) return ActiveHeader{*h2, 1};
    // Equal sequence numbers are accepted only for identical headers (as
    // Disk2VHD writes them); QEMU compares the 80 bytes it keeps.
    constexpr size_t kKept = 80;
    if (std::memcmp(b1.data(), b2.data(), kKept) == 0) return ActiveHeader{*h1, 0};
    return std::nullopt;
}

std::optional<std::string> region_overlap(const std::vector<Region> &regions, uint64_t start, uint64_t len) {
    uint64_t end = start + len;  // wraps as QEMU's does; the caller bounds start and len
    for (const Region &r : regions) {
        uint64_t rend = r.offset + r.length;
        if (start >= rend || end <= r.offset) continue;
        // QEMU's format ends in "%." PRIu64: a zero end prints as nothing.
        char buf[160];
        std::snprintf(buf, sizeof buf, "VHDX region %" PRIu64 "-%" PRIu64 " overlaps with region %" PRIu64 "-%.0" PRIu64,
                      start, end, r.offset, rend);
        if (rend != 0) std::snprintf(buf, sizeof buf, "VHDX region %" PRIu64 "-%" PRIu64 " overlaps with region %" PRIu64 "-%" PRIu64,
                                     start, end, r.offset, rend);
        return std::string(buf);
    }
    return std::nullopt;
}

bool region_table_sealed(std::span<const uint8_t> block) {
    if (block.size() < kRegionTableSize) return false;
    ByteReader r(block.first(kRegionTableSize));
    return r.le32(0) == kRegionSignature && r.le32(4) == checksum(block.first(kRegionTableSize), 4);
}

Result<Regions> parse_regions(std::span<const uint8_t> block, Region log, RegionError *why) {
    auto fail = [&](int e, std::string report = {}) -> Result<Regions> {
        if (why) *why = RegionError{e, report};
        return make_error(e, report.empty() ? std::string(e == ENOTSUP ? "Operation not supported" : "Invalid argument")
                                            : report);
    };
    if (block.size() < kRegionTableSize) return fail(EINVAL);
    ByteReader r(block.first(kRegionTableSize));
    if (r.le32(4) != checksum(block.first(kRegionTableSize), 4)) return fail(EINVAL);
    if (r.le32(0) != kRegionSignature) return fail(EINVAL);
    uint32_t count = r.le32(8);
    if (count > kMaxRegionEntries) return fail(EINVAL);
    Regions out;
    out.all.push_back(log);
    bool bat = false, meta = false;
    for (uint32_t i = 0; i < count; ++i) {
        size_t at = 16 + size_t(i) * kRegionEntrySize;
        Guid g = guid_at(r, at);
        Region e{r.le64(at + 16), r.le32(at + 24)};
        uint32_t bits = r.le32(at + 28);
        if (!r) return fail(EINVAL);
        // Offsets past INT64_MAX would wrap the overlap arithmetic; no
        // file holds them.
        if (e.offset > uint64_t(INT64_MAX)) return fail(EINVAL);
        if (auto msg = region_overlap(out.all, e.offset, e.length)) return fail(EINVAL, *msg);
        out.all.push_back(e);
        if (g == kBatGuid) {
            if (bat) return fail(EINVAL);
            bat = true;
            out.bat = e;
        } else if (g == kMetadataGuid) {
            if (meta) return fail(EINVAL);
            meta = true;
            out.metadata = e;
        } else if (bits & 1) {
            return fail(ENOTSUP);  // a required region this reader does not know
        }
    }
    if (!bat || !meta) return fail(EINVAL);
    return out;
}

Result<MetaTable> parse_metadata_table(std::span<const uint8_t> block) {
    auto inval = [] { return make_error(EINVAL, "Invalid argument"); };
    if (block.size() < kMetadataTableSize) return inval();
    ByteReader r(block.first(kMetadataTableSize));
    if (r.le64(0) != kMetadataSignature) return inval();
    uint16_t count = r.le16(10);
    if (size_t(count) * kMetadataEntrySize > kMetadataTableSize - 32) return inval();
    MetaTable t;
    const std::pair<const Guid *, MetaItem MetaTable::*> known[] = {
        {&kFileParamsGuid, &MetaTable::params},       {&kVirtualSizeGuid, &MetaTable::size},
        {&kPage83Guid, &MetaTable::page83},           {&kLogicalSectorGuid, &MetaTable::logical},
        {&kPhysicalSectorGuid, &MetaTable::physical}, {&kParentLocatorGuid, &MetaTable::parent},
    };
    for (uint32_t i = 0; i < count; ++i) {
        size_t at = 32 + size_t(i) * kMetadataEntrySize;
        Guid g = guid_at(r, at);
        MetaItem item{r.le32(at + 16), r.le32(at + 20), true};
        uint32_t bits = r.le32(at + 24);
        bool matched = false;
        for (auto &[guid, member] : known) {
            if (g != *guid) continue;
            if ((t.*member).present) return inval();
            t.*member = item;
            matched = true;
            break;
        }
        if (!matched && (bits & kMetaRequired)) return make_error(ENOTSUP, "Operation not supported");
    }
    // QEMU 7.2 wants exactly the five items of a disk without a parent: a
    // parent locator (a differencing disk, which it cannot read) makes
    // the set differ too.
    if (!t.params.present || !t.size.present || !t.page83.present || !t.logical.present || !t.physical.present ||
        t.parent.present)
        return make_error(ENOTSUP, "Operation not supported");
    return t;
}

Result<Params> check_params(Params p) {
    auto inval = [] { return make_error(EINVAL, "Invalid argument"); };
    if (p.block_size < kBlockSizeMin || p.block_size > kBlockSizeMax) return inval();
    if (p.logical_sector != 512) return make_error(ENOTSUP, "Operation not supported");
    uint32_t sectors_per_block = p.block_size / p.logical_sector;
    uint64_t ratio = kMaxSectorsPerBlock * p.logical_sector / p.block_size;
    if (!std::has_single_bit(sectors_per_block) || !std::has_single_bit(ratio) ||
        !std::has_single_bit(p.block_size))
        return inval();
    p.chunk_ratio = uint32_t(ratio);
    // QEMU counts blocks in 32 bits, and for an empty disk its "(blocks - 1)
    // / ratio" wraps: such an image has a BAT of 2^32 / ratio entries.
    uint64_t blocks = div_round_up(p.size, uint64_t(p.block_size));
    if (blocks > UINT32_MAX) return inval();
    uint32_t b32 = uint32_t(blocks);
    p.bat_entries = uint64_t(b32) + uint32_t(b32 - 1) / p.chunk_ratio;
    return p;
}

}  // namespace qimg::vhdx
