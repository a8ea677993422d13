// qcow2 on-disk header: the fixed fields, the header extensions (backing
// format, feature name table, bitmaps, external data file, unknown ones kept
// verbatim) and the backing file name. Parsing validates every field the
// way QEMU's qcow2_do_open does, with QEMU's messages (the LUKS header the
// crypto extension points at is the driver's business); serialisation writes
// the whole first cluster as QEMU's qcow2_update_header lays it out.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "block/node.h"
#include "util/bytes.h"

namespace qimg::qcow2 {

// qcow2.txt: "Header"
inline constexpr uint32_t kMagic = 0x514649fb;
inline constexpr uint32_t kMinClusterBits = 9, kMaxClusterBits = 21;
inline constexpr uint32_t kHeaderV2Length = 72, kHeaderV3Length = 104, kHeaderLengthWithCompression = 112;

// The fixed header fields by byte offset (qcow2.txt: "Header").
namespace hdr {
inline constexpr Be32 kMagic{0}, kVersion{4};
inline constexpr Be64 kBackingFileOffset{8};
inline constexpr Be32 kBackingFileSize{16}, kClusterBits{20};
inline constexpr Be64 kSize{24};
inline constexpr Be32 kCryptMethod{32}, kL1Size{36};
inline constexpr Be64 kL1TableOffset{40}, kRefcountTableOffset{48};
inline constexpr Be32 kRefcountTableClusters{56}, kNbSnapshots{60};
inline constexpr Be64 kSnapshotsOffset{64};
// Version 3 and later.
inline constexpr Be64 kIncompatibleFeatures{72}, kCompatibleFeatures{80}, kAutoclearFeatures{88};
inline constexpr Be32 kRefcountOrder{96}, kHeaderLength{100};
inline constexpr U8 kCompressionType{104};
}  // namespace hdr

inline constexpr uint64_t kIncompatDirty = 1u << 0;
inline constexpr uint64_t kIncompatCorrupt = 1u << 1;
inline constexpr uint64_t kIncompatDataFile = 1u << 2;
inline constexpr uint64_t kIncompatCompression = 1u << 3;
inline constexpr uint64_t kIncompatExtL2 = 1u << 4;
inline constexpr uint64_t kIncompatMask = 0x1f;
inline constexpr uint64_t kCompatLazyRefcounts = 1u << 0;
inline constexpr uint64_t kAutoclearBitmaps = 1u << 0;
inline constexpr uint64_t kAutoclearDataFileRaw = 1u << 1;
inline constexpr uint64_t kAutoclearMask = 0x3;

inline constexpr uint8_t kCompressionZlib = 0, kCompressionZstd = 1;

// Header extension magics (qcow2.txt: "Header extensions").
inline constexpr uint32_t kExtEnd = 0;
inline constexpr uint32_t kExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kExtFeatureTable = 0x6803f857;
inline constexpr uint32_t kExtBitmaps = 0x23852875;
inline constexpr uint32_t kExtCrypto = 0x0537be77;
inline constexpr uint32_t kExtDataFile = 0x44415441;

// Limits QEMU applies (block/qcow2.h).
inline constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;
inline constexpr uint64_t kMaxSnapshots = 65536;
inline constexpr uint64_t kSnapshotHeaderSize = 40;
inline constexpr uint32_t kMaxBackingNameLength = 1023;
inline constexpr uint32_t kMaxBitmaps = 65535;
inline constexpr uint64_t kMaxBitmapDirectorySize = 1024ull * kMaxBitmaps;

struct FeatureName {
    uint8_t type = 0, bit = 0;
    std::string name;
};

struct BitmapsExtension {
    uint32_t nb_bitmaps = 0;
    uint64_t directory_size = 0, directory_offset = 0;
};

// qcow2.txt: "Full disk encryption header pointer": where the LUKS header
// of an encrypt.format=luks image lives (cluster aligned).
struct CryptoHeaderExtension {
    uint64_t offset = 0, length = 0;
};

// crypt_method values (qcow2.txt: "Header").
inline constexpr uint32_t kCryptNone = 0, kCryptAes = 1, kCryptLuks = 2;

struct UnknownExtension {
    uint32_t magic = 0;
    std::vector<uint8_t> data;
};

struct Header {
    uint32_t version = 3;
    uint64_t backing_file_offset = 0;
    uint32_t backing_file_size = 0;
    uint32_t cluster_bits = 16;
    uint64_t size = 0;
    uint32_t crypt_method = 0;
    uint32_t l1_size = 0;
    uint64_t l1_table_offset = 0;
    uint64_t refcount_table_offset = 0;
    uint32_t refcount_table_clusters = 0;
    uint32_t nb_snapshots = 0;
    uint64_t snapshots_offset = 0;
    uint64_t incompatible = 0, compatible = 0, autoclear = 0;
    uint32_t refcount_order = 4;
    uint32_t header_length = kHeaderLengthWithCompression;
    uint8_t compression_type = kCompressionZlib;
    std::vector<uint8_t> unknown_header_fields;  // bytes past the known header

    // Extensions and strings.
    std::string backing_file;
    std::string backing_format;
    std::optional<std::string> data_file;
    std::optional<BitmapsExtension> bitmaps;
    std::optional<CryptoHeaderExtension> crypto_header;
    std::vector<FeatureName> feature_table;
    std::vector<UnknownExtension> unknown_extensions;
    bool stale_bitmaps_extension = false;  // present without the autoclear bit (ignored)

    uint64_t cluster_size() const { return uint64_t{1} << cluster_bits; }
    bool extended_l2() const { return incompatible & kIncompatExtL2; }
    bool has_data_file() const { return incompatible & kIncompatDataFile; }
    bool data_file_raw() const { return autoclear & kAutoclearDataFileRaw; }
    uint32_t refcount_bits() const { return 1u << refcount_order; }
};

// Reads and validates the header of `file` (QEMU's qcow2_do_open checks and
// messages). `read_write` refuses corrupt images as QEMU does; `check_mode`
// (BDRV_O_CHECK) leaves the snapshot table pointer to the check.
Result<Header> read_header(BlockNode &file, bool read_write, bool check_mode = false);

// QEMU's qcow2_validate_table: at most max_bytes / entry_len entries ("<name>
// too large", EFBIG) and a cluster-aligned offset that leaves room for the
// table below INT64_MAX ("<name> offset invalid", EINVAL).
Result<void> validate_table(uint64_t offset, uint64_t entries, uint64_t entry_len, uint64_t max_bytes,
                            uint64_t cluster_size, const char *name);

// The first cluster as QEMU's qcow2_update_header writes it: header fields,
// backing format, data file name, encryption header pointer, feature name
// table, bitmaps extension,
// unknown extensions, end marker, backing file name. Sets
// backing_file_offset/size and header_length. Error if it does not fit.
Result<std::vector<uint8_t>> serialize_header(Header &h);

// Rewrites the first cluster of `file` so that it holds `h` (serialised as
// above; QEMU writes it in one pwrite). The update is ordered so that an
// interruption at any point, or a write torn at any 512-byte sector
// boundary, leaves a header that reads as the old one or the new one, never
// as a mix (see header.cpp). Flushes between the steps it needs, not after
// the last one.
Result<void> write_header_safely(BlockNode &file, Header &h);

// Rewrites one header field in place (no flush).
template <class T, Endian E>
Result<void> write_header_field(BlockNode &file, Field<T, E> f, std::type_identity_t<T> v) {
    uint8_t b[sizeof(T)];
    ByteWriter(b).put(Field<T, E>{0}, v);
    return file.write(f.offset, b, sizeof b);
}

// Rewrite two adjacent header fields in place in one small write, as QEMU
// does when the refcount table or the L1 table moves (no flush).
Result<void> write_refcount_table_pointer(BlockNode &file, uint64_t offset, uint32_t clusters);
Result<void> write_l1_table_pointer(BlockNode &file, uint32_t l1_size, uint64_t offset);
Result<void> write_snapshot_table_pointer(BlockNode &file, uint32_t nb_snapshots, uint64_t offset);


}  // namespace qimg::qcow2
