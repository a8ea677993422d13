// qemu-img create -f parallels: the options and the images qemu-img 7.2
// writes (byte for byte: a v2 "WithouFreSpacExt" header, an empty BAT, the
// data area starting at the next cluster boundary).
#include <array>
#include <cstring>

#include "block/open.h"
#include "format/parallels/parallels.h"
#include "util/endian.h"

namespace qimg::parallels {

Result<void> parallels_create(CreateRequest &req) {
    CreateRequest proto;
    proto.filename = req.filename;
    proto.options = req.options;
    for (const char *k : {"cluster_size", "size"}) proto.options.erase(k);
    proto.secrets = req.secrets;
    QIMG_TRY(req.opener->create_protocol(proto));

    // Both silently rounded up to whole sectors.
    auto round = [](uint64_t v) { return v > UINT64_MAX - 511 ? UINT64_MAX & ~uint64_t(511) : (v + 511) & ~uint64_t(511); };
    uint64_t size = round(req.size);
    uint64_t cl = round(std::stoull(req.get("cluster_size", std::to_string(kDefaultCluster))));
    constexpr uint64_t kFactor = 1ull << 32;
    if (cl >= uint64_t(INT64_MAX) / kFactor) return make_error(EINVAL, "Cluster size is too large");
    if (size >= kFactor * cl) return make_error(E2BIG, "Image size is too large for this cluster size");

    uint64_t entries = (size + cl - 1) / cl;
    uint64_t bat_sectors = (kHeaderSize + 4 * entries + cl - 1) / cl * cl / 512;
    std::array<uint8_t, 512> sector{};
    ByteWriter w(sector);
    w.bytes(hdr::magic, kMagicV2, 16);
    w.put(hdr::version, kVersion);
    w.put(hdr::heads, kHeads);
    w.put(hdr::cylinders, uint32_t(size / 512 / kHeads / kSectorsPerCylinder));
    w.put(hdr::tracks, uint32_t(cl / 512));
    w.put(hdr::bat_entries, uint32_t(entries));
    w.put(hdr::nb_sectors, size / 512);
    w.put(hdr::data_off, uint32_t(bat_sectors));

    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));
    auto r = file->write(0, sector.data(), sector.size());
    if (r && bat_sectors > 1) r = file->write_zeroes(512, (bat_sectors - 1) * 512, 0);
    if (!r) return Err(r.error().prepended("Failed to create Parallels image: "));
    return file->flush();
}

std::vector<CreateOption> parallels_create_options() {
    using T = CreateOption::Type;
    return {
        {"size", T::Size, "Virtual disk size", ""},
        {"cluster_size", T::Size, "Parallels image cluster size", "1048576"},
    };
}

}  // namespace qimg::parallels
