// See extension.h.
#include "format/parallels/extension.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "block/open.h"
#include "crypto/sector_cipher.h"
#include "util/bytes.h"
#include "util/endian.h"
#include "util/uuid.h"

namespace qimg::parallels {
namespace {

constexpr uint64_t kExtensionMagic = 0xab234cef23dcea87ull;
constexpr uint64_t kEndOfFeatures = 0;
constexpr uint64_t kDirtyBitmapFeature = 0x20385fae252cb34aull;
constexpr size_t kExtHeader = 8 + 16;            // magic, MD5 of the rest
constexpr size_t kFeatureHeader = 8 + 8 + 4 + 4;  // magic, flags, data_size, unused
constexpr size_t kBitmapHeader = 8 + 16 + 4 + 4;  // size, id, granularity, l1_size
constexpr uint64_t kMaxExtensionCluster = 64ull << 20;

Error einval(const char *fmt, auto... args) {
    char buf[256];
    std::snprintf(buf, sizeof buf, fmt, args...);
    return Error{EINVAL, buf};
}

// One dirty bitmap feature (`d`: its data_size bytes).
Result<void> check_bitmap(BlockNode &file, const uint8_t *d, size_t size, uint64_t cluster_size,
                          uint64_t disk_sectors, std::set<Uuid> &names) {
    if (size < kBitmapHeader)
        return Err(einval("Too small Bitmap Feature area in Parallels Format Extension: %zu bytes, "
                          "expected at least %zu bytes",
                          size, kBitmapHeader));
    uint64_t bm_sectors = le64(d);
    // QEMU shifts the 32-bit sector count in 32 bits.
    uint32_t granularity = le32(d + 24) << 9;
    uint32_t l1_size = le32(d + 28);
    if (bm_sectors != disk_sectors)
        return Err(einval("Bitmap size (in sectors) %" PRId64 " differs from disk size in sectors %" PRId64,
                          int64_t(bm_sectors), int64_t(disk_sectors)));
    if (uint64_t(l1_size) * 8 > size - kBitmapHeader)
        return Err(einval("Bitmaps feature corrupted: l1 table exceeds extension data_size"));
    // QEMU asserts this (and aborts).
    if (granularity < 512 || (granularity & (granularity - 1)))
        return Err(einval("Bitmap granularity %" PRIu32 " is not a power of two of at least 512 bytes", granularity));
    // QEMU names each bitmap by its id in the canonical UUID form.
    Uuid id;
    std::memcpy(id.bytes.data(), d + 8, id.bytes.size());
    if (!names.insert(id).second) return Err(einval("Bitmap already exists: %s", id.to_string().c_str()));
    // The serialised bitmap: one bit per granule of the disk, in whole
    // 64-bit words, split in clusters.
    uint64_t bits = (disk_sectors * 512 + granularity - 1) / granularity;
    uint64_t words = (bits + 63) / 64;
    uint64_t tab_size = words == 0 ? 0 : (words * 8 + cluster_size - 1) / cluster_size;
    if (tab_size != l1_size)
        return Err(einval("Bitmap table size %" PRIu32 " does not correspond to bitmap size and cluster size. "
                          "Expected %" PRIu64,
                          l1_size, tab_size));
    // Entries: 0 all clear, 1 all set, else the sector of a data cluster.
    for (uint32_t i = 0; i < l1_size; ++i) {
        uint64_t e = le64(d + kBitmapHeader + 8 * uint64_t(i));
        if (e > 1 && (e > uint64_t(INT64_MAX) / 512 || e * 512 > uint64_t(INT64_MAX) - cluster_size))
            return Err(Error{EIO, "Failed to read bitmap data cluster: Input/output error"});
    }
    (void)file;  // data clusters past the end of the file read as zeroes, as in QEMU
    return ok();
}

}  // namespace

Result<void> check_format_extension(BlockNode &file, uint64_t ext_off, uint64_t cluster_size,
                                    uint64_t disk_sectors) {
    if (ext_off > uint64_t(INT64_MAX) / 512 || ext_off * 512 > uint64_t(INT64_MAX) - cluster_size)
        return make_error(EINVAL, "Failed to read Format Extension cluster: Invalid argument");
    if (cluster_size > kMaxExtensionCluster || cluster_size < kExtHeader)
        return make_error(EFBIG, "Format Extension cluster of " + std::to_string(cluster_size) +
                                     " bytes is not supported");
    std::vector<uint8_t> c(cluster_size);
    auto rr = read_padded(file, ext_off * 512, c.data(), c.size());
    if (!rr) return Err(rr.error().prepended("Failed to read Format Extension cluster: "));
    uint64_t magic = le64(c.data());
    if (magic != kExtensionMagic)
        return Err(einval("Wrong parallels Format Extension magic: 0x%" PRIx64 ", expected: 0x%llx", magic,
                          (unsigned long long)kExtensionMagic));
    QIMG_ASSIGN(std::string sum, crypto::hash_bytes("md5", std::string_view(reinterpret_cast<const char *>(c.data()) + kExtHeader, c.size() - kExtHeader)));
    if (std::memcmp(sum.data(), c.data() + 8, sum.size()) != 0)
        return make_error(EINVAL, "Wrong checksum in Format Extension header. Format extension is corrupted.");
    std::set<Uuid> names;
    size_t pos = kExtHeader;
    while (true) {
        size_t remaining = c.size() - pos;
        if (remaining < kFeatureHeader)
            return Err(einval("Can not read feature header, as remaining bytes (%d) in Format Extension is less "
                              "than Feature header size (%zu)",
                              int(remaining), kFeatureHeader));
        uint64_t fmagic = le64(c.data() + pos), flags = le64(c.data() + pos + 8);
        uint32_t data_size = le32(c.data() + pos + 16);
        pos += kFeatureHeader;
        if (flags) return make_error(EINVAL, "Flags for extension feature are unsupported");
        if (data_size > c.size() - pos)
            return make_error(EINVAL, "Feature data_size exceedes Format Extension cluster");
        if (fmagic == kEndOfFeatures) return ok();
        if (fmagic != kDirtyBitmapFeature) return Err(einval("Unknown feature: 0x%" PRIx64, fmagic));
        QIMG_TRY(check_bitmap(file, c.data() + pos, data_size, cluster_size, disk_sectors, names));
        // The next feature starts 8-byte aligned; past the cluster the
        // header check above ends the walk.
        pos = std::min<size_t>((pos + data_size + 7) / 8 * 8, c.size());
    }
}

}  // namespace qimg::parallels
