// The raw format: guest data is the file's bytes, optionally a window
// [offset, offset+size) of it. The smallest format driver, and the template
// a new format starts from: a node class, an open function that validates
// its options, a create function, and one QIMG_REGISTER_DRIVER line.
//
// Concurrency: raw holds no mutable state after open; requests go straight
// to the protocol child, which is thread-safe.
#include <algorithm>
#include <cstdlib>
#include <limits>

#include "block/driver.h"
#include "block/open.h"
#include "block/status.h"
#include "util/size.h"

namespace qimg {
namespace {

class RawNode final : public BlockNode {
public:
    RawNode(NodePtr file, uint64_t offset, uint64_t size, bool has_size, bool probed, bool read_write)
        : offset_(offset), size_(size), has_size_(has_size), probed_(probed), read_write_(read_write) {
        file_ = std::move(file);
    }

    std::string_view driver_name() const override { return "raw"; }

    uint64_t length() const override {
        if (has_size_) return size_;
        uint64_t f = file_->length();
        return f > offset_ ? f - offset_ : 0;
    }

    bool has_zero_init() const override { return file_->has_zero_init(); }
    // QEMU's raw_get_info asks the file: over a protocol without
    // bdrv_get_info (null-co, http) info shows no dirty flag.
    bool has_driver_info() const override { return file_->has_driver_info(); }
    // raw_get_info hands over the file's whole answer: its cluster size
    // too (rbd's object size), which info shows as "cluster_size".
    uint32_t cluster_size() const override { return file_->cluster_size(); }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        file_->debug_event(BlkdebugEvent::ReadAio);  // guest data, for a blkdebug below
        return file_->read(offset_ + off, buf, len);
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        if (probed_ && off < kProbeSector) QIMG_TRY(check_block0_write(off, buf, len));
        file_->debug_event(BlkdebugEvent::WriteAio);
        return file_->write(offset_ + off, buf, len);
    }

    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        QIMG_TRY(check_range(off, len));
        return file_->write_zeroes(offset_ + off, len, flags);
    }

    Result<void> discard(uint64_t off, uint64_t len) override {
        QIMG_TRY(check_range(off, len));
        return file_->discard(offset_ + off, len);
    }

    Result<void> copy_range_from(uint64_t off, BlockNode &dst, uint64_t dst_off, uint64_t len) override {
        QIMG_TRY(check_range(off, len));
        return file_->copy_range_from(offset_ + off, dst, dst_off, len);
    }

    Result<void> copy_range_to(BlockNode &src, uint64_t src_off, uint64_t off, uint64_t len) override {
        QIMG_TRY(check_range(off, len));
        // Block 0 of a probed image needs its content checked: the caller's
        // fallback (read + write) does that.
        if (probed_ && off < kProbeSector) return make_error(ENOTSUP, "Copy offloading is not supported");
        return file_->copy_range_to(src, src_off, offset_ + off, len);
    }

    // Guest offsets are file offsets shifted by `offset`: ranges map as is.
    void cache_advice(CacheAdvice a, uint64_t off, uint64_t len) override {
        if (len == 0) return file_->cache_advice(a);
        if (off > UINT64_MAX - offset_) return;
        file_->cache_advice(a, offset_ + off, len);
    }

    // Every guest byte has its fixed place in the file; whether the file's
    // own layout follows the order of writes is the file's to say (a host
    // file: no; an NBD export of a qcow2 image: yes).
    bool layout_follows_write_order() const override { return file_->layout_follows_write_order(); }

    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override {
        // A size option fixes the window; an offset only shifts it.
        if (has_size_) return make_error(ENOTSUP, "Cannot resize fixed-size raw disks");
        if (new_size > static_cast<uint64_t>(INT64_MAX) - offset_)
            return make_error(EINVAL, "Disk size too large for the chosen offset");
        return file_->truncate(offset_ + new_size, prealloc, exact);
    }

    bool unallocated_reads_zero() const override { return file_->unallocated_reads_zero(); }

    // Raw passes the question through: the file's holes are the image's zeroes.
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        QIMG_ASSIGN(BlockStatus s, node_status(*file_, offset_ + off, len));
        if (s.bytes == 0) {  // file shorter than the window: zeroes
            s.flags = kStatusZero | kStatusOffsetValid;
            s.bytes = len;
        }
        s.flags &= ~kStatusEof;
        // A file that cannot say what it holds (null-co) leaves the range
        // unallocated, and then it has no place to map to either; nor has
        // what the file itself maps nowhere (the zeroes an NBD export of an
        // odd size shows up to the end of its last sector): QEMU's raw
        // hands over the file's answer as it is.
        if (!(s.flags & (kStatusData | kStatusZero)) || !(s.flags & kStatusOffsetValid)) return s;
        s.flags |= kStatusOffsetValid;
        s.host_offset = offset_ + off;
        s.host_node = file_.get();
        return s;
    }

    uint32_t request_alignment() const override { return file_->request_alignment(); }

    // QEMU's bdrv_snapshot_list/create/delete hand a format without
    // snapshots over to its file child (bdrv_snapshot_fallback): an rbd
    // image's snapshots are the raw image's.
    Result<std::vector<SnapshotInfo>> snapshot_list() override { return file_->snapshot_list(); }
    Result<void> snapshot_create(const SnapshotInfo &sn) override { return file_->snapshot_create(sn); }
    Result<void> snapshot_delete(const std::string &id, const std::string &name) override {
        return file_->snapshot_delete(id, name);
    }

    // QEMU's bdrv_snapshot_goto() hands a format without snapshots over to
    // its file child, closing the format and opening it again around the
    // call: the open prints its probing warning a second time.
    Result<void> snapshot_goto(const std::string &name) override {
        Result<void> r = file_->snapshot_goto(name);
        if (probed_ && read_write_) warn_probed_raw(filename());
        return r;
    }

private:
    static constexpr uint64_t kProbeSector = 512;

    // An image whose format was guessed as raw must not become, through a
    // guest write to its first sector, an image that probes as another
    // format (which could then name a host file as its backing file). As in
    // QEMU, such writes fail with EPERM.
    Result<void> check_block0_write(uint64_t off, const void *buf, size_t len) {
        uint8_t head[kProbeSector];
        QIMG_TRY(read_padded(*file_, offset_, head, sizeof head));
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, kProbeSector - off));
        std::memcpy(head + off, buf, n);
        for (const Driver *d : all_drivers()) {
            if (d->is_protocol || !d->probe || d->name == "raw") continue;
            if (d->probe(std::span<const uint8_t>(head, sizeof head), filename()) > 1)
                return make_error(EPERM, "Operation not permitted");
        }
        return ok();
    }

    Result<void> check_range(uint64_t off, uint64_t len) const {
        uint64_t size = length();
        if (off > size || len > size - off) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }

    uint64_t offset_, size_;
    bool has_size_;
    bool probed_;  // format guessed, not given: block 0 writes are restricted
    bool read_write_;
};

Result<uint64_t> take_size_option(OptionMap &opts, const char *key, bool &present) {
    present = false;
    auto it = opts.find(key);
    if (it == opts.end()) return uint64_t{0};
    present = true;
    auto v = parse_size(it->second);
    if (!v) return make_error(EINVAL, std::string("Parameter '") + key + "' expects a non-negative number below 2^64\n"
                                      "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                                      "and exabytes, respectively.");
    opts.erase(it);
    return *v;
}

Result<NodePtr> raw_open(OpenRequest &req) {
    bool probed = req.options.count("x-probed") != 0;
    req.options.erase("x-probed");
    bool has_offset = false, has_size = false;
    QIMG_ASSIGN(uint64_t offset, take_size_option(req.options, "offset", has_offset));
    QIMG_ASSIGN(uint64_t size, take_size_option(req.options, "size", has_size));
    uint64_t flen = req.file->length();
    if (offset > flen)
        return make_error(EINVAL, "The sum of offset (" + std::to_string(offset) + ") and size (" +
                                      std::to_string(has_size ? size : 0) + ") has to be smaller or equal to the "
                                      "actual size of the containing file (" + std::to_string(flen) + ")");
    if (has_size) {
        if (size % 512 != 0) return make_error(EINVAL, "Specified size is not multiple of 512");
        if (size > std::numeric_limits<uint64_t>::max() - offset || offset + size > flen)
            return make_error(EINVAL, "The sum of offset (" + std::to_string(offset) + ") and size (" +
                                          std::to_string(size) + ") has to be smaller or equal to the actual "
                                          "size of the containing file (" + std::to_string(flen) + ")");
    }
    return NodePtr(std::make_shared<RawNode>(req.file, offset, size, has_size, probed, req.flags.read_write));
}

// raw has no metadata: the protocol file is the image, created with all the
// protocol's options (preallocation, nocow, extent_size_hint).
Result<void> raw_create(CreateRequest &req) { return req.opener->create_protocol(req); }

// QEMU's raw_measure: the image is as large as the virtual disk, rounded up
// to whole sectors for a new image; a copy is as large as the source.
Result<MeasureInfo> raw_measure(MeasureRequest &req) {
    MeasureInfo info;
    if (req.source) {
        // QEMU 7.2 measures lengths in whole sectors.
        uint64_t len = req.source->length();
        info.required = (len + 511) / 512 * 512;
    } else {
        uint64_t size = std::strtoull(req.get("size", "0").c_str(), nullptr, 10);
        info.required = size > UINT64_MAX - 511 ? 0 : (size + 511) / 512 * 512;
    }
    info.fully_allocated = info.required;
    return info;
}

const Driver *make_raw_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "raw";
        d.probe = [](std::span<const uint8_t>, const std::string &) { return 1; };
        d.open = raw_open;
        d.create = raw_create;
        d.measure = raw_measure;
        d.strong_options = {"offset", "size"};  // a window is another image
        // QEMU's raw_child_perm: without a window raw is a filter; either
        // way it writes or resizes the file only when its users do.
        d.file_child_perms = [](const OptionMap &opts, Perms parent, const OpenFlags &f) {
            bool window = opts.count("offset") || opts.count("size");
            Perms p = child_perms(window ? kRoleData : kRoleFiltered, parent, f.read_write, f.no_io);
            p.perm = static_cast<uint8_t>((p.perm & ~(kPermWrite | kPermResize)) |
                                          (parent.perm & (kPermWrite | kPermResize)));
            return p;
        };
        d.create_options = {{"size", CreateOption::Type::Size, "Virtual disk size", ""}};
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_raw_driver);

}  // namespace qimg
