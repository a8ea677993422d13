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

namespace {

TableCache<L2Table>::Io l2_io(BlockNode &file, uint64_t cluster_size, std::function<Result<void>()> before_write) {
    TableCache<L2Table>::Io io;
    io.load = [&file, cluster_size](uint64_t offset) -> Result<std::shared_ptr<L2Table>> {
        std::vector<uint8_t> raw(cluster_size);
        file.debug_event(BlkdebugEvent::L2Load);
        QIMG_TRY(read_padded(file, offset, raw.data(), raw.size()));
        auto t = std::make_shared<L2Table>(cluster_size / 8);
        for (size_t i = 0; i < t->size(); i++) (*t)[i] = be64(&raw[i * 8]);
        return t;
    };
    io.store = [&file, cluster_size](uint64_t offset, const L2Table &t) -> Result<void> {
        std::vector<uint8_t> raw(cluster_size);
        for (size_t i = 0; i < t.size(); i++) put_be64(&raw[i * 8], t[i]);
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
