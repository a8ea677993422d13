// qcow2 header parsing, validation and serialisation (see header.h).
#include "format/qcow2/header.h"

#include <algorithm>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "block/table_check.h"
#include "util/endian.h"

namespace qimg::qcow2 {
namespace {

uint64_t round_up8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// qcow2.txt "Header extensions": each is a magic and a length, then the
// data padded to 8 bytes. Payload fields are relative to the data.
namespace ext {
inline constexpr Be32 kMagic{0}, kLength{4};
inline constexpr size_t kFramingSize = 8;
inline constexpr Be64 kCryptoOffset{0}, kCryptoLength{8};
inline constexpr size_t kCryptoSize = 16;
inline constexpr Be32 kBitmapsCount{0}, kBitmapsReserved{4};
inline constexpr Be64 kBitmapsDirectorySize{8}, kBitmapsDirectoryOffset{16};
inline constexpr size_t kBitmapsSize = 24;
inline constexpr size_t kFeatureEntrySize = 48;  // type, bit, 46 bytes of name
}  // namespace ext

std::string feature_list(const std::vector<FeatureName> &table, uint64_t mask) {
    std::string out;
    for (const FeatureName &f : table) {
        if (f.type != 0 || f.bit >= 64 || !(mask & (uint64_t{1} << f.bit))) continue;
        if (!out.empty()) out += ", ";
        out += f.name;
        mask &= ~(uint64_t{1} << f.bit);
    }
    if (mask) {
        if (!out.empty()) out += ", ";
        char buf[64];
        std::snprintf(buf, sizeof buf, "Unknown incompatible feature: %" PRIx64, mask);
        out += buf;
    }
    return out;
}

// Walks the extension area [start, end) of `head` (the first cluster).
// With only_feature_table, stops quietly at anything malformed (QEMU reads
// the table for the error message and ignores other errors then).
Result<void> parse_extensions(Header &h, const std::vector<uint8_t> &head, uint64_t start, uint64_t end,
                              bool only_feature_table) {
    ByteReader cluster(head);
    uint64_t off = start;
    while (off < end) {
        if (!cluster.has(off, ext::kFramingSize)) return make_error(EINVAL, "Header extension too large");
        ByteReader framing(cluster.bytes(off, ext::kFramingSize));
        const uint32_t magic = framing.get(ext::kMagic);
        const uint32_t len = framing.get(ext::kLength);
        off += ext::kFramingSize;
        if (off > end || len > end - off) {
            if (only_feature_table) return ok();
            return make_error(EINVAL, "Header extension too large");
        }
        ByteReader data(cluster.bytes(off, len));  // inside the cluster: end <= its size
        switch (magic) {
        case kExtEnd:
            return ok();
        case kExtFeatureTable:
            // QEMU reads the extension into a zero-padded buffer and walks
            // 48-byte entries until one has an empty name, so a short last
            // entry still counts (its missing bytes read as zero).
            h.feature_table.clear();
            for (uint32_t i = 0; i < len; i += ext::kFeatureEntrySize) {
                uint8_t entry[ext::kFeatureEntrySize] = {};
                std::span<const uint8_t> stored = data.bytes(i, std::min<uint32_t>(ext::kFeatureEntrySize, len - i));
                std::memcpy(entry, stored.data(), stored.size());
                if (entry[2] == 0) break;
                FeatureName f;
                f.type = entry[0];
                f.bit = entry[1];
                f.name.assign(reinterpret_cast<const char *>(entry + 2), strnlen(reinterpret_cast<const char *>(entry + 2), 46));
                h.feature_table.push_back(std::move(f));
            }
            break;
        default:
            if (only_feature_table) break;
            if (magic == kExtBackingFormat) {
                if (len >= 16)
                    return make_error(EINVAL, "ERROR: ext_backing_format: len=" + std::to_string(len) +
                                                  " too large (>=16)");
                h.backing_format = data.cstring(0, len);
            } else if (magic == kExtCrypto) {
                if (h.crypt_method != kCryptLuks)
                    return make_error(EINVAL, "CRYPTO header extension only expected with LUKS encryption method");
                if (len != ext::kCryptoSize)
                    return make_error(EINVAL, "CRYPTO header extension size " + std::to_string(len) +
                                                  ", but expected size 16");
                CryptoHeaderExtension c{data.get(ext::kCryptoOffset), data.get(ext::kCryptoLength)};
                if (c.offset % h.cluster_size() != 0)
                    return make_error(EINVAL, "Encryption header offset '" + std::to_string(c.offset) +
                                                  "' is not a multiple of cluster size '" +
                                                  std::to_string(h.cluster_size()) + "'");
                h.crypto_header = c;
            } else if (magic == kExtBitmaps) {
                if (len != ext::kBitmapsSize) return make_error(EINVAL, "bitmaps_ext: Invalid extension length");
                if (!(h.autoclear & kAutoclearBitmaps)) {
                    // Left by a program without bitmap support: QEMU warns
                    // and drops it when it next writes the header.
                    h.stale_bitmaps_extension = true;
                    break;
                }
                if (data.get(ext::kBitmapsReserved) != 0)
                    return make_error(EINVAL, "bitmaps_ext: Reserved field is not zero");
                BitmapsExtension b;
                b.nb_bitmaps = data.get(ext::kBitmapsCount);
                b.directory_size = data.get(ext::kBitmapsDirectorySize);
                b.directory_offset = data.get(ext::kBitmapsDirectoryOffset);
                if (b.nb_bitmaps > kMaxBitmaps)
                    return make_error(EINVAL, "bitmaps_ext: Image has " + std::to_string(b.nb_bitmaps) +
                                                  " bitmaps, exceeding the QEMU supported maximum of 65535");
                if (b.nb_bitmaps == 0) return make_error(EINVAL, "found bitmaps extension with zero bitmaps");
                const TableCheck dir =
                    check_table(b.directory_offset, b.directory_size, 1, {kMaxBitmapDirectorySize, h.cluster_size()});
                if (dir.misaligned) return make_error(EINVAL, "bitmaps_ext: invalid bitmap directory offset");
                if (dir.too_large)
                    return make_error(EINVAL, "bitmaps_ext: bitmap directory size (" +
                                                  std::to_string(b.directory_size) +
                                                  ") exceeds the maximum supported size (67107840)");
                h.bitmaps = b;
            } else if (magic == kExtDataFile) {
                h.data_file = data.cstring(0, len);
            } else {
                std::span<const uint8_t> payload = data.bytes(0, len);
                h.unknown_extensions.push_back({magic, std::vector<uint8_t>(payload.begin(), payload.end())});
            }
            break;
        }
        off += round_up8(len);
    }
    return ok();
}

}  // namespace

Result<void> validate_table(uint64_t offset, uint64_t entries, uint64_t entry_len, uint64_t max_bytes,
                            uint64_t cluster_size, const char *name) {
    const TableCheck c = check_table(offset, entries, entry_len, {max_bytes, cluster_size});
    if (c.too_large) return make_error(EFBIG, std::string(name) + " too large");
    if (c.out_of_bounds || c.misaligned) return make_error(EINVAL, std::string(name) + " offset invalid");
    return ok();
}

Result<Header> read_header(BlockNode &file, bool read_write, bool check_mode) {
    uint8_t b[kHeaderLengthWithCompression] = {};
    {
        auto r = read_padded(file, 0, b, sizeof b);
        if (!r) return Err(r.error().prepended("Could not read qcow2 header: "));
    }
    Header h;
    ByteReader fields(b);  // every field is inside b: the reader cannot fail
    if (fields.get(hdr::kMagic) != kMagic) return make_error(EINVAL, "Image is not in qcow2 format");
    h.version = fields.get(hdr::kVersion);
    if (h.version < 2 || h.version > 3)
        return make_error(ENOTSUP, "Unsupported qcow2 version " + std::to_string(h.version));
    h.backing_file_offset = fields.get(hdr::kBackingFileOffset);
    h.backing_file_size = fields.get(hdr::kBackingFileSize);
    h.cluster_bits = fields.get(hdr::kClusterBits);
    h.size = fields.get(hdr::kSize);
    h.crypt_method = fields.get(hdr::kCryptMethod);
    h.l1_size = fields.get(hdr::kL1Size);
    h.l1_table_offset = fields.get(hdr::kL1TableOffset);
    h.refcount_table_offset = fields.get(hdr::kRefcountTableOffset);
    h.refcount_table_clusters = fields.get(hdr::kRefcountTableClusters);
    h.nb_snapshots = fields.get(hdr::kNbSnapshots);
    h.snapshots_offset = fields.get(hdr::kSnapshotsOffset);
    if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
        return make_error(EINVAL, "Unsupported cluster size: 2^" + std::to_string(h.cluster_bits));
    const uint64_t cs = h.cluster_size();
    if (h.version == 2) {
        h.incompatible = h.compatible = h.autoclear = 0;
        h.refcount_order = 4;
        h.header_length = kHeaderV2Length;
    } else {
        h.incompatible = fields.get(hdr::kIncompatibleFeatures);
        h.compatible = fields.get(hdr::kCompatibleFeatures);
        h.autoclear = fields.get(hdr::kAutoclearFeatures);
        h.refcount_order = fields.get(hdr::kRefcountOrder);
        h.header_length = fields.get(hdr::kHeaderLength);
        if (h.header_length < kHeaderV3Length) return make_error(EINVAL, "qcow2 header too short");
    }
    if (h.header_length > cs) return make_error(EINVAL, "qcow2 header exceeds cluster size");

    // The whole first cluster holds everything else the header refers to.
    std::vector<uint8_t> head(cs);
    {
        auto r = read_padded(file, 0, head.data(), cs);
        if (!r) return Err(r.error().prepended("Could not read qcow2 header: "));
    }
    if (h.header_length > kHeaderLengthWithCompression)
        h.unknown_header_fields.assign(head.begin() + kHeaderLengthWithCompression, head.begin() + h.header_length);
    if (h.backing_file_offset > cs) return make_error(EINVAL, "Invalid backing file offset");
    uint64_t ext_end = h.backing_file_offset ? h.backing_file_offset : cs;

    h.compression_type =
        h.header_length > hdr::kCompressionType.offset ? fields.get(hdr::kCompressionType) : kCompressionZlib;
    if (h.compression_type != kCompressionZlib && h.compression_type != kCompressionZstd)
        return make_error(ENOTSUP, "qcow2: unknown compression type: " + std::to_string(h.compression_type));
    if (h.compression_type == kCompressionZlib && (h.incompatible & kIncompatCompression))
        return make_error(EINVAL, "qcow2: Compression type incompatible feature bit must not be set");
    if (h.compression_type != kCompressionZlib && !(h.incompatible & kIncompatCompression))
        return make_error(EINVAL, "qcow2: Compression type incompatible feature bit must be set");

    if (h.incompatible & ~kIncompatMask) {
        (void)parse_extensions(h, head, h.header_length, ext_end, true);
        return make_error(ENOTSUP,
                          "Unsupported qcow2 feature(s): " + feature_list(h.feature_table, h.incompatible & ~kIncompatMask));
    }
    if ((h.incompatible & kIncompatCorrupt) && read_write)
        return make_error(EACCES, "qcow2: Image is corrupt; cannot be opened read/write");
    // Subclusters: 32 per cluster; each must be at least 512 bytes.
    if (h.extended_l2() && cs / 32 < 512)
        return make_error(EINVAL, "Unsupported subcluster size: " + std::to_string(cs / 32));
    if (h.refcount_order > 6)
        return make_error(EINVAL, "Reference count entry width too large; may not exceed 64 bits");
    // qemu-img check opens such an image to rebuild the refcounts.
    if (h.refcount_table_clusters == 0 && !check_mode)
        return make_error(EINVAL, "Image does not contain a reference count table");
    QIMG_TRY(validate_table(h.refcount_table_offset, h.refcount_table_clusters, cs, kMaxRefcountTableBytes, cs,
                            "Reference count table"));
    // qemu-img check reads (and may repair) the snapshot table itself.
    if (!check_mode)
        QIMG_TRY(validate_table(h.snapshots_offset, h.nb_snapshots, kSnapshotHeaderSize,
                                kSnapshotHeaderSize * kMaxSnapshots, cs, "Snapshot table"));
    QIMG_TRY(validate_table(h.l1_table_offset, h.l1_size, 8, kMaxL1Bytes, cs, "Active L1 table"));
    const uint32_t l2_bits = h.cluster_bits - (h.extended_l2() ? 4 : 3);
    const uint32_t shift = h.cluster_bits + l2_bits;
    if (h.size > uint64_t(INT64_MAX) - (uint64_t{1} << shift)) return make_error(EFBIG, "Image is too big");
    uint64_t l1_needed = (h.size + (uint64_t{1} << shift) - 1) >> shift;
    if (l1_needed > INT_MAX) return make_error(EFBIG, "Image is too big");
    if (h.l1_size < l1_needed) return make_error(EINVAL, "L1 table is too small");

    // qcow2_update_options_prepare(), before the extensions are read.
    if (h.crypt_method > kCryptLuks)
        return make_error(EINVAL, "Unsupported encryption method " + std::to_string(static_cast<int32_t>(h.crypt_method)));

    QIMG_TRY(parse_extensions(h, head, h.header_length, ext_end, false));
    // The data file checks belong to opening it (Qcow2Node::open_data_file).
    if (h.backing_file_offset != 0) {
        uint32_t len = h.backing_file_size;
        if (len > std::min<uint64_t>(kMaxBackingNameLength, cs - h.backing_file_offset))
            return make_error(EINVAL, "Backing file name too long");
        h.backing_file.assign(reinterpret_cast<const char *>(&head[h.backing_file_offset]), len);
        h.backing_file.resize(strnlen(h.backing_file.c_str(), len));
    }
    return h;
}

Result<std::vector<uint8_t>> serialize_header(Header &h) {
    const uint64_t cs = h.cluster_size();
    std::vector<uint8_t> out(cs, 0);
    uint8_t *b = out.data();
    if (h.version >= 3) h.header_length = std::max<uint32_t>(kHeaderLengthWithCompression,
                                                              kHeaderLengthWithCompression + h.unknown_header_fields.size());
    else h.header_length = kHeaderV2Length;
    size_t off = h.header_length;
    auto need = [&](uint64_t n) -> bool { return off + n <= cs; };
    auto put_ext = [&](uint32_t magic, const void *data, uint32_t len) -> bool {
        if (!need(ext::kFramingSize + round_up8(len))) return false;
        ByteWriter w(out);
        w.put(ext::kMagic.at(off), magic);
        w.put(ext::kLength.at(off), len);
        w.bytes(off + ext::kFramingSize, data, len);
        off += ext::kFramingSize + round_up8(len);
        return true;
    };
    const Error too_big = make_error(ENOSPC, "Could not update qcow2 header: No space left on device");
    if (!h.backing_format.empty() && !put_ext(kExtBackingFormat, h.backing_format.data(), h.backing_format.size()))
        return too_big;
    if (h.data_file && !put_ext(kExtDataFile, h.data_file->data(), h.data_file->size())) return too_big;
    if (h.crypto_header) {
        uint8_t e[ext::kCryptoSize];
        ByteWriter w(e);
        w.put(ext::kCryptoOffset, h.crypto_header->offset);
        w.put(ext::kCryptoLength, h.crypto_header->length);
        if (!put_ext(kExtCrypto, e, sizeof e)) return too_big;
    }
    if (h.version >= 3 && cs > 4096) {
        // QEMU's own feature name table (qcow2_update_header), fixed order;
        // left out for clusters of 4 KiB and less to leave room for names.
        static const struct { uint8_t type, bit; const char *name; } kFeatures[] = {
            {0, 0, "dirty bit"}, {0, 1, "corrupt bit"}, {0, 2, "external data file"},
            {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
            {2, 0, "bitmaps"}, {2, 1, "raw external data"},
        };
        std::vector<uint8_t> t(48 * std::size(kFeatures), 0);
        for (size_t i = 0; i < std::size(kFeatures); i++) {
            t[i * 48] = kFeatures[i].type;
            t[i * 48 + 1] = kFeatures[i].bit;
            std::memcpy(&t[i * 48 + 2], kFeatures[i].name, std::strlen(kFeatures[i].name));
        }
        if (!put_ext(kExtFeatureTable, t.data(), t.size())) return too_big;
    }
    if (h.bitmaps) {
        uint8_t e[ext::kBitmapsSize] = {};
        ByteWriter w(e);
        w.put(ext::kBitmapsCount, h.bitmaps->nb_bitmaps);
        w.put(ext::kBitmapsDirectorySize, h.bitmaps->directory_size);
        w.put(ext::kBitmapsDirectoryOffset, h.bitmaps->directory_offset);
        if (!put_ext(kExtBitmaps, e, sizeof e)) return too_big;
    }
    for (const UnknownExtension &u : h.unknown_extensions)
        if (!put_ext(u.magic, u.data.data(), u.data.size())) return too_big;
    if (!need(ext::kFramingSize)) return too_big;
    off += ext::kFramingSize;  // end marker (zeroes)
    if (!h.backing_file.empty()) {
        if (!need(h.backing_file.size())) return too_big;
        std::memcpy(b + off, h.backing_file.data(), h.backing_file.size());
        h.backing_file_offset = off;
        h.backing_file_size = h.backing_file.size();
    } else {
        h.backing_file_offset = 0;
        h.backing_file_size = 0;
    }

    ByteWriter w(out);  // the cluster holds at least 512 bytes, the header at most 112 + unknown fields
    w.put(hdr::kMagic, kMagic);
    w.put(hdr::kVersion, h.version);
    w.put(hdr::kBackingFileOffset, h.backing_file_offset);
    w.put(hdr::kBackingFileSize, h.backing_file_size);
    w.put(hdr::kClusterBits, h.cluster_bits);
    w.put(hdr::kSize, h.size);
    w.put(hdr::kCryptMethod, h.crypt_method);
    w.put(hdr::kL1Size, h.l1_size);
    w.put(hdr::kL1TableOffset, h.l1_table_offset);
    w.put(hdr::kRefcountTableOffset, h.refcount_table_offset);
    w.put(hdr::kRefcountTableClusters, h.refcount_table_clusters);
    w.put(hdr::kNbSnapshots, h.nb_snapshots);
    w.put(hdr::kSnapshotsOffset, h.snapshots_offset);
    if (h.version >= 3) {
        w.put(hdr::kIncompatibleFeatures, h.incompatible);
        w.put(hdr::kCompatibleFeatures, h.compatible);
        w.put(hdr::kAutoclearFeatures, h.autoclear);
        w.put(hdr::kRefcountOrder, h.refcount_order);
        w.put(hdr::kHeaderLength, h.header_length);
        w.put(hdr::kCompressionType, h.compression_type);
        w.bytes(kHeaderLengthWithCompression, h.unknown_header_fields.data(), h.unknown_header_fields.size());
    }
    if (!w) return too_big;
    return out;
}

// --- crash-safe header rewrites ---------------------------------------------
//
// The header cluster is rewritten in one pwrite by QEMU. A process kill
// cannot tear a pwrite, but a power cut can: disks promise atomicity per
// sector only, so a rewrite touching two sectors may leave one old and one
// new. The dangerous fields live apart: the backing file offset and size and
// the backing format extension sit in sector 0, the backing name usually in
// sector 1 (after QEMU's 392-byte feature name table). Torn, the image would
// name the new file with the old format, or a mix of both names.
//
// write_header_safely() therefore checks the plain write by parsing every
// mix of old and new sectors it could leave; only if each one reads as the
// old or the new header is the write done in one step. Otherwise it goes
// through states that are each one sector away from the last (or differ
// only in bytes no header refers to), with a flush between them:
//   new backing name: the name goes to spare bytes first, then sector 0
//   points at it, then the name is copied to its regular place and sector 0
//   is pointed there (QEMU's final layout), then the spare copy is cleared;
//   backing file dropped: sector 0 drops the name first, then the rest.
namespace {

constexpr uint64_t kSector = 512;

// A header cluster held in memory, to parse candidate on-disk states.
class ClusterImage final : public BlockNode {
public:
    explicit ClusterImage(const std::vector<uint8_t> &d) : d_(d) {}
    std::string_view driver_name() const override { return "file"; }
    uint64_t length() const override { return d_.size(); }
    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (off > d_.size() || len > d_.size() - off) return make_error(EIO, "read past the header cluster");
        std::memcpy(buf, d_.data() + off, len);
        return ok();
    }

private:
    const std::vector<uint8_t> &d_;
};

std::optional<Header> parse_cluster(const std::vector<uint8_t> &c) {
    ClusterImage img(c);
    auto r = read_header(img, false);
    if (!r) return std::nullopt;
    return std::move(*r);
}

// Whether two parsed headers describe the same image; where the strings
// are placed does not matter, nor a backing format without a backing file.
bool same_meaning(const Header &a, const Header &b) {
    auto fields = [](const Header &h) {
        return std::tie(h.version, h.cluster_bits, h.size, h.crypt_method, h.l1_size, h.l1_table_offset,
                        h.refcount_table_offset, h.refcount_table_clusters, h.nb_snapshots, h.snapshots_offset,
                        h.incompatible, h.compatible, h.autoclear, h.refcount_order, h.compression_type,
                        h.unknown_header_fields, h.backing_file, h.data_file);
    };
    if (fields(a) != fields(b)) return false;
    if (!a.backing_file.empty() && a.backing_format != b.backing_format) return false;
    if (a.bitmaps.has_value() != b.bitmaps.has_value()) return false;
    if (a.crypto_header.has_value() != b.crypto_header.has_value()) return false;
    if (a.crypto_header && std::tie(a.crypto_header->offset, a.crypto_header->length) !=
                               std::tie(b.crypto_header->offset, b.crypto_header->length))
        return false;
    if (a.bitmaps && std::tie(a.bitmaps->nb_bitmaps, a.bitmaps->directory_size, a.bitmaps->directory_offset) !=
                         std::tie(b.bitmaps->nb_bitmaps, b.bitmaps->directory_size, b.bitmaps->directory_offset))
        return false;
    if (a.unknown_extensions.size() != b.unknown_extensions.size()) return false;
    for (size_t i = 0; i < a.unknown_extensions.size(); i++)
        if (a.unknown_extensions[i].magic != b.unknown_extensions[i].magic ||
            a.unknown_extensions[i].data != b.unknown_extensions[i].data)
            return false;
    return true;
}

std::vector<uint64_t> differing_sectors(const std::vector<uint8_t> &a, const std::vector<uint8_t> &b) {
    std::vector<uint64_t> out;
    for (uint64_t s = 0; s * kSector < a.size(); s++)
        if (std::memcmp(&a[s * kSector], &b[s * kSector], std::min<uint64_t>(kSector, a.size() - s * kSector)))
            out.push_back(s);
    return out;
}

// Whether every torn mix of `from` and `to` reads as one of the two.
bool torn_safe(const std::vector<uint8_t> &from, const std::vector<uint8_t> &to) {
    std::vector<uint64_t> d = differing_sectors(from, to);
    if (d.size() <= 1) return true;
    if (d.size() > 10) return false;
    auto hf = parse_cluster(from), ht = parse_cluster(to);
    if (!hf || !ht) return false;
    std::vector<uint8_t> mix;
    for (uint32_t mask = 1; mask + 1 < (1u << d.size()); mask++) {
        mix = from;
        for (size_t i = 0; i < d.size(); i++) {
            if (!(mask & (1u << i))) continue;
            uint64_t at = d[i] * kSector, n = std::min<uint64_t>(kSector, to.size() - at);
            std::memcpy(&mix[at], &to[at], n);
        }
        auto hm = parse_cluster(mix);
        if (!hm || !(same_meaning(*hm, *hf) || same_meaning(*hm, *ht))) return false;
    }
    return true;
}

// Writes the sectors of `to` that differ from `cur` (one write from the
// first to the last), and makes `cur` equal to `to`.
Result<void> write_difference(BlockNode &file, std::vector<uint8_t> &cur, const std::vector<uint8_t> &to) {
    std::vector<uint64_t> d = differing_sectors(cur, to);
    if (d.empty()) return ok();
    uint64_t a = d.front() * kSector, b = std::min<uint64_t>((d.back() + 1) * kSector, to.size());
    QIMG_TRY(file.write(a, to.data() + a, b - a));
    cur = to;
    return ok();
}

// One past the last byte the header in `c` refers to: its extensions (up
// to and including the end marker) and its backing file name.
uint64_t used_end(const std::vector<uint8_t> &c, const Header &h) {
    ByteReader r(c);
    uint64_t off = h.header_length;
    while (r.has(off, ext::kFramingSize)) {
        uint32_t magic = r.get(ext::kMagic.at(off));
        uint64_t len = r.get(ext::kLength.at(off));
        off += ext::kFramingSize;
        if (magic == kExtEnd) break;
        off += round_up8(len);
    }
    return std::min<uint64_t>(c.size(), std::max<uint64_t>(off, h.backing_file_offset + h.backing_file_size));
}

}  // namespace

Result<void> write_header_safely(BlockNode &file, Header &h) {
    QIMG_ASSIGN(std::vector<uint8_t> target, serialize_header(h));
    const uint64_t cs = target.size();
    std::vector<uint8_t> cur(cs);
    // A file without a readable header (being created) has nothing to protect.
    std::optional<Header> old;
    if (file.length() >= cs && read_padded(file, 0, cur.data(), cs)) old = parse_cluster(cur);
    if (!old) return file.write(0, target.data(), cs);
    if (torn_safe(cur, target)) return write_difference(file, cur, target);

    auto step = [&](const std::vector<uint8_t> &next) -> Result<void> {
        QIMG_TRY(write_difference(file, cur, next));
        return file.flush();
    };
    if (h.backing_file.empty()) {
        std::vector<uint8_t> next = cur;
        ByteWriter w(next);
        w.put(hdr::kBackingFileOffset, 0);
        w.put(hdr::kBackingFileSize, 0);
        QIMG_TRY(step(next));
    } else {
        const uint64_t at = h.backing_file_offset, len = h.backing_file.size();
        const uint64_t spare = round_up8(std::max(used_end(cur, *old), at + len));
        if (spare + len <= cs) {
            std::vector<uint8_t> next = cur;
            std::memcpy(&next[spare], h.backing_file.data(), len);
            std::vector<uint8_t> via = target;
            ByteWriter(via).put(hdr::kBackingFileOffset, spare);
            std::memcpy(&via[spare], h.backing_file.data(), len);
            std::memcpy(&via[at], &cur[at], len);
            if (torn_safe(next, via)) {
                QIMG_TRY(step(next));  // bytes no header refers to
                QIMG_TRY(step(via));   // the new header, name in the spare bytes
                next = cur;
                std::memcpy(&next[at], h.backing_file.data(), len);
                QIMG_TRY(step(next));  // the regular slot, unreferenced
                ByteWriter(next).put(hdr::kBackingFileOffset, at);
                QIMG_TRY(step(next));  // sector 0 only
            }
        }
    }
    // Either the remaining difference is safe now or no safe order was found
    // (an unusual layout): finish in one write, as QEMU always does.
    return write_difference(file, cur, target);
}

namespace {

// Writes two adjacent header fields (`first` ends where `second` starts) in
// one write.
template <class T1, Endian E1, class T2, Endian E2>
Result<void> write_adjacent_fields(BlockNode &file, Field<T1, E1> first, T1 v1, Field<T2, E2> second, T2 v2) {
    uint8_t b[kHeaderV2Length] = {};
    ByteWriter w(b);
    w.put(first, v1);
    w.put(second, v2);
    return file.write(first.offset, b + first.offset, second.offset + sizeof(T2) - first.offset);
}

}  // namespace

Result<void> write_refcount_table_pointer(BlockNode &file, uint64_t offset, uint32_t clusters) {
    return write_adjacent_fields(file, hdr::kRefcountTableOffset, offset, hdr::kRefcountTableClusters, clusters);
}

Result<void> write_l1_table_pointer(BlockNode &file, uint32_t l1_size, uint64_t offset) {
    return write_adjacent_fields(file, hdr::kL1Size, l1_size, hdr::kL1TableOffset, offset);
}

Result<void> write_snapshot_table_pointer(BlockNode &file, uint32_t nb_snapshots, uint64_t offset) {
    return write_adjacent_fields(file, hdr::kNbSnapshots, nb_snapshots, hdr::kSnapshotsOffset, offset);
}

}  // namespace qimg::qcow2
