// Defaults of the BlockNode interface and small shared helpers.
#include "block/node.h"

#include <cstring>

namespace qimg {

Error BlockNode::not_supported(std::string_view what) const {
    return make_error(ENOTSUP, std::string(what) + ": Operation not supported");
}

Result<void> BlockNode::write(uint64_t, const void *, size_t) {
    if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");
    return not_supported("write");
}

Result<void> BlockNode::write_zeroes(uint64_t off, uint64_t len, unsigned flags) {
    if (flags & kZeroNoFallback) return not_supported("write_zeroes");
    // Generic fallback: write zero buffers in bounded chunks.
    constexpr size_t kChunk = 1 << 20;
    std::vector<uint8_t> zeroes(std::min<uint64_t>(len, kChunk), 0);
    while (len > 0) {
        size_t n = std::min<uint64_t>(len, zeroes.size());
        QIMG_TRY(write(off, zeroes.data(), n));
        off += n;
        len -= n;
    }
    return ok();
}

Result<void> BlockNode::write_compressed(uint64_t, const void *, size_t) {
    return make_error(ENOTSUP, "Compression is not supported for this drive");
}

Result<std::vector<uint8_t>> BlockNode::compress_cluster(const void *, size_t, const CompressOptions &) const {
    return make_error(ENOTSUP, "Compression is not supported for this drive");
}

Result<void> BlockNode::write_compressed_data(uint64_t off, std::span<const uint8_t>, const void *raw, size_t len) {
    return write_compressed(off, raw, len);
}

Result<void> BlockNode::copy_range_from(uint64_t, BlockNode &, uint64_t, uint64_t) {
    return make_error(ENOTSUP, "Copy offloading is not supported");
}

Result<void> BlockNode::copy_range_to(BlockNode &, uint64_t, uint64_t, uint64_t) {
    return make_error(ENOTSUP, "Copy offloading is not supported");
}

void BlockNode::attach_child(ChildKind kind, std::string name, NodePtr node) {
    // A driver that passes its protocol child to its constructor holds it
    // in file_ before the opener attaches it.
    if (kind == ChildKind::File || kind == ChildKind::Backing)
        std::erase_if(children_, [&](const BlockChild &c) { return c.kind == kind; });
    if (kind == ChildKind::File) file_ = node;
    if (kind == ChildKind::Backing) backing_ = node;
    if (node) children_.push_back(BlockChild{kind, std::move(name), std::move(node)});
}

BlockNode *BlockNode::child(ChildKind kind) const {
    if (kind == ChildKind::File) return file_.get();
    if (kind == ChildKind::Backing) return backing_.get();
    for (const BlockChild &c : children_)
        if (c.kind == kind) return c.node.get();
    return nullptr;
}

namespace {
// The children a node's own flush, page-cache advice and size cover: its
// backing file is another image, flushed and sized on its own.
template <class Fn>
void for_each_own_child(const BlockNode &n, const NodePtr &file, Fn fn) {
    bool file_seen = false;
    for (const BlockChild &c : n.children()) {
        if (c.kind == ChildKind::Backing) continue;
        file_seen |= c.node == file;
        fn(c);
    }
    // A driver that keeps its protocol child without attaching it.
    if (file && !file_seen) fn(BlockChild{ChildKind::File, "file", file});
}
}  // namespace

void BlockNode::cache_advice(CacheAdvice a, uint64_t, uint64_t len) {
    if (len != 0) return;
    for_each_own_child(*this, file_, [&](const BlockChild &c) { c.node->cache_advice(a); });
}

Result<void> BlockNode::discard(uint64_t, uint64_t) { return ok(); }  // a hint: ignoring it is correct

Result<void> BlockNode::flush() {
    Result<void> r = ok();
    for_each_own_child(*this, file_, [&](const BlockChild &c) {
        if (r) r = c.node->flush();
    });
    return r;
}

Result<void> BlockNode::truncate(uint64_t, Prealloc, bool) {
    return make_error(ENOTSUP, "Image format driver does not support resize");
}

Result<BlockStatus> BlockNode::block_status(uint64_t off, uint64_t len) {
    BlockStatus s;
    s.flags = kStatusData | kStatusAllocated | kStatusOffsetValid;
    s.bytes = len;
    s.host_offset = off;
    s.host_node = this;
    return s;
}

Result<uint64_t> BlockNode::allocated_size() {
    Result<uint64_t> sum = make_error(ENOTSUP, "allocated size unknown");
    bool any = false;
    for_each_own_child(*this, file_, [&](const BlockChild &c) {
        if (c.kind == ChildKind::DataFile || (any && !sum)) return;
        auto r = c.node->allocated_size();
        if (!r) {
            sum = Err(r.error());
        } else {
            sum = (any ? *sum : 0) + *r;
        }
        any = true;
    });
    return sum;
}

Result<CheckReport> BlockNode::check(CheckRepair) {
    return make_error(ENOTSUP, "This image format does not support checks");
}

Result<std::vector<SnapshotInfo>> BlockNode::snapshot_list() {
    return make_error(ENOTSUP, "Operation not supported");
}

Result<void> BlockNode::snapshot_create(const SnapshotInfo &) {
    return make_error(ENOTSUP, "Operation not supported");
}

Result<void> BlockNode::snapshot_goto(const std::string &) {
    return make_error(ENOTSUP, "Block driver does not support snapshots");
}

Result<void> BlockNode::snapshot_load_tmp(const std::string *, const std::string *) {
    return make_error(ENOTSUP, "Block format '" + std::string(driver_name()) +
                                   "' used by device '' does not support temporarily loading internal snapshots");
}

Result<void> BlockNode::snapshot_delete(const std::string &, const std::string &) {
    return make_error(ENOTSUP, "Block format '" + std::string(driver_name()) +
                                   "' used by device '' does not support internal snapshot deletion");
}

Result<void> BlockNode::bitmap_action(const BitmapAction &a) {
    if (a.kind == BitmapAction::Kind::Add)
        return make_error(ENOTSUP, "Can't store persistent bitmaps to " + a.node_name + ": Operation not supported");
    return make_error(ENOENT, "Dirty bitmap '" + a.name + "' not found");
}

Result<std::vector<PersistentBitmapInfo>> BlockNode::bitmap_list() { return std::vector<PersistentBitmapInfo>{}; }

Result<BitmapBits> BlockNode::bitmap_read(const std::string &name) {
    return make_error(ENOENT, "Dirty bitmap '" + name + "' not found");
}

Result<void> BlockNode::change_backing_file(const std::string &, const std::string &) {
    return make_error(ENOTSUP, "Operation not supported");
}

Result<void> BlockNode::amend(const std::map<std::string, std::string> &, bool, const AmendStatus &) {
    return make_error(ENOTSUP, "Operation not supported");
}

Result<void> BlockNode::make_empty() {
    return make_error(ENOTSUP, "Driver " + std::string(driver_name()) + " does not support emptying");
}

BlockNode *skip_filters(BlockNode *node) {
    while (node && node->filtered_child()) node = node->filtered_child();
    return node;
}

BlockNode *backing_chain_next(BlockNode *node) {
    node = skip_filters(node);
    return node ? skip_filters(node->backing()) : nullptr;
}

Result<void> read_padded(BlockNode &node, uint64_t off, void *buf, size_t len) {
    uint64_t end = node.length();
    uint8_t *p = static_cast<uint8_t *>(buf);
    if (off >= end) {
        std::memset(p, 0, len);
        return ok();
    }
    size_t in = static_cast<size_t>(std::min<uint64_t>(len, end - off));
    QIMG_TRY(node.read(off, p, in));
    if (in < len) std::memset(p + in, 0, len - in);
    return ok();
}

Result<Prealloc> parse_prealloc(std::string_view s) {
    if (s == "off") return Prealloc::Off;
    if (s == "metadata") return Prealloc::Metadata;
    if (s == "falloc") return Prealloc::Falloc;
    if (s == "full") return Prealloc::Full;
    // qapi_enum_parse()'s wording, which every caller of QEMU's PreallocMode
    // lookup reports.
    return make_error(EINVAL, "invalid parameter value: " + std::string(s));
}

std::string_view prealloc_name(Prealloc p) {
    switch (p) {
    case Prealloc::Off: return "off";
    case Prealloc::Metadata: return "metadata";
    case Prealloc::Falloc: return "falloc";
    case Prealloc::Full: return "full";
    }
    return "off";
}

Result<CacheMode> parse_cache_mode(std::string_view s) {
    CacheMode m;
    if (s == "writeback") return m;
    if (s == "writethrough") { m.writethrough = true; return m; }
    if (s == "none" || s == "off") { m.direct = true; return m; }
    if (s == "directsync") { m.direct = true; m.writethrough = true; return m; }
    if (s == "unsafe") { m.no_flush = true; return m; }
    return make_error(EINVAL, "Invalid cache option: " + std::string(s));
}

}  // namespace qimg
