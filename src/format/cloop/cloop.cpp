// The cloop format: the Linux compressed loopback images of Knoppix-era live
// CDs (version 2.0), read-only as QEMU reads them. Layout (big-endian):
//
//   0     128  a shell script, starting "#!/bin/sh\n#V2.0 Format\nmodprobe cloop ..."
//   128     4  block_size: guest bytes per block (a multiple of 512)
//   132     4  n_blocks
//   136     8  offsets[n_blocks + 1]: block i is the zlib stream in
//              [offsets[i], offsets[i+1]) of the file
//
// Every block inflates to exactly block_size bytes or the read fails (EIO).
// QEMU's checks and messages are kept: block_size non-zero, a multiple of
// 512 and at most 64 MiB; at most 512 MiB of offsets; offsets that never
// decrease, blocks of at most 128 MiB compressed. The offset table is read
// as far as the file holds it and the rest taken as zeroes (what QEMU's
// file driver reads past the end), so a file that claims millions of blocks
// costs memory in proportion to its own size, not to its claim. A block
// read likewise stops at the end of the file. The virtual size is
// n_blocks * (block_size / 512) sectors in 32-bit arithmetic, as QEMU
// computes it.
//
// Like QEMU, cloop reports no allocation of its own: every byte is data
// without a host offset.
//
// Concurrency: the offsets are immutable after open. The last block
// inflated is kept for the next read (sequential sector-sized reads would
// otherwise inflate the same block again and again); LastUnitCache guards that
// one entry (block/unit_cache.h), and blocks are inflated outside the lock.
#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <vector>

#include "block/driver.h"
#include "block/status.h"
#include "block/unit_cache.h"
#include "codec/codec.h"
#include "util/bytes.h"
#include "util/checked.h"

namespace qimg {
namespace {

constexpr std::string_view kMagic =
    "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
constexpr uint64_t kHeader = 128;
constexpr uint32_t kMaxBlock = 64u << 20;
constexpr uint64_t kMaxOffsetsBytes = 512u << 20;

struct Layout {
    uint32_t block_size = 0;
    uint32_t n_blocks = 0;
    uint64_t size = 0;
    std::vector<uint64_t> offsets;  // those the file holds; the rest are 0

    uint64_t offset(uint64_t i) const { return i < offsets.size() ? offsets[i] : 0; }
};

class CloopNode final : public BlockNode {
public:
    CloopNode(NodePtr file, Layout l) : l_(std::move(l)) { file_ = std::move(file); }

    std::string_view driver_name() const override { return "cloop"; }
    uint64_t length() const override { return l_.size; }
    // QEMU's cloop has no bdrv_get_info: info shows no dirty flag.
    bool has_driver_info() const override { return false; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (!range_fits(off, len, l_.size)) return make_error(EIO, "Request beyond the end of the image");
        auto *out = static_cast<uint8_t *>(buf);
        while (len > 0) {
            uint64_t index = off / l_.block_size, in_block = off % l_.block_size;
            size_t n = static_cast<size_t>(std::min<uint64_t>(len, l_.block_size - in_block));
            QIMG_ASSIGN(LastUnitCache::Unit block, get_block(index));
            std::memcpy(out, block->data() + in_block, n);
            off += n;
            out += n;
            len -= n;
        }
        return ok();
    }

    Result<BlockStatus> block_status(uint64_t, uint64_t len) override { return unmapped_data_status(len); }

private:
    Result<LastUnitCache::Unit> get_block(uint64_t index) {
        if (auto hit = cache_.find(index)) return hit;
        uint64_t start = l_.offset(index), end = l_.offset(index + 1);
        uint64_t flen = file_->length();
        uint64_t avail = start < flen ? std::min(end, flen) - start : 0;
        std::vector<uint8_t> in(static_cast<size_t>(avail));
        if (avail) QIMG_TRY(file_->read(start, in.data(), in.size()));
        auto block = std::make_shared<std::vector<uint8_t>>(l_.block_size);
        auto n = codec::decompress_stream(codec::Codec::Zlib, 15, in, *block);
        if (!n || *n != l_.block_size) return make_error(EIO, "Input/output error");
        cache_.store(index, block);
        return LastUnitCache::Unit(block);
    }

    Layout l_;
    LastUnitCache cache_;
};

// QEMU compares as much of the magic as the probe buffer holds.
int cloop_probe(std::span<const uint8_t> head, const std::string &) {
    size_t n = std::min(kMagic.size(), head.size());
    return std::memcmp(head.data(), kMagic.data(), n) == 0 ? 2 : 0;
}

Result<NodePtr> cloop_open(OpenRequest &req) {
    std::array<uint8_t, 8> b{};
    QIMG_TRY(read_padded(*req.file, kHeader, b.data(), b.size()));
    ByteReader r(b);
    Layout l;
    l.block_size = r.be32(0);
    if (l.block_size % 512)
        return make_error(EINVAL, "block_size " + std::to_string(l.block_size) + " must be a multiple of 512");
    if (l.block_size == 0) return make_error(EINVAL, "block_size cannot be zero");
    if (l.block_size > kMaxBlock)
        return make_error(EINVAL, "block_size " + std::to_string(l.block_size) + " must be 64 MB or less");
    l.n_blocks = r.be32(4);
    constexpr uint32_t kMaxBlocks = (UINT32_MAX - 1) / 8;
    if (l.n_blocks > kMaxBlocks)
        return make_error(EINVAL, "n_blocks " + std::to_string(l.n_blocks) + " must be " +
                                      std::to_string(kMaxBlocks) + " or less");
    uint64_t entries = uint64_t{l.n_blocks} + 1;
    // QEMU computes this in 32 bits; with n_blocks bounded above it cannot wrap.
    if (entries * 8 > kMaxOffsetsBytes)
        return make_error(EINVAL, "image requires too many offsets, try increasing block size");

    uint64_t flen = req.file->length();
    uint64_t table = kHeader + 8;
    uint64_t held = flen > table ? std::min(entries, (flen - table) / 8) : 0;
    std::vector<uint8_t> raw(static_cast<size_t>(held * 8));
    if (held) QIMG_TRY(req.file->read(table, raw.data(), raw.size()));
    ByteReader tr(raw);
    l.offsets.resize(static_cast<size_t>(held));
    for (size_t i = 0; i < held; ++i) l.offsets[i] = tr.be64(i * 8);
    // Past what the file holds every entry is 0: only the first of them can
    // break the order (or none, when the last held one is 0 too).
    uint64_t checked = std::min(entries, held + 1);
    for (uint64_t i = 1; i < checked; ++i) {
        uint64_t prev = l.offset(i - 1), cur = l.offset(i);
        if (cur < prev)
            return make_error(EINVAL, "offsets not monotonically increasing at index " + std::to_string(i) +
                                          ", image file is corrupt");
        if (cur - prev > 2ull * kMaxBlock)
            return make_error(EINVAL,
                              "invalid compressed block size at index " + std::to_string(i) + ", image file is corrupt");
    }
    uint32_t sectors = l.n_blocks * (l.block_size / 512);  // QEMU's 32-bit product
    l.size = uint64_t{sectors} * 512;
    return NodePtr(std::make_shared<CloopNode>(req.file, std::move(l)));
}

const Driver *make_cloop_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "cloop";
        d.probe = cloop_probe;
        d.open = cloop_open;
        d.read_only = true;  // opening for writing: "Image is read-only", as QEMU
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_cloop_driver);

}  // namespace qimg
