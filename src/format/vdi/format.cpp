// The VDI header: parsing and validation (format.h).
#include "format/vdi/format.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <string>

namespace qimg::vdi {
std::string hex64(uint64_t v) {
    char b[32];
    std::snprintf(b, sizeof b, "0x%" PRIx64, v);
    return b;
}

namespace {

bool uuid_is_nil(std::span<const uint8_t> b, size_t at) {
    return std::all_of(b.begin() + at, b.begin() + at + 16, [](uint8_t c) { return c == 0; });
}

}  // namespace

bool has_signature(std::span<const uint8_t> head) {
    ByteReader r(head);
    return r.has(hdr::signature) && r.get(hdr::signature) == kSignature;
}

Result<Header> parse_header(std::span<const uint8_t, kHeaderSize> b) {
    ByteReader r{std::span<const uint8_t>(b)};
    Header h;
    uint32_t sig = r.get(hdr::signature);
    uint32_t version = r.get(hdr::version);
    h.image_type = r.get(hdr::image_type);
    h.offset_bmap = r.get(hdr::offset_bmap);
    h.offset_data = r.get(hdr::offset_data);
    uint32_t sector_size = r.get(hdr::sector_size);
    h.disk_size = r.get(hdr::disk_size);
    uint32_t block_size = r.get(hdr::block_size);
    h.blocks_in_image = r.get(hdr::blocks_in_image);
    h.blocks_allocated = r.get(hdr::blocks_allocated);
    if (h.disk_size > kMaxDiskSize)
        return make_error(ENOTSUP, "Unsupported VDI image size (size is " + hex64(h.disk_size) +
                                       ", max supported is " + hex64(kMaxDiskSize) + ")");
    // VBoxManage convertfromraw makes images of any byte size: qemu-img
    // reads them rounded up to whole sectors.
    h.disk_size = (h.disk_size + kSectorSize - 1) / kSectorSize * kSectorSize;
    char buf[64];
    if (sig != kSignature) {
        std::snprintf(buf, sizeof buf, "%08" PRIx32, sig);
        return make_error(EINVAL, std::string("Image not in VDI format (bad signature ") + buf + ")");
    }
    if (version != kVersion11)
        return make_error(ENOTSUP, "unsupported VDI image (version " + std::to_string(version >> 16) + "." +
                                       std::to_string(version & 0xffff) + ")");
    if (h.offset_bmap % kSectorSize != 0)
        return make_error(ENOTSUP, "unsupported VDI image (unaligned block map offset " + hex64(h.offset_bmap) + ")");
    if (h.offset_data % kSectorSize != 0)
        return make_error(ENOTSUP, "unsupported VDI image (unaligned data offset " + hex64(h.offset_data) + ")");
    if (sector_size != kSectorSize)
        return make_error(ENOTSUP,
                          "unsupported VDI image (sector size " + std::to_string(sector_size) + " is not 512)");
    if (block_size != kBlockSize)
        return make_error(ENOTSUP, "unsupported VDI image (block size " + std::to_string(block_size) + " is not " +
                                       std::to_string(kBlockSize) + ")");
    uint64_t room = uint64_t(h.blocks_in_image) * block_size;
    if (h.disk_size > room)
        return make_error(ENOTSUP, "unsupported VDI image (disk size " + std::to_string(h.disk_size) +
                                       ", image bitmap has room for " + std::to_string(room) + ")");
    if (!uuid_is_nil(b, hdr::uuid_link)) return make_error(ENOTSUP, "unsupported VDI image (non-NULL link UUID)");
    if (!uuid_is_nil(b, hdr::uuid_parent))
        return make_error(ENOTSUP, "unsupported VDI image (non-NULL parent UUID)");
    if (h.blocks_in_image > kMaxBlocks)
        return make_error(ENOTSUP, "unsupported VDI image (too many blocks " + std::to_string(h.blocks_in_image) +
                                       ", max is " + std::to_string(kMaxBlocks) + ")");
    return h;
}

}  // namespace qimg::vdi
