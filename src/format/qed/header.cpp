// QED header checks, in the order and words of QEMU 7.2's qed open.
#include "format/qed/header.h"

#include <bit>
#include <string>

namespace qimg::qed {

bool valid_cluster_size(uint64_t c) {
    return c >= kMinClusterSize && c <= kMaxClusterSize && std::has_single_bit(c);
}
bool valid_table_size(uint64_t t) { return t >= kMinTableSize && t <= kMaxTableSize && std::has_single_bit(t); }

uint64_t max_image_size(uint64_t cluster_size, uint64_t table_size) {
    uint64_t entries = table_size * cluster_size / 8;
    // Wraps for the largest clusters and tables, as QEMU's does (64 MiB
    // clusters in 16-cluster tables then admit no image size but 0).
    return entries * cluster_size * entries;
}

bool valid_image_size(uint64_t size, uint64_t cluster_size, uint64_t table_size) {
    return size % 512 == 0 && size <= max_image_size(cluster_size, table_size);
}

bool valid_cluster_offset(const Header &h, uint64_t file_size, uint64_t off) {
    if (off & (uint64_t(h.cluster_size) - 1)) return false;
    return off >= h.header_bytes() && off < file_size;
}

bool valid_table_offset(const Header &h, uint64_t file_size, uint64_t off) {
    uint64_t end = off + (uint64_t(h.table_size) - 1) * h.cluster_size;
    if (end <= off) return false;  // wrapped, or a one-cluster table (as QEMU)
    return valid_cluster_offset(h, file_size, off) && valid_cluster_offset(h, file_size, end);
}

Result<Header> parse_header(std::span<const uint8_t> b, uint64_t file_length) {
    ByteReader r(b);
    if (b.size() < kHeaderSize || r.get(field::magic) != kMagic) return make_error(EINVAL, "Image not in QED format");
    Header h;
    h.cluster_size = r.get(field::cluster_size);
    h.table_size = r.get(field::table_size);
    h.header_size = r.get(field::header_size);
    h.features = r.get(field::features);
    h.compat_features = r.get(field::compat_features);
    h.autoclear_features = r.get(field::autoclear_features);
    h.l1_table_offset = r.get(field::l1_table_offset);
    h.image_size = r.get(field::image_size);
    h.backing_filename_offset = r.get(field::backing_filename_offset);
    h.backing_filename_size = r.get(field::backing_filename_size);
    if (h.features & ~kKnownFeatures) {
        char hex[32];
        snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(h.features & ~kKnownFeatures));
        return make_error(ENOTSUP, std::string("Unsupported QED features: ") + hex);
    }
    if (!valid_cluster_size(h.cluster_size)) return make_error(EINVAL, "QED cluster size is invalid");
    uint64_t file_size = file_length / h.cluster_size * h.cluster_size;
    if (!valid_table_size(h.table_size)) return make_error(EINVAL, "QED table size is invalid");
    if (!valid_image_size(h.image_size, h.cluster_size, h.table_size))
        return make_error(EINVAL, "QED image size is invalid");
    if (!valid_table_offset(h, file_size, h.l1_table_offset)) return make_error(EINVAL, "QED table offset is invalid");
    if (h.header_size > UINT32_MAX / h.cluster_size) return make_error(EINVAL, "QED header size is too large");
    if (h.features & kFeatureBacking) {
        if (uint64_t(h.backing_filename_offset) + h.backing_filename_size > h.header_bytes())
            return make_error(EINVAL, "QED backing filename offset is invalid");
        if (h.backing_filename_size > kMaxBackingName) return make_error(EINVAL, "Failed to read backing filename");
    }
    return h;
}

HeaderBytes encode_header(const Header &h) {
    HeaderBytes b{};
    ByteWriter w(b);
    w.put(field::magic, kMagic);
    w.put(field::cluster_size, h.cluster_size);
    w.put(field::table_size, h.table_size);
    w.put(field::header_size, h.header_size);
    w.put(field::features, h.features);
    w.put(field::compat_features, h.compat_features);
    w.put(field::autoclear_features, h.autoclear_features);
    w.put(field::l1_table_offset, h.l1_table_offset);
    w.put(field::image_size, h.image_size);
    w.put(field::backing_filename_offset, h.backing_filename_offset);
    w.put(field::backing_filename_size, h.backing_filename_size);
    return b;
}

}  // namespace qimg::qed
