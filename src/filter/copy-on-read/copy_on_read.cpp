// copy-on-read: QEMU's filter (block/copy-on-read.c in QEMU's tree) that
// writes what it reads from below its child's top layer into that layer,
// so that the child (a qcow2 overlay) ends up holding the data its backing
// chain gave:
//   --image-opts driver=copy-on-read,file.driver=qcow2,file.file.filename=top.qcow2
// A read is widened to the child's clusters; each run the child does not
// allocate itself (block/status.h) is read through the child (from its
// backing chain, or zeroes) and written back into it, as zeroes when it is
// all zero (QEMU's bdrv_co_do_copy_on_readv). The filter always takes
// write permission on its child, so it opens only read-write ("Block node
// is read-only"). `bottom` names a node by its node name, which qemu-img's
// graph never has here: it is always "not found".
//
// Concurrency: plain reads and writes pass through under a shared lock; a
// copy (read, check, write back) holds the lock exclusively and checks the
// allocation again under it, so that it never writes stale backing data
// over a write that came through the filter meanwhile.
#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <fmt/format.h>

#include "block/driver.h"
#include "block/filter.h"
#include "block/status.h"

namespace qimg {
namespace {

// QEMU's MAX_BOUNCE_BUFFER: the most one copy step reads and writes.
constexpr uint64_t kMaxCopy = 32768 * 512;

bool all_zero(const uint8_t *p, size_t n) {
    return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

class CopyOnReadNode final : public QemuFilterNode {
public:
    explicit CopyOnReadNode(NodePtr child) : QemuFilterNode(std::move(child)) {}

    std::string_view driver_name() const override { return "copy-on-read"; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (len == 0) return ok();
        const uint64_t cluster = std::max<uint64_t>(file_->cluster_size(), 1);
        uint64_t pos = off / cluster * cluster;
        const uint64_t end = (off + len + cluster - 1) / cluster * cluster;
        auto *out = static_cast<uint8_t *>(buf);
        while (pos < end) {
            const uint64_t ask = std::min(end - pos, kMaxCopy);
            QIMG_ASSIGN(BlockStatus s, node_status(*file_, pos, ask));
            if (s.bytes == 0) break;  // the child ends inside the last cluster
            const uint64_t n = std::min<uint64_t>(s.bytes, ask);
            const uint64_t lo = std::max(pos, off), hi = std::min(pos + n, off + len);
            if (s.flags & kStatusAllocated) {
                std::shared_lock lock(mu_);
                if (hi > lo) QIMG_TRY(file_->read(lo, out + (lo - off), hi - lo));
            } else {
                QIMG_TRY(copy(pos, n, out, off, lo, hi));
            }
            pos += n;
        }
        return ok();
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        std::shared_lock lock(mu_);
        return FilterNode::write(off, buf, len);
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        std::shared_lock lock(mu_);
        return FilterNode::write_zeroes(off, len, flags);
    }
    Result<void> discard(uint64_t off, uint64_t len) override {
        std::shared_lock lock(mu_);
        return FilterNode::discard(off, len);
    }
    Result<void> write_compressed(uint64_t off, const void *buf, size_t len) override {
        std::shared_lock lock(mu_);
        return FilterNode::write_compressed(off, buf, len);
    }
    Result<void> write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                       size_t len) override {
        std::shared_lock lock(mu_);
        return FilterNode::write_compressed_data(off, data, raw, len);
    }

private:
    // Copies the child's unallocated run [pos, pos+n) into it and hands the
    // caller's part [lo, hi) to `out` (which starts at `off`).
    Result<void> copy(uint64_t pos, uint64_t n, uint8_t *out, uint64_t off, uint64_t lo, uint64_t hi) {
        std::unique_lock lock(mu_);
        QIMG_ASSIGN(BlockStatus s, node_status(*file_, pos, n));
        if (s.bytes == 0) return ok();
        if (s.flags & kStatusAllocated) {
            // Written through the filter since it was asked: read it as it is.
            return hi > lo ? file_->read(lo, out + (lo - off), hi - lo) : ok();
        }
        std::vector<uint8_t> bounce(n);
        QIMG_TRY(file_->read(pos, bounce.data(), n));
        if (all_zero(bounce.data(), n)) QIMG_TRY(file_->write_zeroes(pos, n, 0));
        else QIMG_TRY(file_->write(pos, bounce.data(), n));
        if (hi > lo) std::copy(bounce.begin() + (lo - pos), bounce.begin() + (hi - pos), out + (lo - off));
        return ok();
    }

    std::shared_mutex mu_;
};

Result<NodePtr> cor_open(OpenRequest &req) {
    // QEMU attaches the child with write permission first, so a read-only
    // open fails before the options are looked at.
    if (!req.flags.read_write) return make_error(EPERM, "Block node is read-only");
    if (auto it = req.options.find("bottom"); it != req.options.end())
        return make_error(EINVAL, fmt::format("Bottom node '{}' not found", it->second));
    return NodePtr(std::make_shared<CopyOnReadNode>(req.file));
}

// cor_child_perm(): consistent read, write and resize pass through, and the
// filter always writes unchanged data itself.
Perms cor_child_perms(const OptionMap &, Perms parent, const OpenFlags &) {
    constexpr uint8_t kPassthrough = kPermConsistentRead | kPermWrite | kPermResize;
    Perms p;
    p.perm = static_cast<uint8_t>((parent.perm & kPassthrough) | kPermWriteUnchanged);
    p.shared = static_cast<uint8_t>((parent.shared & kPassthrough) | (kPermAll & ~kPassthrough));
    return p;
}

const Driver *make_cor_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "copy-on-read";
        d.is_filter = true;
        d.open = cor_open;
        d.file_child_perms = cor_child_perms;
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_cor_driver);

}  // namespace qimg
