// The parallels driver: Parallels/Virtuozzo expandable images (QEMU's
// docs/interop/parallels.txt; QEMU's block/parallels.c is the behaviour
// reference), v1 "WithoutFreeSpace" (BAT entries in sectors) and v2
// "WithouFreSpacExt" (BAT entries in clusters), read and written as
// qemu-img 7.2 does.
//
// Layout. A 64-byte header, the BAT right behind it (one 32-bit entry per
// cluster, 0 = unallocated, which reads as zeroes), then the data area from
// data_off. New clusters are appended at the end of the data area.
//
// In-use flag: a read-write open sets the header's inuse field (written at
// once) and closing clears it; an image found in use is "not closed
// correctly": it opens read-only or for check only, and `check -r all`
// clears it. Closing also cuts the file back to the end of the data area.
//
// Writes, beyond QEMU for a kill at any instant: a new cluster is written
// whole (zeroes around the guest data) and flushed before its BAT entry is
// written (QEMU writes BAT sectors at its next flush, and preallocates 128
// MiB ahead; neither changes the final image's bytes). Also beyond QEMU: a
// BAT entry whose cluster would lie past 2^63 is refused at open, the BAT
// part past the end of the file reads as unallocated and is not held in
// memory (so a hostile entry count costs no memory), and a write that would
// allocate there, or past the BAT, or at a data end that is not a whole
// number of BAT units, is refused. The Format Extension (ext_off) is checked
// on read-only opens as QEMU checks it (extension.h) and ignored with QEMU's
// warning on read-write ones; its dirty bitmaps are not kept.
//
// Concurrency: the BAT, the data end and the header copy are guarded by
// mu_. Reads and writes into allocated clusters look the entry up under the
// lock and do their I/O outside it (an entry never changes while the node
// is open, but for check -r, which runs alone); allocation holds the lock
// from the cluster write to the BAT update.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/open.h"
#include "format/parallels/extension.h"
#include "format/parallels/parallels.h"
#include "util/checked.h"
#include "util/progname.h"
#include "util/endian.h"
#include "util/keyval.h"
#include "util/option_map.h"

namespace qimg::parallels {
namespace {

constexpr uint64_t kNone = UINT64_MAX;

struct Layout {
    std::array<uint8_t, kHeaderSize> head{};
    uint32_t tracks = 0;    // cluster size in sectors
    uint32_t mult = 0;      // sectors per BAT unit: 1 (v1) or tracks (v2)
    uint32_t bat_size = 0;  // entries the header declares
    uint64_t sectors = 0;   // disk size
    uint64_t data_end = 0;  // sectors: where the next cluster goes
    bool unclean = false;
    std::vector<uint32_t> bat;  // the entries inside the file
};

class ParallelsNode final : public BlockNode {
public:
    ParallelsNode(NodePtr file, Layout l, bool rw) : l_(std::move(l)), rw_(rw) {
        file_ = std::move(file);
        cluster_ = uint64_t(l_.tracks) * 512;
    }
    ~ParallelsNode() override { (void)close(); }

    std::string_view driver_name() const override { return "parallels"; }
    uint64_t length() const override { return l_.sectors * 512; }
    bool has_zero_init() const override { return true; }
    // QEMU's parallels driver answers no bdrv_get_info: info prints neither
    // a cluster size nor a dirty flag.
    bool has_driver_info() const override { return false; }

    // Marks the image in use (read-write opens).
    Result<void> mark_in_use() {
        put_le32(l_.head.data() + hdr::inuse.offset, kInUse);
        QIMG_TRY(file_->write(0, l_.head.data(), l_.head.size()));
        return file_->flush();
    }

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
        auto *in = static_cast<const uint8_t *>(buf);
        while (len > 0) {
            size_t n = chunk(off, len);
            uint64_t host = host_offset(off);
            if (host == kNone) QIMG_TRY(allocate(off, in, n));
            else QIMG_TRY(file_->write(host, in, n));
            off += n, in += n, len -= n;
        }
        return ok();
    }

    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        BlockStatus s;
        if (off >= length()) return s;
        len = std::min(len, length() - off);
        uint64_t host = host_offset(off);
        if (host != kNone) {
            s.flags = kStatusData | kStatusOffsetValid;
            s.host_offset = host;
            s.host_node = file_.get();
            // Clusters that follow each other in the file too, as QEMU.
            while (len > 0 && host_offset(off) == host) {
                uint64_t n = chunk(off, len);
                s.bytes += n, off += n, len -= n, host += n;
            }
            return s;
        }
        while (len > 0 && host_offset(off) == kNone) {
            uint64_t n = chunk(off, len);
            s.bytes += n, off += n, len -= n;
        }
        return s;
    }

    Result<CheckReport> check(CheckRepair repair) override;

private:
    Result<void> close() {
        if (!rw_ || closed_) return ok();
        closed_ = true;
        std::lock_guard lk(mu_);
        put_le32(l_.head.data() + hdr::inuse.offset, 0);
        QIMG_TRY(file_->write(0, l_.head.data(), l_.head.size()));
        QIMG_TRY(file_->flush());
        QIMG_TRY(file_->truncate(l_.data_end * 512, Prealloc::Off, true));
        return file_->flush();
    }

    Result<void> check_range(uint64_t off, uint64_t len) const {
        if (!range_fits(off, len, length())) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }
    size_t chunk(uint64_t off, uint64_t len) const {
        return size_t(std::min<uint64_t>(len, cluster_ - off % cluster_));
    }
    uint64_t host_offset(uint64_t off) {
        std::lock_guard lk(mu_);
        return host_offset_locked(off);
    }
    uint64_t host_offset_locked(uint64_t off) const {
        uint64_t idx = off / cluster_;
        if (idx >= l_.bat.size() || l_.bat[idx] == 0) return kNone;
        return uint64_t(l_.bat[idx]) * l_.mult * 512 + off % cluster_;
    }

    // Appends the cluster holding [off, off+n) with that data in it.
    Result<void> allocate(uint64_t off, const uint8_t *in, size_t n) {
        std::lock_guard lk(mu_);
        uint64_t host = host_offset_locked(off);
        if (host != kNone) return file_->write(host, in, n);  // another writer was first
        uint64_t idx = off / cluster_;
        if (idx >= l_.bat.size())
            return make_error(EIO, "block-parallels: write to a cluster the BAT does not cover in the file");
        if (l_.data_end % l_.mult != 0 || l_.data_end / l_.mult >= UINT32_MAX ||
            l_.data_end + l_.tracks > uint64_t(INT64_MAX) / 512)
            return make_error(EIO, "block-parallels: cannot allocate at the end of the data area");
        uint64_t at = l_.data_end * 512;
        // Zeroes around a partial write (clusters may be up to 2 GiB: no
        // cluster-sized buffer), then the data.
        if (n < cluster_) QIMG_TRY(file_->write_zeroes(at, cluster_, 0));
        QIMG_TRY(file_->write(at + off % cluster_, in, n));
        QIMG_TRY(file_->flush());
        uint32_t e = uint32_t(l_.data_end / l_.mult);
        uint8_t b[4];
        put_le32(b, e);
        QIMG_TRY(file_->write(kHeaderSize + 4 * idx, b, 4));
        l_.bat[idx] = e;
        l_.data_end += l_.tracks;
        return ok();
    }

    std::mutex mu_;
    Layout l_;
    uint64_t cluster_ = 0;
    bool rw_, closed_ = false;
};

// QEMU's check: the in-use flag, clusters past the end of the file (their
// entries cleared by -r all), and space past the last cluster (cut by -r
// leaks), with its cluster statistics.
Result<CheckReport> ParallelsNode::check(CheckRepair repair) {
    bool fix_errors = repair == CheckRepair::All;
    bool fix_leaks = repair != CheckRepair::None;
    std::lock_guard lk(mu_);
    CheckReport rep;
    rep.has_cluster_stats = true;
    int64_t size = int64_t(file_->length());
    if (l_.unclean) {
        std::fprintf(stderr, "%s image was not closed correctly\n", fix_errors ? "Repairing" : "ERROR");
        rep.corruptions++;
        if (fix_errors) {
            rep.corruptions_fixed++;
            l_.unclean = false;  // closing clears the flag
        }
    }
    rep.total_clusters = l_.bat_size;
    int64_t high = 0, prev = 0;
    bool write_bat = false;
    for (uint32_t i = 0; i < l_.bat.size(); ++i) {
        int64_t off = int64_t(uint64_t(l_.bat[i]) * l_.mult * 512);
        if (off == 0) {
            prev = 0;
            continue;
        }
        if (off > size) {
            std::fprintf(stderr, "%s cluster %" PRIu32 " is outside image\n", fix_errors ? "Repairing" : "ERROR", i);
            rep.corruptions++;
            if (fix_errors) {
                prev = 0;
                l_.bat[i] = 0;
                rep.corruptions_fixed++;
                write_bat = true;
                continue;
            }
        }
        rep.allocated_clusters++;
        high = std::max(high, off);
        if (prev != 0 && prev + int64_t(cluster_) != off) rep.fragmented_clusters++;
        prev = off;
    }
    if (write_bat) {
        std::vector<uint8_t> b(4 * l_.bat.size());
        for (size_t i = 0; i < l_.bat.size(); ++i) put_le32(b.data() + 4 * i, l_.bat[i]);
        auto r = file_->write(kHeaderSize, b.data(), b.size());
        if (r) r = file_->flush();
        if (!r) {
            rep.check_errors++;
            return rep;
        }
    }
    rep.image_end_offset = high + int64_t(cluster_);
    if (size > rep.image_end_offset) {
        int64_t count = (size - rep.image_end_offset + int64_t(cluster_) - 1) / int64_t(cluster_);
        std::fprintf(stderr, "%s space leaked at the end of the image %" PRId64 "\n",
                     fix_leaks ? "Repairing" : "ERROR", size - rep.image_end_offset);
        rep.leaks += count;
        if (fix_leaks) {
            auto r = file_->truncate(uint64_t(rep.image_end_offset), Prealloc::Off, true);
            if (!r) {
                std::fprintf(stderr, "%s\n", r.error().message.c_str());
                rep.check_errors++;
                return rep;
            }
            rep.leaks_fixed += count;
        }
    }
    return rep;
}

bool magic_is(std::span<const uint8_t> b, const char *m) { return b.size() >= 16 && std::memcmp(b.data(), m, 16) == 0; }

int parallels_probe(std::span<const uint8_t> head, const std::string &) {
    if (head.size() < kHeaderSize) return 0;
    ByteReader r(head);
    bool magic = magic_is(head, kMagicV1) || magic_is(head, kMagicV2);
    return magic && r.get(hdr::version) == kVersion ? 100 : 0;
}

Result<NodePtr> parallels_open(OpenRequest &req) {
    BlockNode &file = *req.file;
    Layout l;
    QIMG_TRY(read_padded(file, 0, l.head.data(), l.head.size()));
    ByteReader r{std::span<const uint8_t>(l.head)};
    uint64_t sectors = r.get(hdr::nb_sectors);
    if (r.get(hdr::version) != kVersion) return make_error(EINVAL, "Image not in Parallels format");
    uint32_t tracks = r.get(hdr::tracks);
    if (magic_is(l.head, kMagicV1)) {
        l.mult = 1;
        sectors &= 0xffffffff;
    } else if (magic_is(l.head, kMagicV2)) {
        l.mult = tracks;
    } else {
        return make_error(EINVAL, "Image not in Parallels format");
    }
    l.tracks = tracks;
    if (tracks == 0) return make_error(EINVAL, "Invalid image: Zero sectors per track");
    if (tracks > uint32_t(INT32_MAX) / 513) return make_error(EFBIG, "Invalid image: Too big cluster");
    l.bat_size = r.get(hdr::bat_entries);
    if (l.bat_size > uint32_t(INT32_MAX) / 4) return make_error(EFBIG, "Catalog too large");
    // Beyond QEMU: a disk size whose bytes do not fit in 63 bits.
    if (sectors > uint64_t(INT64_MAX) / 512) return make_error(EFBIG, "block-parallels: disk size too large");
    l.sectors = sectors;
    uint64_t bat_end = kHeaderSize + 4 * uint64_t(l.bat_size);
    l.data_end = r.get(hdr::data_off);
    if (l.data_end == 0) l.data_end = (bat_end + 511) / 512;
    // The entries inside the file; the rest read as 0 (unallocated).
    uint64_t flen = file.length();
    uint64_t held = flen <= kHeaderSize ? 0 : std::min<uint64_t>(l.bat_size, (flen - kHeaderSize) / 4);
    std::vector<uint8_t> raw(4 * held);
    if (held) QIMG_TRY(file.read(kHeaderSize, raw.data(), raw.size()));
    l.bat.resize(held);
    for (uint64_t i = 0; i < held; ++i) {
        uint32_t e = le32(raw.data() + 4 * i);
        l.bat[i] = e;
        if (e == 0) continue;
        uint64_t off = uint64_t(e) * l.mult;  // sectors; fits: both 32-bit
        if (off + tracks > uint64_t(INT64_MAX) / 512)
            return make_error(EINVAL, "block-parallels: BAT entry " + std::to_string(i) + " points past 2^63");
        if (off >= l.data_end) l.data_end = off + tracks;
    }
    bool rw = req.flags.read_write;
    if (r.get(hdr::inuse) == kInUse) {
        l.unclean = true;
        if (rw && !req.flags.check)
            return make_error(EACCES, "parallels: Image was not closed correctly; cannot be opened read/write");
    }
    // QEMU's runtime options for preallocation ahead of the data end:
    // validated as QEMU does, and not needed here (clusters are written
    // whole, and closing cuts the file at the data end either way).
    if (auto v = take_option(req.options, "prealloc-size")) QIMG_TRY(parse_size_opt("prealloc-size", *v));
    if (auto v = take_option(req.options, "prealloc-mode"); v && *v != "falloc" && *v != "truncate")
        return make_error(EINVAL, "invalid parameter value: " + *v);
    uint64_t ext_off = r.get(hdr::ext_off);
    if (rw && ext_off != 0) report_warning("Format Extension ignored in RW mode");
    if (!rw && ext_off != 0) QIMG_TRY(check_format_extension(file, ext_off, uint64_t(tracks) * 512, sectors));
    auto node = std::make_shared<ParallelsNode>(req.file, std::move(l), rw);
    node->set_read_only(!rw);
    if (rw) QIMG_TRY(node->mark_in_use());
    return NodePtr(node);
}

const Driver *make_parallels_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "parallels";
        d.probe = parallels_probe;
        d.open = parallels_open;
        d.create = parallels_create;
        d.create_options = parallels_create_options();
        d.supports_check = true;
        return d;
    }();
    return &d;
}

}  // namespace
}  // namespace qimg::parallels

namespace qimg {
QIMG_REGISTER_DRIVER(parallels::make_parallels_driver);
}  // namespace qimg
