// The qcow (version 1) header: 48 big-endian bytes at offset 0, then the
// backing file name, then the L1 table (QEMU's block/qcow.c is the only
// specification). Pure functions shared by the driver, create and tests.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "util/bytes.h"
#include "util/result.h"

namespace qimg::qcow {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 48;
constexpr uint32_t kCryptNone = 0, kCryptAes = 1;
constexpr uint64_t kCompressedFlag = 1ull << 63;
// QEMU's limit on a recorded backing file name.
constexpr uint32_t kMaxBackingName = 1023;

namespace field {
constexpr Be32 magic{0};
constexpr Be32 version{4};
constexpr Be64 backing_file_offset{8};
constexpr Be32 backing_file_size{16};
constexpr Be32 mtime{20};
constexpr Be64 size{24};
constexpr U8 cluster_bits{32};
constexpr U8 l2_bits{33};
constexpr Be32 crypt_method{36};
constexpr Be64 l1_table_offset{40};
}  // namespace field

using HeaderBytes = std::array<uint8_t, kHeaderSize>;

struct Header {
    uint64_t backing_file_offset = 0;
    uint32_t backing_file_size = 0;
    uint32_t mtime = 0;
    uint64_t size = 0;  // bytes, as recorded
    uint8_t cluster_bits = 12;
    uint8_t l2_bits = 9;
    uint32_t crypt_method = kCryptNone;
    uint64_t l1_table_offset = 0;

    uint64_t cluster_size() const { return uint64_t(1) << cluster_bits; }
    uint64_t l2_entries() const { return uint64_t(1) << l2_bits; }
    // Guest bytes one L1 entry covers.
    uint64_t l1_span() const { return uint64_t(1) << (cluster_bits + l2_bits); }
    // L1 entries the size needs (parse_header checked it cannot overflow).
    uint64_t l1_entries() const { return (size + l1_span() - 1) >> (cluster_bits + l2_bits); }
};

// Validates the header in QEMU's order and words.
Result<Header> parse_header(std::span<const uint8_t> b);
HeaderBytes encode_header(const Header &h);

bool probe_header(std::span<const uint8_t> head);

// An L2 entry: 0 unallocated; with kCompressedFlag a compressed cluster
// (its offset in the low 63 - cluster_bits bits, its byte count in the
// cluster_bits bits above them); otherwise a cluster's offset.
struct L2Entry {
    enum Kind { Unallocated, Normal, Compressed } kind = Unallocated;
    uint64_t offset = 0;
    uint32_t compressed_bytes = 0;
};
L2Entry decode_l2(uint64_t e, unsigned cluster_bits);
// The entry of a compressed cluster of `bytes` (< cluster size) at
// `offset`; 0 when the offset does not fit the entry's bits.
uint64_t encode_compressed(uint64_t offset, uint32_t bytes, unsigned cluster_bits);

}  // namespace qimg::qcow
