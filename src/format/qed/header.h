// The QED header (qed_spec.txt "Header": 64 little-endian bytes at offset
// 0, the backing file name inside the header clusters) and the offset
// rules every table and cluster entry is checked against. Pure functions
// shared by the driver, create and the tests.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "util/bytes.h"
#include "util/result.h"

namespace qimg::qed {

constexpr uint32_t kMagic = 0x00444551;  // "QED\0"
constexpr size_t kHeaderSize = 64;
constexpr uint64_t kFeatureBacking = 1, kFeatureNeedCheck = 2, kFeatureBackingRaw = 4;
constexpr uint64_t kKnownFeatures = kFeatureBacking | kFeatureNeedCheck | kFeatureBackingRaw;
constexpr uint32_t kMinClusterSize = 4096, kMaxClusterSize = 64u << 20, kDefaultClusterSize = 65536;
constexpr uint32_t kMinTableSize = 1, kMaxTableSize = 16, kDefaultTableSize = 4;
// A data cluster entry of 1: zeroes, no cluster (qed_spec.txt "Zero data clusters").
constexpr uint64_t kZeroCluster = 1;
// QEMU's bound on a backing file name (the size of its name buffer).
constexpr uint32_t kMaxBackingName = 4095;

namespace field {
constexpr Le32 magic{0};
constexpr Le32 cluster_size{4};
constexpr Le32 table_size{8};
constexpr Le32 header_size{12};
constexpr Le64 features{16};
constexpr Le64 compat_features{24};
constexpr Le64 autoclear_features{32};
constexpr Le64 l1_table_offset{40};
constexpr Le64 image_size{48};
constexpr Le32 backing_filename_offset{56};
constexpr Le32 backing_filename_size{60};
}  // namespace field

using HeaderBytes = std::array<uint8_t, kHeaderSize>;

struct Header {
    uint32_t cluster_size = kDefaultClusterSize;
    uint32_t table_size = kDefaultTableSize;  // in clusters
    uint32_t header_size = 1;                 // in clusters
    uint64_t features = 0, compat_features = 0, autoclear_features = 0;
    uint64_t l1_table_offset = 0;
    uint64_t image_size = 0;
    uint32_t backing_filename_offset = 0, backing_filename_size = 0;

    uint64_t table_bytes() const { return uint64_t(table_size) * cluster_size; }
    uint64_t table_entries() const { return table_bytes() / 8; }
    uint64_t l2_span() const { return table_entries() * cluster_size; }
    uint64_t header_bytes() const { return uint64_t(header_size) * cluster_size; }
};

bool valid_cluster_size(uint64_t c);
bool valid_table_size(uint64_t t);
uint64_t max_image_size(uint64_t cluster_size, uint64_t table_size);
bool valid_image_size(uint64_t size, uint64_t cluster_size, uint64_t table_size);

// The header, checked in the order and words of QEMU's qed open up to the
// L1 table's offset, which needs the file size: `file_size` is the file's
// length rounded down to a cluster.
Result<Header> parse_header(std::span<const uint8_t> b, uint64_t file_length);
HeaderBytes encode_header(const Header &h);

// qed_spec.txt "Consistency checking": a cluster offset is aligned, past
// the header and inside the file; a table's clusters all are (QEMU also
// refuses a one-cluster table this way, so such images do not open).
bool valid_cluster_offset(const Header &h, uint64_t file_size, uint64_t off);
bool valid_table_offset(const Header &h, uint64_t file_size, uint64_t off);

}  // namespace qimg::qed
