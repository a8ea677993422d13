// FilterNode: the base of filter drivers (filter/: fault, blkdebug, ...), nodes
// that sit above one child and show it unchanged (QEMU's is_filter drivers
// with a FILTERED|PRIMARY "file"/"image" child). Every BlockNode call passes
// to the child; a filter overrides the calls it acts on (fails, counts,
// delays or splits) and calls FilterNode's version to pass them on.
//
// Concurrency: the filter itself keeps no state here; the child guards its
// own. A derived filter says how it guards what it adds.
#pragma once

#include "block/node.h"

namespace qimg {

class FilterNode : public BlockNode {
public:
    // `child_name`: the child's name in options and json: names (QEMU's
    // blkdebug calls it "image").
    explicit FilterNode(NodePtr child, std::string child_name = "file") {
        set_filename(child->filename());
        set_read_only(child->read_only());
        attach_child(ChildKind::File, std::move(child_name), std::move(child));
    }

    uint64_t length() const override { return file_->length(); }
    Result<void> read(uint64_t off, void *buf, size_t len) override { return file_->read(off, buf, len); }
    Result<void> write(uint64_t off, const void *buf, size_t len) override { return file_->write(off, buf, len); }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        return file_->write_zeroes(off, len, flags);
    }
    Result<void> discard(uint64_t off, uint64_t len) override { return file_->discard(off, len); }
    Result<void> write_compressed(uint64_t off, const void *buf, size_t len) override {
        return file_->write_compressed(off, buf, len);
    }
    uint32_t compressed_cluster_size() const override { return file_->compressed_cluster_size(); }
    Result<std::vector<uint8_t>> compress_cluster(const void *buf, size_t len,
                                                  const CompressOptions &opts) const override {
        return file_->compress_cluster(buf, len, opts);
    }
    Result<void> write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                       size_t len) override {
        return file_->write_compressed_data(off, data, raw, len);
    }
    Result<void> flush() override { return file_->flush(); }
    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override {
        return file_->truncate(new_size, prealloc, exact);
    }
    // The child's answer as it is: its host_node names the node that holds
    // the data, so `map` shows the same file with or without the filter.
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override { return file_->block_status(off, len); }
    bool unallocated_reads_zero() const override { return file_->unallocated_reads_zero(); }
    uint32_t request_alignment() const override { return file_->request_alignment(); }
    void cache_advice(CacheAdvice a, uint64_t off, uint64_t len) override { file_->cache_advice(a, off, len); }
    bool layout_follows_write_order() const override { return file_->layout_follows_write_order(); }
    // Offloaded copies hand over between the two sides' nodes (node.h); a
    // filter is one more hop on either side.
    Result<void> copy_range_from(uint64_t off, BlockNode &dst, uint64_t dst_off, uint64_t len) override {
        return file_->copy_range_from(off, dst, dst_off, len);
    }
    Result<void> copy_range_to(BlockNode &src, uint64_t src_off, uint64_t off, uint64_t len) override {
        return file_->copy_range_to(src, src_off, off, len);
    }

    Result<uint64_t> allocated_size() override { return file_->allocated_size(); }
    uint32_t cluster_size() const override { return file_->cluster_size(); }
    bool is_dirty() const override { return file_->is_dirty(); }
    bool has_zero_init() const override { return file_->has_zero_init(); }
    nlohmann::ordered_json specific_info() const override { return file_->specific_info(); }
    Result<CheckReport> check(CheckRepair repair) override { return file_->check(repair); }
    bool has_driver_info() const override { return file_->has_driver_info(); }
    bool encrypted() const override { return file_->encrypted(); }
    Result<void> set_perm(Perms p) override { return file_->set_perm(p); }
    void debug_event(BlkdebugEvent e) override { file_->debug_event(e); }
};

// The node of one of QEMU's is_filter drivers (throttle, copy-on-read):
// the generic walks look through it (filtered_child), it has no
// format-specific information of its own, and it must see every byte that
// passes, so offloaded copies, which would go around it, are refused (the
// caller falls back to reads and writes). Internal snapshots are its
// child's (QEMU's bdrv_snapshot_fallback to the primary child).
class QemuFilterNode : public FilterNode {
public:
    using FilterNode::FilterNode;

    Result<std::vector<SnapshotInfo>> snapshot_list() override { return file_->snapshot_list(); }
    Result<void> snapshot_create(const SnapshotInfo &sn) override { return file_->snapshot_create(sn); }
    Result<void> snapshot_goto(const std::string &name) override { return file_->snapshot_goto(name); }
    Result<void> snapshot_delete(const std::string &id, const std::string &name) override {
        return file_->snapshot_delete(id, name);
    }

    BlockNode *filtered_child() const override { return file_.get(); }
    nlohmann::ordered_json specific_info() const override { return nullptr; }
    Result<void> copy_range_from(uint64_t, BlockNode &, uint64_t, uint64_t) override {
        return make_error(ENOTSUP, "Copy offloading is not supported");
    }
    Result<void> copy_range_to(BlockNode &, uint64_t, uint64_t, uint64_t) override {
        return make_error(ENOTSUP, "Copy offloading is not supported");
    }
};

}  // namespace qimg
