// The vdi driver: VirtualBox VDI 1.1 images (VirtualBox's VDICore.h; QEMU's
// block/vdi.c is the behaviour reference), dynamic and static, read and
// written as qemu-img 7.2 does.
//
// Layout. A 512-byte little-endian header at offset 0 (format.h) names the
// block map (one 32-bit entry per 1 MiB guest block: the index of the block
// in the data area, 0xffffffff never allocated, 0xfffffffe discarded; both
// read as zeroes) and the data area, where block index i lives at
// offset_data + i * 1 MiB. The header counts the allocated blocks; a new
// block takes index blocks_allocated, so blocks are appended. A static image
// is one whose every block is allocated at create (entry i = i).
//
// Writes, as QEMU: a new block is written whole (zeroes around the guest
// data), and the header (with the new count) and the block map sectors that
// changed name it. Beyond QEMU, for a kill at any instant, the metadata is
// published late (as the qcow, qed and vpc drivers do): new blocks are
// named in memory at once and on disk at the next flush, which flushes the
// data first and then, when the block map follows the header directly
// (every image qemu-img or VirtualBox makes), writes the header and the map
// up to the last changed sector in one write, so the count and the map never
// disagree on disk: a kill leaves the blocks unnamed (space the next
// allocation takes again) or named with their data in place. Once per
// flush rather than per block, the map prefix costs little (4 MiB for a
// 1 TiB disk). Where the map does not follow the header, the header goes
// first: a kill between the two leaves a count too high, which `check`
// reports as a mismatch (the blocks are only lost space), but never two
// map entries sharing a block.
//
// As QEMU, a block map reaching past the end of the file reads as zeroes
// there (entries naming block 0); only the part inside the file is held in
// memory. Beyond QEMU (a hostile image gets an error, not a wrong layout):
// writes are refused when the data area overlaps the header or the map, and
// allocations when a map entry already uses the index the count names.
//
// Concurrency: the block map, the header copy and the unpublished range
// are guarded by mu_. Reads and writes into allocated blocks look the entry
// up under the lock and do their I/O outside it (an entry never changes once
// allocated); a write that allocates holds the lock while it writes its new
// blocks, and names them in memory once they are written.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/open.h"
#include "block/table_check.h"
#include "format/vdi/format.h"
#include "format/vdi/vdi.h"
#include "util/checked.h"
#include "util/endian.h"

namespace qimg::vdi {
namespace {

constexpr uint64_t kNone = UINT64_MAX;  // no host offset: the block reads as zeroes

class VdiNode final : public BlockNode {
public:
    VdiNode(NodePtr file, const HeaderBytes &raw, const Header &h, std::vector<uint8_t> bmap)
        : raw_(raw), h_(h), bmap_(std::move(bmap)) {
        file_ = std::move(file);
        // QEMU writes its parsed header back (the disk size rounded up) with
        // its first allocation.
        put_le64(raw_.data() + hdr::disk_size.offset, h_.disk_size);
        uint64_t bmap_end = uint64_t(h_.offset_bmap) + h_.bmap_bytes();
        data_overlaps_ = h_.offset_data < kHeaderSize || h_.offset_bmap < kHeaderSize ||
                         (h_.bmap_bytes() > 0 && bmap_end > h_.offset_data);
        uint64_t held = std::min<uint64_t>(h_.blocks_in_image, bmap_.size() / 4);
        if (held < h_.blocks_in_image) max_entry_ = 0;
        for (uint64_t i = 0; i < held; ++i) {
            uint32_t e = entry(i);
            if (is_allocated(e)) max_entry_ = std::max<int64_t>(max_entry_, e);
        }
    }

    ~VdiNode() override {
        if (!read_only_) (void)publish();
    }

    std::string_view driver_name() const override { return "vdi"; }
    uint64_t length() const override { return h_.disk_size; }
    uint32_t cluster_size() const override { return kBlockSize; }
    bool has_zero_init() const override { return is_static() ? file_->has_zero_init() : true; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        auto *out = static_cast<uint8_t *>(buf);
        while (len > 0) {
            size_t n = chunk(off, len);
            uint64_t host = host_offset(off);
            if (host == kNone) std::memset(out, 0, n);
            else QIMG_TRY(file_->read(host, out, n));
            off += n, out += n, len -= n;
        }
        return ok();
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        if (data_overlaps_)
            return make_error(EIO, "block-vdi: the data area overlaps the header or the block map; "
                                   "refusing to write");
        auto *in = static_cast<const uint8_t *>(buf);
        while (len > 0) {
            size_t n = chunk(off, len);
            uint64_t host = host_offset(off);
            // The rest of the request holds the lock: it allocates.
            if (host == kNone) return write_allocating(off, in, len);
            QIMG_TRY(file_->write(host, in, n));
            off += n, in += n, len -= n;
        }
        return ok();
    }

    Result<void> flush() override {
        QIMG_TRY(publish());
        return BlockNode::flush();
    }

    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        BlockStatus s;
        if (off >= h_.disk_size) return s;
        len = std::min(len, h_.disk_size - off);
        uint64_t host = host_offset(off);
        if (host != kNone) {
            s.flags = kStatusData | kStatusOffsetValid | (is_static() ? uint32_t(kStatusRecurse) : 0u);
            s.bytes = chunk(off, len);
            s.host_offset = host;
            s.host_node = file_.get();
            return s;
        }
        // A run of unallocated or discarded blocks reads as zeroes.
        s.flags = kStatusZero;
        while (len > 0 && host_offset(off) == kNone) {
            uint64_t n = chunk(off, len);
            s.bytes += n, off += n, len -= n;
        }
        return s;
    }

    // QEMU's vdi check: every allocated entry names a block below
    // blocks_in_image that no other entry names, and the header's count
    // matches. No repair (qemu-img: "does not support checks").
    Result<CheckReport> check(CheckRepair repair) override {
        if (repair != CheckRepair::None) return make_error(ENOTSUP, "This image format does not support checks");
        std::lock_guard lk(mu_);
        CheckReport rep;
        // One bit per block (at most 64 MiB for the largest map).
        std::vector<bool> used(h_.blocks_in_image, false);
        uint32_t allocated = 0;
        uint64_t held = std::min<uint64_t>(h_.blocks_in_image, bmap_.size() / 4);
        for (uint32_t i = 0; i < held; ++i) {
            uint32_t e = entry(i);
            if (!is_allocated(e)) continue;
            if (e >= h_.blocks_in_image) {
                std::fprintf(stderr, "ERROR: block index %" PRIu32 " too large, is %" PRIu32 "\n", i, e);
                rep.corruptions++;
                continue;
            }
            allocated++;
            if (!used[e]) {
                used[e] = true;
            } else {
                // QEMU's words: it names the block index twice.
                std::fprintf(stderr, "ERROR: block index %" PRIu32 " also used by %" PRIu32 "\n", e, e);
                rep.corruptions++;
            }
        }
        // Entries past the end of the file all name block 0: counted at
        // once, and (beyond QEMU, which prints one line each: up to 2^29 of
        // them) reported in at most kMaxLines lines.
        if (uint64_t virt = h_.blocks_in_image - held) {
            constexpr uint64_t kMaxLines = 16;
            uint64_t dups = used[0] ? virt : virt - 1;
            used[0] = true;
            allocated += uint32_t(virt);
            for (uint64_t k = 0; k < std::min(dups, kMaxLines); ++k)
                std::fprintf(stderr, "ERROR: block index 0 also used by 0\n");
            if (dups > kMaxLines)
                std::fprintf(stderr,
                             "ERROR: block index 0 also used by 0 (%" PRIu64
                             " more times: block map entries past the end of the file)\n",
                             dups - kMaxLines);
            rep.corruptions += int64_t(dups);
        }
        if (allocated != h_.blocks_allocated) {
            std::fprintf(stderr, "ERROR: allocated blocks mismatch, is %" PRIu32 ", should be %" PRIu32 "\n",
                         allocated, h_.blocks_allocated);
            rep.corruptions++;
        }
        return rep;
    }

private:
    bool is_static() const { return h_.image_type == kTypeStatic; }
    // Entries past the part of the map the file holds read as 0.
    uint32_t entry(uint64_t idx) const { return 4 * idx < bmap_.size() ? le32(bmap_.data() + 4 * idx) : 0; }

    Result<void> check_range(uint64_t off, uint64_t len) const {
        if (!range_fits(off, len, h_.disk_size)) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }
    // The part of [off, off+len) inside off's block.
    size_t chunk(uint64_t off, uint64_t len) const {
        return size_t(std::min<uint64_t>(len, kBlockSize - off % kBlockSize));
    }
    uint64_t block_offset(uint32_t e) const { return uint64_t(h_.offset_data) + uint64_t(e) * kBlockSize; }
    // The host offset of guest byte `off`, kNone when its block reads as
    // zeroes.
    uint64_t host_offset(uint64_t off) {
        std::lock_guard lk(mu_);
        return host_offset_locked(off);
    }
    uint64_t host_offset_locked(uint64_t off) const {
        uint64_t idx = off / kBlockSize;
        if (idx >= h_.blocks_in_image) return kNone;
        uint32_t e = entry(idx);
        if (!is_allocated(e)) return kNone;
        return block_offset(e) + off % kBlockSize;
    }

    // Writes [off, off+len) where at least the first block needs
    // allocating: every new block whole, then named in memory; publish()
    // names them on disk.
    Result<void> write_allocating(uint64_t off, const uint8_t *in, size_t len) {
        std::lock_guard lk(mu_);
        std::vector<uint8_t> block;
        while (len > 0) {
            size_t n = chunk(off, len);
            uint64_t idx = off / kBlockSize;
            uint64_t host = host_offset_locked(off);
            if (host != kNone) {
                QIMG_TRY(file_->write(host, in, n));
            } else {
                uint32_t next = h_.blocks_allocated;
                if (idx >= h_.blocks_in_image || 4 * idx + 4 > bmap_.size())
                    return make_error(EIO, "block-vdi: write past the block map");
                if (int64_t(next) <= max_entry_)
                    return make_error(EIO, "block-vdi: the header's allocated block count (" +
                                               std::to_string(h_.blocks_allocated) +
                                               ") is below a block the map uses; refusing to allocate");
                if (!is_allocated(next)) return make_error(EFBIG, "File too large");
                if (block.empty()) block.resize(kBlockSize);
                size_t in_block = off % kBlockSize;
                std::memset(block.data(), 0, in_block);
                std::memcpy(block.data() + in_block, in, n);
                std::memset(block.data() + in_block + n, 0, kBlockSize - in_block - n);
                QIMG_TRY(file_->write(block_offset(next), block.data(), block.size()));
                put_le32(bmap_.data() + 4 * idx, next);
                h_.blocks_allocated = next + 1;
                put_le32(raw_.data() + hdr::blocks_allocated.offset, h_.blocks_allocated);
                max_entry_ = std::max<int64_t>(max_entry_, next);
                dirty_first_ = std::min(dirty_first_, idx);
                dirty_last_ = std::max<int64_t>(dirty_last_, int64_t(idx));
            }
            off += n, in += n, len -= n;
        }
        return ok();
    }

    // Names on disk the blocks allocated since the last call (see the top
    // comment): a flush (their data), then the header and the block map
    // sectors holding the changed entries.
    Result<void> publish() {
        std::lock_guard lk(mu_);
        if (dirty_last_ < 0) return ok();
        QIMG_TRY(file_->flush());
        uint64_t s0 = dirty_first_ * 4 / kSectorSize * kSectorSize;
        // The map held may end inside a sector (a file truncated there).
        uint64_t s1 = std::min<uint64_t>((uint64_t(dirty_last_) * 4 / kSectorSize + 1) * kSectorSize, bmap_.size());
        if (h_.offset_bmap == kHeaderSize) {
            std::vector<uint8_t> buf(kHeaderSize + s1);
            std::memcpy(buf.data(), raw_.data(), kHeaderSize);
            std::memcpy(buf.data() + kHeaderSize, bmap_.data(), s1);
            QIMG_TRY(file_->write(0, buf.data(), buf.size()));
        } else {
            QIMG_TRY(file_->write(0, raw_.data(), raw_.size()));
            QIMG_TRY(file_->write(h_.offset_bmap + s0, bmap_.data() + s0, s1 - s0));
        }
        dirty_first_ = UINT64_MAX;
        dirty_last_ = -1;
        return ok();
    }

    HeaderBytes raw_;
    std::mutex mu_;
    Header h_;
    std::vector<uint8_t> bmap_;  // little-endian entries, whole sectors as on disk
    bool data_overlaps_ = false;
    int64_t max_entry_ = -1;
    // Block map entries changed in memory and not yet on disk (publish()).
    uint64_t dirty_first_ = UINT64_MAX;
    int64_t dirty_last_ = -1;
};

int vdi_probe(std::span<const uint8_t> head, const std::string &) { return has_signature(head) ? 100 : 0; }

Result<NodePtr> vdi_open(OpenRequest &req) {
    BlockNode &file = *req.file;
    HeaderBytes raw{};
    QIMG_TRY(read_padded(file, 0, raw.data(), raw.size()));
    QIMG_ASSIGN(Header h, parse_header(raw));
    // Only the part of the map inside the file is held (so its size is
    // bounded by the file's); entries past the end of the file read as 0,
    // as QEMU reads them (zeroes past EOF: every such block at index 0).
    uint64_t flen = file.length();
    uint64_t held = h.offset_bmap >= flen ? 0 : std::min<uint64_t>(h.bmap_bytes(), flen - h.offset_bmap);
    held = (held + 3) / 4 * 4;
    std::vector<uint8_t> bmap(held);
    if (held) QIMG_TRY(read_padded(file, h.offset_bmap, bmap.data(), bmap.size()));
    auto node = std::make_shared<VdiNode>(req.file, raw, h, std::move(bmap));
    node->set_read_only(!req.flags.read_write);
    return NodePtr(node);
}

const Driver *make_vdi_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "vdi";
        d.probe = vdi_probe;
        d.open = vdi_open;
        d.create = vdi_create;
        d.create_options = vdi_create_options();
        d.supports_check = true;
        return d;
    }();
    return &d;
}

}  // namespace
}  // namespace qimg::vdi

namespace qimg {
QIMG_REGISTER_DRIVER(vdi::make_vdi_driver);
}  // namespace qimg
