// qemu-img create -f vdi: the options and the images qemu-img 7.2 writes
// (the same bytes but for the two random UUIDs).
#include <cstring>
#include <vector>

#include "block/open.h"
#include "format/vdi/format.h"
#include "format/vdi/vdi.h"
#include "util/endian.h"
#include "util/uuid.h"

namespace qimg::vdi {
namespace {

HeaderBytes make_header(uint64_t size, uint32_t blocks, uint64_t bmap_bytes, bool is_static, const Uuid &image,
                        const Uuid &snap) {
    HeaderBytes b{};
    ByteWriter w(b);
    w.bytes(hdr::text, kText, std::strlen(kText));
    w.put(hdr::signature, kSignature);
    w.put(hdr::version, kVersion11);
    w.put(hdr::header_size, 0x180);
    w.put(hdr::image_type, is_static ? kTypeStatic : kTypeDynamic);
    w.put(hdr::offset_bmap, kHeaderSize);
    w.put(hdr::offset_data, uint32_t(kHeaderSize + bmap_bytes));
    w.put(hdr::sector_size, kSectorSize);
    w.put(hdr::disk_size, size);
    w.put(hdr::block_size, kBlockSize);
    w.put(hdr::blocks_in_image, blocks);
    w.put(hdr::blocks_allocated, is_static ? blocks : 0);
    w.bytes(hdr::uuid_image, image.bytes.data(), image.bytes.size());
    w.bytes(hdr::uuid_last_snap, snap.bytes.data(), snap.bytes.size());
    return b;
}

}  // namespace

Result<void> vdi_create(CreateRequest &req) {
    // As QEMU: the protocol file first, with the options vdi does not own
    // (preallocation goes to the file, for a file of size 0), then vdi.
    CreateRequest proto;
    proto.filename = req.filename;
    proto.options = req.options;
    for (const char *k : {"static", "size"}) proto.options.erase(k);
    proto.secrets = req.secrets;
    QIMG_TRY(req.opener->create_protocol(proto));

    bool is_static = req.get("static", "off") == "on";
    // Silently rounded up to whole sectors.
    uint64_t size = req.size > UINT64_MAX - 511 ? UINT64_MAX & ~uint64_t(511) : (req.size + 511) & ~uint64_t(511);
    if (size > kMaxDiskSize)
        return make_error(ENOTSUP, "Unsupported VDI image size (size is " + hex64(size) + ", max supported is " +
                                       hex64(kMaxDiskSize) + ")");
    uint32_t blocks = uint32_t((size + kBlockSize - 1) / kBlockSize);
    uint64_t bmap_bytes = (uint64_t(blocks) * 4 + kSectorSize - 1) / kSectorSize * kSectorSize;
    QIMG_ASSIGN(Uuid image, Uuid::generate());
    QIMG_ASSIGN(Uuid snap, Uuid::generate());
    HeaderBytes h = make_header(size, blocks, bmap_bytes, is_static, image, snap);

    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));
    if (!file->write(0, h.data(), h.size())) return make_error(EIO, "Error writing header");
    if (bmap_bytes > 0) {
        std::vector<uint8_t> bmap(bmap_bytes, 0);
        for (uint32_t i = 0; i < blocks; ++i) put_le32(bmap.data() + 4 * uint64_t(i), is_static ? i : kUnallocated);
        if (!file->write(kHeaderSize, bmap.data(), bmap.size())) return make_error(EIO, "Error writing bmap");
    }
    if (is_static) {
        auto t = file->truncate(kHeaderSize + bmap_bytes + uint64_t(blocks) * kBlockSize, Prealloc::Off, false);
        if (!t) return Err(t.error().prepended("Failed to statically allocate file"));
    }
    return file->flush();
}

std::vector<CreateOption> vdi_create_options() {
    using T = CreateOption::Type;
    return {
        {"size", T::Size, "Virtual disk size", ""},
        {"static", T::Bool, "VDI static (pre-allocated) image", "off"},
    };
}

}  // namespace qimg::vdi
