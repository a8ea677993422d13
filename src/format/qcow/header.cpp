// The qcow header's checks, in the order and words of QEMU 7.2's qcow_open.
#include "format/qcow/header.h"

#include <climits>

namespace qimg::qcow {

bool probe_header(std::span<const uint8_t> head) {
    ByteReader r(head);
    return head.size() >= kHeaderSize && r.get(field::magic) == kMagic && r.get(field::version) == kVersion;
}

Result<Header> parse_header(std::span<const uint8_t> b) {
    ByteReader r(b);
    if (b.size() < kHeaderSize || r.get(field::magic) != kMagic)
        return make_error(EINVAL, "Image not in qcow format");
    uint32_t version = r.get(field::version);
    if (version != kVersion) {
        std::string msg = "qcow (v1) does not support qcow version " + std::to_string(version);
        if (version == 2 || version == 3) msg += "\nTry the 'qcow2' driver instead.";
        return make_error(ENOTSUP, msg);
    }
    Header h;
    h.backing_file_offset = r.get(field::backing_file_offset);
    h.backing_file_size = r.get(field::backing_file_size);
    h.mtime = r.get(field::mtime);
    h.size = r.get(field::size);
    h.cluster_bits = r.get(field::cluster_bits);
    h.l2_bits = r.get(field::l2_bits);
    h.crypt_method = r.get(field::crypt_method);
    h.l1_table_offset = r.get(field::l1_table_offset);
    if (h.size <= 1) return make_error(EINVAL, "Image size is too small (must be at least 2 bytes)");
    if (h.cluster_bits < 9 || h.cluster_bits > 16) return make_error(EINVAL, "Cluster size must be between 512 and 64k");
    // l2_bits counts 8-byte entries: tables of 512 bytes to 64 KiB.
    if (h.l2_bits < 6 || h.l2_bits > 13) return make_error(EINVAL, "L2 table size must be between 512 and 64k");
    if (h.crypt_method != kCryptNone && h.crypt_method != kCryptAes)
        return make_error(EINVAL, "invalid encryption method in qcow header");
    if (h.size > UINT64_MAX - h.l1_span()) return make_error(EINVAL, "Image too large");
    if (h.l1_entries() > uint64_t(INT_MAX) / 8) return make_error(EINVAL, "Image too large");
    return h;
}

HeaderBytes encode_header(const Header &h) {
    HeaderBytes b{};
    ByteWriter w(b);
    w.put(field::magic, kMagic);
    w.put(field::version, kVersion);
    w.put(field::backing_file_offset, h.backing_file_offset);
    w.put(field::backing_file_size, h.backing_file_size);
    w.put(field::mtime, h.mtime);
    w.put(field::size, h.size);
    w.put(field::cluster_bits, h.cluster_bits);
    w.put(field::l2_bits, h.l2_bits);
    w.put(field::crypt_method, h.crypt_method);
    w.put(field::l1_table_offset, h.l1_table_offset);
    return b;
}

L2Entry decode_l2(uint64_t e, unsigned cluster_bits) {
    L2Entry l;
    if (e == 0) return l;
    if (e & kCompressedFlag) {
        unsigned shift = 63 - cluster_bits;
        l.kind = L2Entry::Compressed;
        l.offset = e & ((uint64_t(1) << shift) - 1);
        l.compressed_bytes = uint32_t((e >> shift) & ((uint64_t(1) << cluster_bits) - 1));
        return l;
    }
    l.kind = L2Entry::Normal;
    l.offset = e;
    return l;
}

uint64_t encode_compressed(uint64_t offset, uint32_t bytes, unsigned cluster_bits) {
    unsigned shift = 63 - cluster_bits;
    if (offset >> shift || bytes >> cluster_bits || bytes == 0) return 0;
    return kCompressedFlag | uint64_t(bytes) << shift | offset;
}

}  // namespace qimg::qcow
