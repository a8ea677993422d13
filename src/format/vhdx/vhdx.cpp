// The vhdx driver: VHDX images (Microsoft's "VHDX Format Specification"
// v1.00; libyal/libvhdi's "Virtual Hard Disk version 2 (VHDX) image
// format"), read as qemu-img 7.2 reads them. On-disk structures are in
// format.h, the log in log.h.
//
// Open, in QEMU's order and with its errors: the file type identifier, the
// current of the two headers, the log (replayed on a read-write open,
// refused on a read-only one), the first region table (BAT and metadata
// regions; regions may not overlap each other or the log), the metadata
// items (block size 1..256 MiB, 512-byte logical sectors), the BAT (every
// fully present block inside the file and outside the regions; skipped
// when opened for `check`, which reports those faults instead).
//
// As QEMU 7.2: a differencing disk (parent locator) is refused
// ("Operation not supported"); payload blocks NOT_PRESENT, UNDEFINED,
// ZERO and UNMAPPED read as zeroes, FULLY_PRESENT from the file, any other
// state fails the read with EIO; block status is the generic answer of a
// format without one (all data, no host offset), which `map` shows.
//
// Beyond QEMU (a hostile image gets an error): regions must start after
// the header section and end inside the file (the BAT is so bounded by the
// file size, and by kMaxBatBytes), metadata items must lie inside their
// region, and the log is searched and replayed with bounds (log.h).
//
// Writes: the first write of a session updates both headers (new data
// write GUID), as QEMU does. A write to a block that is not present
// allocates one at the end of the file (1 MiB aligned, the file extended
// by the block size, so the rest of the block is a hole reading as
// zeroes), writes the guest data, flushes, and only then publishes the
// BAT entry (written in place, then flushed): a kill leaves either the old
// entry or one naming data already on disk. QEMU passes the BAT update
// through the log instead; the image is the same once the log is empty.
// write_zeroes leaves blocks that read as zeroes alone.
//
// The BAT is read in pages of kBatPageEntries entries through a bounded
// table cache (block/table_cache.h): QEMU loads the whole table, up to
// 512 MiB for a 64 TiB disk of 1 MiB blocks, which a hostile header can
// ask for; here memory stays under kBatCacheBytes whatever the header
// says. Entries are written through to the file (the cached page is
// updated in place), so the cache never holds dirty pages.
//
// Concurrency: mu_ guards the BAT cache, the headers and the file's end during
// allocation. A present block never moves, so its guest data is read and
// written outside the lock once its offset is known.
#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/open.h"
#include "block/status.h"
#include "block/table_cache.h"
#include "format/vhdx/format.h"
#include "format/vhdx/log.h"
#include "format/vhdx/vhdx.h"
#include "util/checked.h"
#include "util/progname.h"

namespace qimg::vhdx {
namespace {

// A BAT larger than this is refused: it is what a 64 TiB disk (the
// format's maximum) with the smallest block size needs, rounded up. It
// bounds the walk over every entry at open (QEMU's check), not memory.
constexpr uint64_t kMaxBatBytes = 520 * MiB;
// BAT pages: 32 KiB of entries each, at most 32 MiB of them cached (the
// whole BAT of a 128 TiB disk of 32 MiB blocks).
constexpr uint64_t kBatPageEntries = 4096;
constexpr size_t kBatCachePages = 1024;

using BatPage = std::vector<uint64_t>;

// The BAT of an open image, read a page at a time.
class Bat {
public:
    Bat(BlockNode &file, uint64_t offset, uint64_t entries)
        : offset_(offset), entries_(entries),
          cache_(kBatCachePages, TableCache<BatPage>::Io{[this, &file](uint64_t page) { return load(file, page); },
                                                         [](uint64_t, const BatPage &) { return ok(); }, {}}) {}

    uint64_t entries() const { return entries_; }
    // Entry `i` (< entries()).
    Result<uint64_t> get(uint64_t i) {
        QIMG_ASSIGN(auto page, cache_.get(i / kBatPageEntries));
        return (*page)[i % kBatPageEntries];
    }
    // Entry `i` after the caller wrote `e` to the file.
    Result<void> set(uint64_t i, uint64_t e) {
        QIMG_ASSIGN(auto page, cache_.get(i / kBatPageEntries));
        (*page)[i % kBatPageEntries] = e;
        return ok();
    }

private:
    Result<std::shared_ptr<BatPage>> load(BlockNode &file, uint64_t page) {
        const uint64_t first = page * kBatPageEntries;
        const uint64_t n = std::min<uint64_t>(kBatPageEntries, entries_ - first);
        auto t = std::make_shared<BatPage>(n);
        QIMG_TRY(file.read(offset_ + first * 8, t->data(), n * 8));
        for (uint64_t &e : *t) e = le64(reinterpret_cast<const uint8_t *>(&e));
        return t;
    }

    uint64_t offset_;
    uint64_t entries_;
    TableCache<BatPage> cache_;
};

Error errno_error(const BlockNode &file, int err) {
    return Error{err, "Could not open '" + file.filename() + "': " + std::strerror(err)};
}

struct Image {
    Guid session{};  // this session's file write GUID
    Header header;
    int header_index = 0;
    Regions regions;
    Params params;
    std::unique_ptr<Bat> bat;
    uint64_t bat0 = 0;  // the first entry (has_zero_init)
    bool log_replayed = false;
};

Result<void> update_header(BlockNode &file, Image &img, const Guid *data_guid, const Guid *log_guid);

class VhdxNode final : public BlockNode {
public:
    VhdxNode(NodePtr file, Image img) : img_(std::move(img)) { file_ = std::move(file); }

    std::string_view driver_name() const override { return "vhdx"; }
    uint64_t length() const override { return img_.params.size; }
    uint32_t cluster_size() const override { return img_.params.block_size; }
    bool has_zero_init() const override {
        // As QEMU: the first BAT entry tells a fixed disk (all present)
        // from a dynamic one.
        if (img_.bat->entries() && (img_.bat0 & kBatStateMask) == kFullyPresent) return file_->has_zero_init();
        return true;
    }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (!range_fits(off, len, length())) return make_error(EIO, "Request beyond the end of the image");
        auto *out = static_cast<uint8_t *>(buf);
        const uint64_t bs = img_.params.block_size;
        while (len > 0) {
            uint64_t in_block = off % bs;
            size_t n = size_t(std::min<uint64_t>(len, bs - in_block));
            QIMG_ASSIGN(uint64_t e, entry(off));
            BlockKind k = block_kind(e);
            if (k == BlockKind::Fault) return make_error(EIO, "Input/output error");
            if (k == BlockKind::Zeroes) std::memset(out, 0, n);
            else QIMG_TRY(file_->read((e & kBatOffsetMask) + in_block, out, n));
            off += n, out += n, len -= n;
        }
        return ok();
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");
        if (!range_fits(off, len, length())) return make_error(EIO, "Request beyond the end of the image");
        QIMG_TRY(first_write());
        auto *in = static_cast<const uint8_t *>(buf);
        const uint64_t bs = img_.params.block_size;
        while (len > 0) {
            uint64_t in_block = off % bs;
            size_t n = size_t(std::min<uint64_t>(len, bs - in_block));
            QIMG_ASSIGN(uint64_t host, host_for_write(off, in_block, in, n));
            if (host) QIMG_TRY(file_->write(host, in, n));
            off += n, in += n, len -= n;
        }
        return ok();
    }

    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned) override {
        if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");
        if (!range_fits(off, len, length())) return make_error(EIO, "Request beyond the end of the image");
        const uint64_t bs = img_.params.block_size;
        while (len > 0) {
            uint64_t in_block = off % bs;
            uint64_t n = std::min<uint64_t>(len, bs - in_block);
            QIMG_ASSIGN(uint64_t e, entry(off));
            BlockKind k = block_kind(e);
            if (k == BlockKind::Fault) return make_error(EIO, "Input/output error");
            // A block that reads as zeroes is left alone.
            if (k == BlockKind::Data) {
                QIMG_TRY(first_write());
                QIMG_TRY(file_->write_zeroes((e & kBatOffsetMask) + in_block, n, 0));
            }
            off += n, len -= n;
        }
        return ok();
    }

    Result<BlockStatus> block_status(uint64_t, uint64_t len) override { return unmapped_data_status(len); }

    Result<CheckReport> check(CheckRepair) override {
        CheckReport rep;
        if (img_.log_replayed) rep.corruptions_fixed++;
        std::lock_guard lk(mu_);
        QIMG_ASSIGN(int64_t bad, check_bat(*file_, img_, true));
        rep.corruptions += bad;
        return rep;
    }

    // QEMU's vhdx_check_bat_entries: each fully present entry inside the
    // file and (for payload entries, counted as QEMU counts them) outside
    // every region. Prints each fault; stops at the first unless `all`.
    static Result<int64_t> check_bat(BlockNode &file, Image &img, bool all) {
        int64_t errors = 0;
        const uint64_t flen = file.length();
        const uint64_t bs = img.params.block_size;
        const uint64_t total = img.params.size;
        uint64_t payblocks = img.params.chunk_ratio;
        for (uint64_t i = 0; i < img.params.bat_entries; ++i) {
            QIMG_ASSIGN(uint64_t e, img.bat->get(i));
            if ((e & kBatStateMask) != kFullyPresent) continue;
            uint64_t offset = e & kBatOffsetMask;
            // QEMU measures the last block by the entry index, bitmap
            // entries included; the unsigned difference wraps past the end.
            uint64_t block_length = std::min<uint64_t>(bs, total - i * bs);
            bool bad = false;
            if (offset > uint64_t(INT64_MAX) - bs) {
                report_error("VHDX BAT entry " + std::to_string(i) + " offset overflow.");
                bad = true;
            }
            if (offset >= flen) {
                report_error(fmt_past_end(i, offset, flen));
                bad = true;
            } else if (offset + block_length > flen) {
                report_error(fmt_past_end(i, offset + block_length - 1, flen, "end"));
                bad = true;
            }
            if (bad && !all) return int64_t(1);
            errors += bad;
            if (payblocks--) {
                if (auto msg = region_overlap(img.regions.all, offset, bs)) {
                    report_error(*msg);
                    if (!all) return int64_t(1);
                    errors++;
                }
            } else {
                payblocks = img.params.chunk_ratio;
            }
        }
        return errors;
    }

private:
    Result<uint64_t> entry(uint64_t off) {
        std::lock_guard lk(mu_);
        return img_.bat->get(bat_index(off / img_.params.block_size, img_.params.chunk_ratio));
    }

    // QEMU's vhdx_user_visible_write: the first write of the session
    // gives the image a new data write GUID.
    Result<void> first_write() {
        std::lock_guard lk(mu_);
        if (written_) return ok();
        QIMG_ASSIGN(Guid data, random_guid());
        QIMG_TRY(update_header(*file_, img_, &data, nullptr));
        QIMG_TRY(update_header(*file_, img_, &data, nullptr));
        written_ = true;
        return ok();
    }

    // Where the guest bytes [off, off+n) of one block go; a block not yet
    // present is allocated with them written (returns 0 then).
    Result<uint64_t> host_for_write(uint64_t off, uint64_t in_block, const uint8_t *in, size_t n) {
        std::lock_guard lk(mu_);
        uint64_t idx = bat_index(off / img_.params.block_size, img_.params.chunk_ratio);
        QIMG_ASSIGN(uint64_t e, img_.bat->get(idx));
        BlockKind k = block_kind(e);
        if (k == BlockKind::Fault) return make_error(EIO, "Input/output error");
        if (k == BlockKind::Data) {
            uint64_t at = e & kBatOffsetMask;
            // As QEMU: a block in the header section is a fault.
            if (at < kHeaderSectionEnd) return make_error(EFAULT, "Bad address");
            return at + in_block;
        }
        const uint64_t bs = img_.params.block_size;
        auto start = checked_align_up(file_->length(), MiB);
        if (!start || *start > uint64_t(INT64_MAX) - bs || (*start & ~kBatOffsetMask))
            return make_error(EINVAL, "Invalid argument");
        QIMG_TRY(file_->truncate(*start + bs, Prealloc::Off, false));
        QIMG_TRY(file_->write(*start + in_block, in, n));
        QIMG_TRY(file_->flush());
        uint64_t ne = *start | kFullyPresent;
        uint8_t le[8];
        put_le64(le, ne);
        QIMG_TRY(file_->write(img_.regions.bat.offset + idx * 8, le, sizeof le));
        QIMG_TRY(file_->flush());
        QIMG_TRY(img_.bat->set(idx, ne));
        if (idx == 0) img_.bat0 = ne;
        return uint64_t(0);
    }

    static std::string fmt_past_end(uint64_t i, uint64_t off, uint64_t flen, const char *which = "start") {
        return "VHDX BAT entry " + std::to_string(i) + " " + which + " offset " + std::to_string(off) +
               " points after end of file (" + std::to_string(int64_t(flen)) +
               "). Image has probably been truncated.";
    }

    std::mutex mu_;
    Image img_;
    bool written_ = false;
};

int vhdx_probe(std::span<const uint8_t> head, const std::string &) {
    return head.size() >= 8 && std::memcmp(head.data(), "vhdxfile", 8) == 0 ? 100 : 0;
}

// Writes the non-current header as a copy of the current one with the
// next sequence number and `change` applied, and makes it current (the
// spec's update procedure; done twice so both headers are valid).
Result<void> update_header(BlockNode &file, Image &img, const Guid *data_guid, const Guid *log_guid) {
    int idx = img.header_index ^ 1;
    uint64_t at = idx == 0 ? kHeader1Offset : kHeader2Offset;
    Header h = img.header;
    h.sequence++;
    h.file_write_guid = img.session;
    if (data_guid) h.data_write_guid = *data_guid;
    if (log_guid) h.log_guid = *log_guid;
    std::vector<uint8_t> block(kHeaderSize);
    QIMG_TRY(read_padded(file, at, block.data(), block.size()));
    std::vector<uint8_t> fresh(kHeaderSize);
    store_header(fresh, h);
    // Bytes past the defined fields are kept as they were; the checksum
    // covers them.
    constexpr size_t kDefined = 80;
    std::memcpy(block.data(), fresh.data(), kDefined);
    put_le32(block.data() + hdr::checksum.offset, 0);
    put_le32(block.data() + hdr::checksum.offset, checksum(block, hdr::checksum.offset));
    QIMG_TRY(file.write(at, block.data(), block.size()));
    QIMG_TRY(file.flush());
    img.header = h;
    img.header_index = idx;
    return ok();
}

// The log, as QEMU's vhdx_parse_log: replayed when opened read-write,
// an error when read-only.
Result<void> open_log(BlockNode &file, Image &img, bool rw) {
    QIMG_ASSIGN(bool present, log_present(img.header));
    if (!present) return ok();
    LogPlace log{img.header.log_offset, img.header.log_length, img.header.log_guid};
    QIMG_ASSIGN(auto seq, find_log_sequence(file, log));
    if (!seq) return ok();
    if (!rw) {
        Error e{EPERM, "VHDX image file '" + file.filename() +
                           "' opened read-only, but contains a log that needs to be replayed"};
        e.hint = "To replay the log, run:\nqemu-img check -r all '" + file.filename() + "'\n";
        return Err(e);
    }
    QIMG_ASSIGN(Guid data, random_guid());
    // The first write of a session changes the data write GUID (twice,
    // as every header update), then the log is applied and emptied.
    QIMG_TRY(update_header(file, img, &data, nullptr));
    QIMG_TRY(update_header(file, img, &data, nullptr));
    QIMG_TRY(replay_log(file, log, *seq));
    Guid zero{};
    QIMG_TRY(update_header(file, img, nullptr, &zero));
    QIMG_TRY(update_header(file, img, nullptr, &zero));
    img.log_replayed = true;
    return ok();
}

// A metadata item's bytes, which must lie inside the metadata region.
Result<std::vector<uint8_t>> read_item(BlockNode &file, const Region &md, const MetaItem &item, size_t len) {
    if (!range_fits(item.offset, len, md.length))
        return make_error(EINVAL, "VHDX metadata item at offset " + std::to_string(item.offset) +
                                      " lies outside the metadata region");
    std::vector<uint8_t> b(len);
    QIMG_TRY(read_padded(file, md.offset + item.offset, b.data(), len));
    return b;
}

Result<Params> open_metadata(BlockNode &file, const Regions &rg) {
    std::vector<uint8_t> table(kMetadataTableSize);
    QIMG_TRY(read_padded(file, rg.metadata.offset, table.data(), table.size()));
    QIMG_ASSIGN(MetaTable t, parse_metadata_table(table));
    Params p;
    QIMG_ASSIGN(auto fp, read_item(file, rg.metadata, t.params, 8));
    p.block_size = le32(fp.data());
    p.data_bits = le32(fp.data() + 4);
    // has-parent without a parent locator (with one, the table was refused).
    if (p.data_bits & kParamHasParent) return make_error(EINVAL, "Invalid argument");
    QIMG_ASSIGN(auto vs, read_item(file, rg.metadata, t.size, 8));
    QIMG_ASSIGN(auto ls, read_item(file, rg.metadata, t.logical, 4));
    QIMG_ASSIGN(auto ps, read_item(file, rg.metadata, t.physical, 4));
    QIMG_ASSIGN(auto pg, read_item(file, rg.metadata, t.page83, 16));
    p.size = le64(vs.data());
    p.logical_sector = le32(ls.data());
    p.physical_sector = le32(ps.data());
    std::memcpy(p.page83.data(), pg.data(), 16);
    return check_params(p);
}

// Turns a bare errno from the parsers into QEMU's generic open message;
// errors with their own words pass unchanged.
Error open_error(const BlockNode &file, const Error &e) {
    if (e.message == "Invalid argument" || e.message == "Operation not supported") return errno_error(file, e.code);
    return e;
}

Result<NodePtr> vhdx_open(OpenRequest &req) {
    BlockNode &file = *req.file;
    auto fail = [&](const Error &e) -> Result<NodePtr> { return Err(open_error(file, e)); };
    uint8_t sig[8] = {};
    QIMG_TRY(read_padded(file, 0, sig, sizeof sig));
    if (std::memcmp(sig, "vhdxfile", 8) != 0) return Err(errno_error(file, EINVAL));

    Image img;
    QIMG_ASSIGN(img.session, random_guid());
    {
        std::vector<uint8_t> h1(kHeaderSize), h2(kHeaderSize);
        QIMG_TRY(read_padded(file, kHeader1Offset, h1.data(), h1.size()));
        QIMG_TRY(read_padded(file, kHeader2Offset, h2.data(), h2.size()));
        auto active = pick_header(h1, h2);
        if (!active) return make_error(EINVAL, "No valid VHDX header found");
        img.header = active->h;
        img.header_index = active->index;
    }
    if (auto r = open_log(file, img, req.flags.read_write); !r) return fail(r.error());

    // VHDX keeps two copies of the region table. QEMU reads only the
    // first; beyond it, a first copy that is damaged (signature or
    // checksum: a torn write, a bad sector) gives way to a whole second
    // one. A whole first copy is used as it is, right or wrong.
    std::vector<uint8_t> rt(kRegionTableSize);
    QIMG_TRY(read_padded(file, kRegionTableOffset, rt.data(), rt.size()));
    if (!region_table_sealed(rt)) {
        std::vector<uint8_t> rt2(kRegionTableSize);
        QIMG_TRY(read_padded(file, kRegionTable2Offset, rt2.data(), rt2.size()));
        if (region_table_sealed(rt2)) rt = std::move(rt2);
    }
    RegionError why;
    auto regions = parse_regions(rt, Region{img.header.log_offset, img.header.log_length}, &why);
    if (!regions) {
        if (!why.report.empty()) report_error(why.report);
        return Err(errno_error(file, why.err ? why.err : EINVAL));
    }
    img.regions = std::move(*regions);
    const uint64_t flen = file.length();
    for (const Region *r : {&img.regions.bat, &img.regions.metadata}) {
        if (r->offset < kHeaderSectionEnd || !range_fits(r->offset, r->length, flen))
            return make_error(EINVAL, "VHDX region at offset " + std::to_string(r->offset) + " of length " +
                                          std::to_string(r->length) + " lies outside the image file");
    }
    auto params = open_metadata(file, img.regions);
    if (!params) return fail(params.error());
    img.params = *params;

    const uint64_t bat_bytes = img.params.bat_entries * 8;  // at most 2^32 * 8: no wrap
    if (img.params.bat_entries > img.regions.bat.length / 8) return Err(errno_error(file, EINVAL));
    if (bat_bytes > kMaxBatBytes)
        return make_error(EFBIG, "VHDX BAT of " + std::to_string(bat_bytes) + " bytes exceeds the limit of " +
                                     std::to_string(kMaxBatBytes) + " bytes");
    img.bat = std::make_unique<Bat>(file, img.regions.bat.offset, img.params.bat_entries);
    if (img.params.bat_entries) {
        QIMG_ASSIGN(img.bat0, img.bat->get(0));
    }
    if (!req.flags.check) {
        QIMG_ASSIGN(int64_t bad, VhdxNode::check_bat(file, img, false));
        if (bad) return Err(errno_error(file, EINVAL));
    }

    auto node = std::make_shared<VhdxNode>(req.file, std::move(img));
    node->set_read_only(!req.flags.read_write);
    return NodePtr(node);
}

const Driver *make_vhdx_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "vhdx";
        d.probe = vhdx_probe;
        d.open = vhdx_open;
        d.supports_check = true;
        d.create = vhdx_create;
        d.create_options = vhdx_create_options();
        return d;
    }();
    return &d;
}

}  // namespace
}  // namespace qimg::vhdx

namespace qimg {
QIMG_REGISTER_DRIVER(vhdx::make_vhdx_driver);
}  // namespace qimg
