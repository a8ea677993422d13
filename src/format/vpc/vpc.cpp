// The vpc driver: VHD images (Microsoft's "Virtual Hard Disk Image Format
// Specification"; libyal/libvhdi's "Virtual Hard Disk (VHD) image format"),
// read and written as qemu-img 7.2 does.
//
// Layout. Every VHD ends with a 512-byte footer ("conectix"). A fixed disk
// is the guest data followed by that footer. A dynamic disk starts with a
// copy of the footer, then a dynamic header ("cxsparse") naming the block
// allocation table (BAT: one big-endian sector number per block,
// 0xffffffff = unallocated); an allocated block is its sector bitmap
// followed by the block's data, and blocks are appended at the end of the
// file, the footer moving behind them. A differencing disk is read, as QEMU
// reads it, as a dynamic disk without its parent.
//
// As QEMU: the footer at offset 0 wins (so a fixed disk is only found at the
// end), the footer checksum is verified and the dynamic header's is not,
// sector bitmaps are not consulted on reads (an allocated block is data,
// an unallocated one zeroes) and every write to a block sets its whole
// bitmap. The disk size comes from the CHS geometry or the current-size
// field by the creator application (format.cpp, disk_sectors).
//
// Beyond QEMU (a hostile image gets an error instead of a wrong layout):
// a BAT entry whose block overlaps the footer copy, the dynamic header or
// the BAT itself is refused at open.
//
// Allocation publishes late (as the qcow and qed drivers do): a new block
// gets its place at the end of the file and its guest data at once, but its
// sector bitmap and BAT entry reach the file only at the next flush (data
// flushed, then bitmaps and BAT entries, then a flush). A kill before that
// leaves the block unnamed, so the image reads as before; the space is
// taken again by the next allocation (the end of the block area is
// computed from the BAT at open). qemu-img writes each BAT entry with no
// flush at all; the ordering costs two flushes per flush() instead of two
// per block.
//
// Concurrency: the BAT, the end of the block area (where the next block
// goes and the footer sits), the blocks awaiting publication and the set of
// blocks whose bitmap this node has written are guarded by mu_. A block's
// BAT entry never changes once set, so guest data is read and written
// outside the lock once its host offset is known, including the first
// write into a block just allocated.
#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/open.h"
#include "block/status.h"
#include "block/table_check.h"
#include "format/vpc/format.h"
#include "format/vpc/vpc.h"
#include "util/checked.h"
#include "util/option_map.h"

namespace qimg::vpc {
namespace {

struct Dynamic {
    uint64_t header_offset = 0;
    uint64_t bat_offset = 0;
    uint32_t block_size = 0;
    uint32_t bitmap_size = 0;
    std::vector<uint32_t> bat;
    uint64_t free_offset = 0;  // where the next block goes: the end footer's place
};

class VpcNode final : public BlockNode {
public:
    VpcNode(NodePtr file, const FooterBytes &footer, bool fixed, uint64_t size, uint64_t footer_pos, Dynamic dyn)
        : footer_(footer), fixed_(fixed), size_(size), footer_pos_(footer_pos), d_(std::move(dyn)) {
        file_ = std::move(file);
        bitmap_done_.assign(d_.bat.size(), false);
    }
    ~VpcNode() override {
        if (!read_only_) (void)publish();
    }

    std::string_view driver_name() const override { return "vpc"; }
    uint64_t length() const override { return size_; }
    uint32_t cluster_size() const override { return fixed_ ? 0 : d_.block_size; }
    bool has_zero_init() const override { return fixed_ ? file_->has_zero_init() : true; }
    // A fixed disk's guest bytes have fixed places in the file (as raw's);
    // a dynamic disk places blocks in the order they are first written.
    bool layout_follows_write_order() const override { return fixed_ ? file_->layout_follows_write_order() : true; }
    void cache_advice(CacheAdvice a, uint64_t off, uint64_t len) override {
        if (len == 0) return file_->cache_advice(a);
        if (fixed_) file_->cache_advice(a, off, len);
    }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        if (fixed_) return file_->read(off, buf, len);
        auto *out = static_cast<uint8_t *>(buf);
        while (len > 0) {
            size_t n = chunk(off, len);
            uint64_t host = host_offset(off);
            if (host == 0) std::memset(out, 0, n);
            else QIMG_TRY(file_->read(host, out, n));
            off += n, out += n, len -= n;
        }
        return ok();
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        if (fixed_) {
            // A fixed disk whose size field claims more than the file holds
            // (hostile or damaged): guest writes must not overwrite or move
            // its only footer. QEMU would write over it.
            if (!range_fits(off, len, footer_pos_))
                return make_error(EIO, "block-vpc: write past the footer of a fixed disk");
            return file_->write(off, buf, len);
        }
        auto *in = static_cast<const uint8_t *>(buf);
        while (len > 0) {
            size_t n = chunk(off, len);
            QIMG_TRY(write_in_block(off, in, n));
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
        if (off >= size_) return s;
        len = std::min(len, size_ - off);
        if (fixed_) {
            s.flags = kStatusData | kStatusOffsetValid | kStatusRecurse;
            s.bytes = len;
            s.host_offset = off;
            s.host_node = file_.get();
            return s;
        }
        uint64_t host = host_offset(off);
        if (host != 0) {
            s.flags = kStatusData | kStatusOffsetValid;
            s.bytes = chunk(off, len);
            s.host_offset = host;
            s.host_node = file_.get();
            return s;
        }
        // A run of unallocated blocks reads as zeroes.
        s.flags = kStatusZero;
        while (len > 0 && host_offset(off) == 0) {
            uint64_t n = chunk(off, len);
            s.bytes += n, off += n, len -= n;
        }
        return s;
    }

private:
    Result<void> check_range(uint64_t off, uint64_t len) const {
        if (!range_fits(off, len, size_)) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }
    // The part of [off, off+len) inside off's block.
    size_t chunk(uint64_t off, uint64_t len) const {
        return size_t(std::min<uint64_t>(len, d_.block_size - off % d_.block_size));
    }
    // The host offset of guest byte `off`, 0 when its block is unallocated
    // (no block can start at 0: the footer copy is there).
    uint64_t host_offset(uint64_t off) {
        std::lock_guard lk(mu_);
        return host_offset_locked(off);
    }
    uint64_t host_offset_locked(uint64_t off) const {
        uint64_t idx = off / d_.block_size;
        if (idx >= d_.bat.size() || d_.bat[idx] == kUnallocated) return 0;
        return uint64_t(d_.bat[idx]) * 512 + d_.bitmap_size + off % d_.block_size;
    }

    // Writes [off, off+n), inside one block.
    Result<void> write_in_block(uint64_t off, const uint8_t *in, size_t n) {
        uint64_t idx = off / d_.block_size;
        uint64_t host;
        {
            std::lock_guard lk(mu_);
            host = host_offset_locked(off);
            if (host == 0) {
                QIMG_TRY(allocate(idx));
                host = host_offset_locked(off);
            } else if (!bitmap_done_[idx]) {
                // As QEMU: the first write to a block marks all its sectors
                // present, so other readers see the data.
                QIMG_TRY(write_full_bitmap(uint64_t(d_.bat[idx]) * 512));
                QIMG_TRY(file_->flush());
                bitmap_done_[idx] = true;
            }
        }
        return file_->write(host, in, n);
    }

    Result<void> write_full_bitmap(uint64_t at) {
        if (d_.bitmap_size == 0) return ok();
        std::vector<uint8_t> bm(d_.bitmap_size, 0xff);
        return file_->write(at, bm.data(), bm.size());
    }

    // Gives block `idx` its place at the end of the block area, in memory
    // only as far as other readers of the file are concerned: the footer
    // moves to the new end of the file at once (the file always ends with
    // a footer; the old one, where the new block's bitmap goes, stays whole
    // until publish()), and the BAT entry waits for publish(). Holds mu_.
    Result<void> allocate(uint64_t idx) {
        // Open checked that the BAT covers the disk; kept as a guard.
        if (idx >= d_.bat.size()) return make_error(EIO, "block-vpc: write past the BAT");
        uint64_t start = d_.free_offset;
        uint64_t data = start + d_.bitmap_size;
        uint64_t end = data + d_.block_size;
        if (start / 512 >= kUnallocated || end > uint64_t(INT64_MAX) - kFooterSize)
            return make_error(EFBIG, "File too large");
        // Space left over by a killed allocation is not zero: clear the
        // block before any of it is written.
        if (file_->length() > start + kFooterSize) QIMG_TRY(file_->write_zeroes(data, d_.block_size, 0));
        QIMG_TRY(file_->write(end, footer_.data(), footer_.size()));
        d_.bat[idx] = uint32_t(start / 512);
        d_.free_offset = end;
        bitmap_done_[idx] = true;
        unpublished_.push_back(uint32_t(idx));
        return ok();
    }

    // Makes the blocks allocated since the last call part of the image:
    //   1. a flush: their guest data (and the footer at the new end of the
    //      file) is durable before anything names them;
    //   2. each block's bitmap (all ones, over what was the footer for the
    //      first of them) and its BAT entry;
    // and the caller's flush makes those durable. Killed before 2, the
    // blocks are unused space; during 2, a block is either named with its
    // data in place or not named.
    Result<void> publish() {
        std::lock_guard lk(mu_);
        if (unpublished_.empty()) return ok();
        QIMG_TRY(file_->flush());
        std::sort(unpublished_.begin(), unpublished_.end());
        for (uint32_t idx : unpublished_) QIMG_TRY(write_full_bitmap(uint64_t(d_.bat[idx]) * 512));
        // BAT entries in runs of neighbouring indices, one write each.
        std::vector<uint8_t> run;
        for (size_t i = 0; i < unpublished_.size();) {
            size_t j = i;
            run.clear();
            do {
                uint8_t entry[4];
                put_be32(entry, d_.bat[unpublished_[j]]);
                run.insert(run.end(), entry, entry + 4);
                ++j;
            } while (j < unpublished_.size() && unpublished_[j] == unpublished_[j - 1] + 1);
            QIMG_TRY(file_->write(d_.bat_offset + 4 * uint64_t(unpublished_[i]), run.data(), run.size()));
            i = j;
        }
        unpublished_.clear();
        return ok();
    }

    FooterBytes footer_;
    bool fixed_;
    uint64_t size_;
    uint64_t footer_pos_;  // a fixed disk's footer, found at the end; UINT64_MAX: at 0
    std::mutex mu_;
    Dynamic d_;
    std::vector<bool> bitmap_done_;
    std::vector<uint32_t> unpublished_;  // blocks allocated, BAT entries not yet written
};

int vpc_probe(std::span<const uint8_t> head, const std::string &) { return has_footer_cookie(head) ? 100 : 0; }

const char *kTruncated = "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.";

// The dynamic header and BAT, each field checked before use in QEMU's
// order and words; the BAT is read only once it is known to end inside the
// file (so its size is bounded by the file's).
Result<Dynamic> open_dynamic(BlockNode &file, const Footer &f, bool footer_at_0, uint64_t size) {
    Dynamic d;
    d.header_offset = f.data_offset;
    uint8_t h[kDynHeaderSize];
    if (f.data_offset > uint64_t(INT64_MAX) - kDynHeaderSize)
        return make_error(EIO, "Error reading dynamic VHD header");
    auto rr = read_padded(file, f.data_offset, h, sizeof h);
    if (!rr) return Err(rr.error().prepended("Error reading dynamic VHD header: "));
    if (std::memcmp(h, "cxsparse", 8) != 0) return make_error(EINVAL, "Invalid header magic");
    ByteReader r(std::span<const uint8_t>(h, sizeof h));
    d.block_size = r.get(dyn::block_size);
    uint32_t entries = r.get(dyn::max_table_entries);
    d.bat_offset = r.get(dyn::table_offset);
    if (!std::has_single_bit(d.block_size) || d.block_size < 512)
        return make_error(EINVAL, "Invalid block size " + std::to_string(d.block_size));
    d.bitmap_size = ((d.block_size / (8 * 512)) + 511) & ~511u;
    if (size / d.block_size > 0xffffffffull) return make_error(EINVAL, "Too many blocks");
    if (uint64_t(entries) * d.block_size < size) return make_error(EINVAL, "Page table too small");
    if (entries > uint32_t(INT32_MAX) / 4)
        return make_error(EINVAL, "Max Table Entries too large (" + std::to_string(int32_t(entries)) + ")");
    uint64_t flen = file.length();
    uint64_t bat_bytes = uint64_t(entries) * 4;
    TableCheck tc = check_table(d.bat_offset, entries, 4, TableLimits{});
    auto bat_end = checked_add(d.bat_offset, bat_bytes);
    auto free0 = bat_end ? checked_align_up(*bat_end, 512) : std::nullopt;
    // QEMU reads a BAT past the end of the file as zeroes and then fails
    // with its "truncated" message: the same message, without the read.
    if (!tc.ok() || !free0 || *free0 > flen) return make_error(EINVAL, kTruncated);
    std::vector<uint8_t> raw(bat_bytes);
    if (bat_bytes) QIMG_TRY(file.read(d.bat_offset, raw.data(), raw.size()));
    d.bat.resize(entries);
    d.free_offset = *free0;
    for (uint32_t i = 0; i < entries; ++i) {
        uint32_t e = be32(raw.data() + 4 * uint64_t(i));
        d.bat[i] = e;
        if (e == kUnallocated) continue;
        uint64_t start = uint64_t(e) * 512;
        uint64_t next = start + d.bitmap_size + d.block_size;
        d.free_offset = std::max(d.free_offset, next);
        uint64_t len = next - start;
        if ((footer_at_0 && extents_overlap(start, len, 0, kFooterSize)) ||
            extents_overlap(start, len, d.header_offset, kDynHeaderSize) ||
            extents_overlap(start, len, d.bat_offset, bat_bytes))
            return make_error(EINVAL, "block-vpc: BAT entry " + std::to_string(i) + " overlaps the image metadata");
    }
    if (d.free_offset > flen) return make_error(EINVAL, kTruncated);
    return d;
}

Result<NodePtr> vpc_open(OpenRequest &req) {
    std::string calc = take_option(req.options, "force_size_calc").value_or("");
    if (!calc.empty() && calc != "chs" && calc != "current_size")
        return make_error(EINVAL, "Invalid size calculation mode: '" + calc + "'");
    BlockNode &file = *req.file;
    FooterBytes fb{};
    auto rr = read_padded(file, 0, fb.data(), fb.size());
    if (!rr) return Err(rr.error().prepended("Unable to read VHD header: "));
    bool at_0 = has_footer_cookie(fb);
    uint64_t footer_pos = UINT64_MAX;
    if (!at_0) {
        // A fixed disk has its footer only at the end.
        uint64_t flen = file.length();
        if (flen < kFooterSize) return make_error(EINVAL, "File too small for a VHD header");
        footer_pos = flen - kFooterSize;
        QIMG_TRY(file.read(footer_pos, fb.data(), fb.size()));
        if (!has_footer_cookie(fb) || be32(fb.data() + footer::disk_type.offset) != kTypeFixed)
            return make_error(EINVAL, "invalid VPC image");
    }
    QIMG_ASSIGN(Footer f, parse_footer(fb));
    uint64_t sectors = disk_sectors(f, calc);
    if (sectors > kMaxSectors) {
        std::string name = req.file->filename();
        return make_error(EFBIG, "Could not open '" + name + "': File too large");
    }
    uint64_t size = sectors * 512;
    Dynamic d;
    // As QEMU: a footer at offset 0 means a dynamic (or differencing)
    // layout, whatever the type says; the type picks the data path.
    if (at_0) { QIMG_ASSIGN(d, open_dynamic(file, f, true, size)); }
    bool fixed = f.disk_type == kTypeFixed;
    if (fixed) d.block_size = 1u << 30;  // unused by the fixed data path
    auto node = std::make_shared<VpcNode>(req.file, fb, fixed, size, footer_pos, std::move(d));
    node->set_read_only(!req.flags.read_write);
    return NodePtr(node);
}

const Driver *make_vpc_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "vpc";
        d.probe = vpc_probe;
        d.open = vpc_open;
        d.create = vpc_create;
        d.create_options = vpc_create_options();
        d.strong_options = {"force_size_calc"};
        return d;
    }();
    return &d;
}

}  // namespace
}  // namespace qimg::vpc

namespace qimg {
QIMG_REGISTER_DRIVER(vpc::make_vpc_driver);
}  // namespace qimg
