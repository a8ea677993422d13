// qcow2 L2 entries and the L2 table cache (see l1l2.h).
#include "format/qcow2/l1l2.h"

#include <algorithm>

#include "util/endian.h"

namespace qimg::qcow2 {

SubclusterType classify(uint64_t entry, uint64_t bitmap, unsigned sc, bool extended, bool has_data_file) {
    if (entry & kOflagCompressed) return SubclusterType::Compressed;
    uint64_t off = entry & kL2OffsetMask;
    bool allocated = off != 0 || (has_data_file && (entry & kOflagCopied));
    if (!extended) {
        if (entry & kOflagZero) return allocated ? SubclusterType::ZeroAlloc : SubclusterType::ZeroPlain;
        return allocated ? SubclusterType::Normal : SubclusterType::Unallocated;
    }
    uint64_t alloc_bit = uint64_t{1} << sc, zero_bit = uint64_t{1} << (sc + 32);
    if (allocated) {
        if ((bitmap >> 32) & bitmap) return SubclusterType::Invalid;
        if (bitmap & zero_bit) return SubclusterType::ZeroAlloc;
        if (bitmap & alloc_bit) return SubclusterType::Normal;
        return SubclusterType::UnallocatedAlloc;
    }
    if (bitmap & zero_bit) return SubclusterType::ZeroPlain;
    if (bitmap & alloc_bit) return SubclusterType::Invalid;
    return SubclusterType::Unallocated;
}

L2Table decode_l2_table(std::span<const uint8_t> raw) {
    L2Table t(raw.size() / 8);
    for (size_t i = 0; i < t.size(); i++) t[i] = be64(&raw[i * 8]);
    return t;
}

std::vector<uint8_t> encode_l2_table(const L2Table &t) {
    std::vector<uint8_t> raw(t.size() * 8);
    for (size_t i = 0; i < t.size(); i++) put_be64(&raw[i * 8], t[i]);
    return raw;
}

CompressedExtent decode_compressed(uint64_t entry, uint32_t cluster_bits) {
    const uint32_t shift = 62 - (cluster_bits - 8);
    const uint64_t offset = entry & ((uint64_t{1} << shift) - 1);
    const uint64_t sectors = ((entry >> shift) & ((uint64_t{1} << (cluster_bits - 8)) - 1)) + 1;
    return {offset, sectors * 512 - (offset & 511)};
}

uint64_t encode_compressed(uint64_t offset, uint64_t bytes, uint32_t cluster_bits) {
    const uint64_t additional_sectors = (offset + bytes - 1) / 512 - offset / 512;
    return offset | (additional_sectors << (62 - (cluster_bits - 8))) | kOflagCompressed;
}

L2Layout::L2Layout(uint32_t cluster_bits, bool extended, bool has_data_file)
    : cluster_bits_(cluster_bits), extended_(extended), has_data_file_(has_data_file),
      entries_(uint64_t{1} << (cluster_bits - (extended ? 4 : 3))) {}

ClusterType L2Layout::type(uint64_t e) const {
    if (e & kOflagCompressed) return ClusterType::Compressed;
    if ((e & kOflagZero) && !extended_) return (e & kL2OffsetMask) ? ClusterType::ZeroAlloc : ClusterType::ZeroPlain;
    if (!(e & kL2OffsetMask)) {
        // An external data file's cluster 0 is mapped by COPIED alone.
        if (has_data_file_ && (e & kOflagCopied)) return ClusterType::Normal;
        return ClusterType::Unallocated;
    }
    return ClusterType::Normal;
}

L2Entry L2Layout::decode(uint64_t word, uint64_t bitmap, uint64_t index) const {
    L2Entry e;
    e.index = index;
    e.word = word;
    e.bitmap = bitmap;
    e.type = type(word);
    if (e.type == ClusterType::Compressed) {
        const CompressedExtent c = decode_compressed(word, cluster_bits_);
        e.host = c.offset;
        e.bytes = c.bytes;
    } else {
        e.host = word & kL2OffsetMask;
        e.bytes = e.host ? uint64_t{1} << cluster_bits_ : 0;
    }
    return e;
}

namespace {

TableCache<L2Table>::Io l2_io(BlockNode &file, uint64_t cluster_size, std::function<Result<void>()> before_write) {
    TableCache<L2Table>::Io io;
    io.load = [&file, cluster_size](uint64_t offset) -> Result<std::shared_ptr<L2Table>> {
        std::vector<uint8_t> raw(cluster_size);
        file.debug_event(BlkdebugEvent::L2Load);
        QIMG_TRY(read_padded(file, offset, raw.data(), raw.size()));
        return std::make_shared<L2Table>(decode_l2_table(raw));
    };
    io.store = [&file](uint64_t offset, const L2Table &t) -> Result<void> {
        std::vector<uint8_t> raw = encode_l2_table(t);
        file.debug_event(BlkdebugEvent::L2Update);
        return file.write(offset, raw.data(), raw.size());
    };
    io.before_write = std::move(before_write);
    return io;
}

}  // namespace

L2Cache::L2Cache(BlockNode &file, uint64_t cluster_size, std::function<Result<void>()> before_write)
    : TableCache(std::max<size_t>(16, (32u << 20) / cluster_size), l2_io(file, cluster_size, std::move(before_write))) {}

}  // namespace qimg::qcow2
