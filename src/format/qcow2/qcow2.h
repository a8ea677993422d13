// The qcow2 node: open/read/write/status over the header, cluster mapping
// and refcount units of this directory. Shared by qcow2.cpp (the driver)
// and create.cpp (which formats an image through a node).
#pragma once

#include <functional>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "block/driver.h"
#include "format/qcow2/bitmap.h"
#include "format/qcow2/check.h"
#include "format/qcow2/crypto.h"
#include "format/qcow2/header.h"
#include "format/qcow2/l1l2.h"
#include "format/qcow2/options.h"
#include "format/qcow2/refcount.h"
#include "format/qcow2/snapshot.h"

namespace qimg::qcow2 {

class Qcow2Node final : public BlockNode {
public:
    static Result<std::shared_ptr<Qcow2Node>> open(OpenRequest &req);
    Qcow2Node(NodePtr file, Header h);
    ~Qcow2Node() override;

    std::string_view driver_name() const override { return "qcow2"; }
    uint64_t length() const override;
    Result<void> read(uint64_t off, void *buf, size_t len) override;
    Result<void> write(uint64_t off, const void *buf, size_t len) override;
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override;
    Result<void> discard(uint64_t off, uint64_t len) override;
    Result<void> flush() override;
    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override;
    // qemu-img amend (amend.cpp): compat, refcount_bits, lazy_refcounts,
    // data_file(_raw), size; backing_file/backing_fmt only as they are.
    Result<void> amend(const std::map<std::string, std::string> &options, bool force,
                       const AmendStatus &status) override;
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override;
    // A range is mapped through the L2 tables to the data file's clusters
    // (compressed clusters are left alone); whole-node advice goes to the
    // image file and the data file.
    void cache_advice(CacheAdvice a, uint64_t off, uint64_t len) override;
    uint32_t cluster_size() const override { return uint32_t(cluster_size_); }
    bool is_dirty() const override;
    bool has_zero_init() const override;
    nlohmann::ordered_json specific_info() const override;
    bool encrypted() const override { return encryption_.active(); }
    // Encrypted images are ciphered in 512-byte sectors (QEMU sets
    // bl.request_alignment to the crypto sector size); write() also takes
    // smaller pieces, by read-modify-write.
    uint32_t request_alignment() const override { return encryption_.active() ? crypto::kCipherSectorSize : 1; }
    // Writes whole clusters (the last one may be shorter) compressed; an
    // incompressible cluster is stored normally, as QEMU does.
    Result<void> write_compressed(uint64_t off, const void *buf, size_t len) override;
    uint32_t compressed_cluster_size() const override { return header_.has_data_file() ? 0 : uint32_t(cluster_size_); }
    // write_compressed() in two steps for parallel engines (see node.h):
    // compression touches no state; the allocation and L2 update take mu_.
    Result<std::vector<uint8_t>> compress_cluster(const void *buf, size_t len,
                                                  const CompressOptions &opts) const override;
    Result<void> write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                       size_t len) override;

    // Records a backing file name and format in the header (create, rebase).
    Result<void> set_backing_file(const std::string &name, const std::string &fmt);
    // Backing-chain maintenance (chain.cpp): rebase's header change and
    // commit's emptying, both safe against interruption.
    Result<void> change_backing_file(const std::string &name, const std::string &fmt) override;
    Result<void> make_empty() override;
    // Flushes all metadata and clears the lazy-refcounts dirty bit.
    Result<void> close();
    // create: takes clusters 0-2 (header, refcount table, refcount block).
    Result<void> allocate_initial_clusters();
    // create (crypto.cpp): qcow2_set_up_encryption, after the size and the
    // backing file are set; the LUKS header clusters come next in the file.
    Result<void> set_up_encryption(const EncryptionCreate &c);
    const Header &header() const { return header_; }
    BlockNode *data_file() const { return data_file_.get(); }

    // qemu-img check and repair (check.cpp).
    Result<CheckReport> check(CheckRepair repair) override;
    // Repairs a dirty lazy-refcounts image (read-write open), clears the bit.
    Result<void> repair_dirty();

    // Internal snapshots (snapshot.cpp).
    Result<std::vector<SnapshotInfo>> snapshot_list() override;
    Result<void> snapshot_create(const SnapshotInfo &sn) override;
    Result<void> snapshot_goto(const std::string &id_or_name) override;
    Result<void> snapshot_delete(const std::string &id, const std::string &name) override;
    // Read-only nodes: reads see the snapshot's L1 table from now on (QEMU's
    // bdrv_snapshot_load_tmp; null = not compared).
    Result<void> snapshot_load_tmp(const std::string *id, const std::string *name) override;
    const std::vector<Snapshot> &snapshots() const { return snapshots_; }

    // Persistent dirty bitmaps (bitmap_node.cpp).
    Result<void> bitmap_action(const BitmapAction &a) override;
    Result<std::vector<PersistentBitmapInfo>> bitmap_list() override;
    Result<BitmapBits> bitmap_read(const std::string &name) override;
    bool supports_persistent_bitmaps() const override { return header_.version >= 3; }

private:
    friend class Checker;  // check.cpp
    // Reloads the refcount table from header_ (after check rebuilt it).
    Result<void> reset_refcounts();

    struct Mapping {
        SubclusterType type = SubclusterType::Unallocated;
        uint64_t bytes = 0;
        uint64_t host = 0;      // host offset of the first byte (when it has one)
        uint64_t l2_entry = 0;  // raw entry of the first cluster (compressed descriptor)
    };
    struct Slot {
        std::shared_ptr<L2Table> table;
        uint64_t l2_offset = 0;
        uint64_t index = 0;  // entry index in the table
    };

    Result<void> init();
    Result<void> open_data_file(OpenRequest &req);
    Result<Mapping> map_locked(uint64_t off, uint64_t len);
    Result<std::optional<std::shared_ptr<L2Table>>> load_l2_locked(uint64_t l1_index);
    Result<Slot> l2_slot_for_write(uint64_t off);
    Result<void> read_compressed(uint64_t l2_entry, uint64_t in_cluster, uint8_t *buf, size_t len);
    Result<void> read_unallocated(uint64_t off, uint8_t *buf, size_t len);
    Result<void> read_range_unlocked(uint64_t off, uint8_t *buf, size_t len);
    // Guest data at `host` in the data file that holds guest offset `guest`,
    // through the cipher of an encrypted image (crypto.h). Encryption runs
    // in the calling thread; callers that hold mu_ are the partial-cluster
    // paths only.
    Result<void> read_data(uint64_t host, uint64_t guest, uint8_t *buf, size_t len);
    Result<void> write_data(uint64_t host, uint64_t guest, const uint8_t *buf, size_t len);
    // write() once the request is checked (whole sectors when encrypted).
    Result<void> write_guest(uint64_t off, const uint8_t *p, size_t len);
    Result<void> write_cluster_locked(uint64_t off, const uint8_t *buf, size_t len);
    Result<uint64_t> write_new_clusters(uint64_t off, const uint8_t *buf, uint64_t len);
    Result<void> prepare_write_locked();
    Result<void> mark_dirty_locked();
    void dirty_change_done_locked() { dirty_change_pending_ = false; }
    Result<void> grow_l1_locked(uint64_t min_size);
    Result<void> write_header_locked();
    // QEMU's qcow2_signal_corruption, for the driver and its check alike:
    // reports `what` on stderr once (a fatal event again if the image is
    // not marked corrupt yet) and, when `fatal`, marks a v3 image corrupt
    // (header bit). On a read-only node every event is non-fatal.
    void signal_corruption_locked(const std::string &what, bool fatal);
    // A fatal corruption event; returns the EIO the caller fails with.
    Error corruption_locked(const std::string &what);
    Result<void> flush_metadata_locked();
    Result<void> free_later(uint64_t l2_entry);
    // Punches out each of these host clusters whose refcount is now 0, as
    // QEMU's file layer does for frees of the discard types it passes down
    // (QCOW2_DISCARD_ALWAYS and _SNAPSHOT). Only for clusters nothing
    // durable references any more.
    Result<void> discard_freed_locked(const std::vector<uint64_t> &hosts);
    Result<void> zero_or_discard_cluster_locked(uint64_t off, bool zero, bool unmap);
    Result<void> zero_subclusters_locked(uint64_t off, uint64_t len);
    Result<bool> reads_as_zero(uint64_t a, uint64_t b);
    Result<void> preallocate_area_locked(uint64_t from, uint64_t to, Prealloc p, bool hide_backing);
    Result<void> check_metadata_overlap(uint64_t host, uint64_t len) const;
    // hide_backing: the grown area must read as zeroes over a longer backing
    // file; returns whether the preallocation already made it so.
    Result<bool> preallocate_locked(uint64_t from, uint64_t to, Prealloc p, bool hide_backing = false);
    // prealloc.cpp: one allocation of preallocate_co (QEMU's QCowL2Meta).
    struct PreallocRun {
        uint64_t guest = 0, host = 0, clusters = 0;  // cluster-aligned
        bool keep_old = false;                       // clusters already there
        uint64_t cow_start_from = 0, cow_start_to = 0, cow_end_from = 0, cow_end_to = 0;  // bytes in the run
        uint64_t host_end = 0;  // host offset where the guest range of the run ends
    };
    bool needs_new_alloc(uint64_t entry) const;
    Result<bool> prealloc_cow_locked(PreallocRun &r, const L2Table &t, uint64_t index, uint64_t in,
                                     uint64_t bytes) const;
    Result<void> prealloc_link_locked(const PreallocRun &r);
    Result<uint64_t> prealloc_step_locked(uint64_t &offset, uint64_t to);
    Result<uint64_t> alloc_compressed_bytes_locked(uint64_t size);
    Result<void> write_compressed_cluster(uint64_t off, const uint8_t *buf, size_t len);
    // Stores one compressed cluster (or `raw` when `data` is empty); QEMU
    // refuses to overwrite an allocated cluster, write_compressed() allows it.
    Result<void> store_compressed(uint64_t off, std::span<const uint8_t> data, const void *raw, size_t len,
                                  bool may_overwrite);
    bool detect_metadata_preallocation_locked();
    uint64_t entry_host(uint64_t entry) const { return entry & kL2OffsetMask; }
    // chain.cpp
    bool has_initial_layout_locked() const;
    Result<void> reset_to_initial_layout_locked();
    Result<void> unmap_all_locked();
    // truncate.cpp
    Result<void> truncate_locked(uint64_t new_size, Prealloc prealloc, bool exact);
    Result<void> shrink_locked(uint64_t old, uint64_t new_size);
    Result<void> drop_cropped_clusters_locked(uint64_t old, uint64_t new_size, std::vector<uint64_t> &scratch_l2,
                                              std::vector<uint64_t> &shared_drops, uint64_t &grown_to);
    Result<void> zero_grown_area_locked(uint64_t old_size, uint64_t new_size);
    // amend.cpp
    Result<void> update_header_locked(const char *what);
    Result<void> mark_clean_locked();
    Result<void> upgrade_locked(const AmendStatus &status);
    Result<void> downgrade_locked(const AmendStatus &status);
    Result<void> expand_zero_clusters_locked(const AmendStatus &status);
    Result<void> expand_zero_clusters_in_l1_locked(const std::vector<uint64_t> &l1, uint64_t &visited, uint64_t total,
                                                   const AmendStatus &status);
    Result<void> change_refcount_order_locked(uint32_t order, const AmendStatus &status);
    // snapshot.cpp
    Result<void> load_snapshots();
    Result<std::vector<uint64_t>> read_l1_locked(uint64_t offset, uint32_t entries, uint64_t min_entries);
    Result<void> write_active_l1_locked();
    Result<std::pair<uint64_t, uint64_t>> l2_entry_ref_locked(const L2Entry &e, uint64_t l2_off) const;
    Result<std::shared_ptr<L2Table>> snapshot_l2_locked(uint64_t l1_entry, uint64_t l1_index);
    // Loaders for for_each_l2_table() (l1l2.h) through the L2 cache: an
    // unaligned table offset is an EIO for snapshot operations
    // (snapshot_l2_locked) and a corruption event for the active table
    // (load_l2_locked).
    auto snapshot_l2_loader() {
        return [this](uint64_t l1_index, uint64_t l2_offset) { return snapshot_l2_locked(l2_offset, l1_index); };
    }
    auto active_l2_loader() {
        return [this](uint64_t l1_index, uint64_t) -> Result<std::shared_ptr<L2Table>> {
            QIMG_ASSIGN(auto t, load_l2_locked(l1_index));
            return t ? *t : std::shared_ptr<L2Table>();
        };
    }
    Result<void> clear_copied_locked(std::vector<uint64_t> &l1, bool active);
    Result<void> check_references_counted_locked(const std::vector<uint64_t> &l1);
    Result<void> walk_references_locked(const std::vector<uint64_t> &l1,
                                        const std::function<Result<void>(uint64_t, uint64_t)> &on_cluster,
                                        const std::function<Result<void>(uint64_t)> &on_table);
    Result<void> update_snapshot_refcount_locked(const std::vector<uint64_t> &l1, int addend);
    Result<void> sync_copied_locked();
    // `pre_write` (check's metadata overlap check) vets the new table's
    // clusters before they are written.
    Result<void> write_snapshots_locked(std::vector<Snapshot> list,
                                        const std::function<Result<void>(uint64_t, uint64_t)> &pre_write = {});
    Result<void> cow_l2_locked(uint64_t l1_index);
    void forget_freed_state_locked();
    // bitmap_node.cpp
    struct LoadedBitmap {
        BitmapDirEntry entry;         // as the published directory has it
        std::vector<uint64_t> table;  // its published table (empty: not on disk yet)
        bool inconsistent = false;    // IN_USE when opened: data unusable, kept as it is
        bool enabled = false;         // records guest writes (AUTO)
        bool data_loaded = false;
        bool bits_changed = false;    // data and table must be rewritten
        bool in_use = false;          // published with IN_USE by this node (tracking)
        DirtyBits bits;
    };
    Result<void> load_bitmaps();
    Result<void> claim_bitmaps();
    Result<std::vector<uint64_t>> read_bitmap_table(const BitmapDirEntry &e);
    // Clusters a bitmap store frees; data clusters are also discarded, as
    // QEMU frees them with QCOW2_DISCARD_ALWAYS (tables and directories
    // with QCOW2_DISCARD_OTHER, which qemu-img does not pass down).
    struct BitmapDrop {
        uint64_t offset = 0, length = 0;
        bool discard = false;
    };
    void drop_bitmap_clusters(const BitmapDirEntry &e, const std::vector<uint64_t> &table,
                              std::vector<BitmapDrop> &drops) const;
    Result<void> load_bitmap_data_locked(LoadedBitmap &b);
    LoadedBitmap *find_bitmap_locked(const std::string &name);
    Result<void> start_bitmap_tracking_locked(bool all);
    Result<void> publish_in_use_in_place_locked();
    void mark_bitmaps_dirty_locked(uint64_t off, uint64_t len);
    Result<void> resize_bitmaps_locked(uint64_t new_size);
    // `directory_only`: a new directory of the published bitmaps as they
    // are (after a removal), nothing rewritten, tracking state unchanged.
    Result<void> store_bitmaps_locked(bool keep_tracking, bool directory_only = false);
    Result<uint64_t> write_bitmap_locked(const DirtyBits &bits, std::vector<uint64_t> &table,
                                         std::vector<std::pair<uint64_t, uint64_t>> &allocated);
    Result<void> merge_bitmap_locked(const BitmapAction &a);

    Encryption encryption_;  // set at open, then constant
    RuntimeOptions runtime_options_;  // set at open, then constant (checked, not used yet)

    mutable std::mutex mu_;  // guards everything below (metadata)
    Header header_;
    NodePtr data_file_;
    uint64_t cluster_size_ = 0;
    uint32_t cluster_bits_ = 0, l2_index_bits_ = 0;
    uint64_t l2_entries_ = 0;
    unsigned l2_entry_words_ = 1;  // 64-bit words per L2 entry (2 with extended L2)
    uint64_t subcluster_size_ = 0;
    unsigned subclusters_per_cluster_ = 1;
    L2Layout l2_layout_;  // decodes L2 entries (l1l2.h)
    std::vector<uint64_t> l1_table_;
    std::unique_ptr<Refcounts> refcounts_;
    std::unique_ptr<L2Cache> l2_cache_;
    std::vector<std::pair<uint64_t, uint64_t>> pending_frees_;  // (offset, length) after L2 write-back
    // Guest ranges [start, end) whose new clusters write_new_clusters() is
    // writing with mu_ released: a write to a cluster in one waits until it
    // is published (QEMU's handle_dependencies), so two requests never
    // allocate the same guest cluster twice.
    std::vector<std::pair<uint64_t, uint64_t>> inflight_allocs_;
    std::condition_variable inflight_done_;
    void wait_inflight_locked(std::unique_lock<std::mutex> &g, uint64_t start, uint64_t end);
    bool first_write_done_ = false;
    bool signaled_corruption_ = false;  // qcow2_signal_corruption reported once
    bool lazy_dirty_set_ = false;
    bool dirty_change_pending_ = false;  // mark_dirty_locked() change not completed
    uint64_t free_byte_offset_ = 0;  // compressed-cluster packing
    std::optional<bool> metadata_prealloc_;
    bool closed_ = false;
    std::vector<Snapshot> snapshots_;
    uint64_t snapshots_size_ = 0;  // bytes of the snapshot table on disk
    std::vector<LoadedBitmap> bitmaps_;  // directory order, then ones not stored yet
    std::vector<BitmapDrop> bitmap_drops_;  // freed after the next directory update
    bool bitmaps_need_store_ = false;
    bool bitmaps_tracking_ = false;  // IN_USE published; guest writes are recorded

    // Encrypted images: a write that is not sector-aligned reads, merges and
    // rewrites its head and tail sectors under this lock, so two such writes
    // sharing a sector do not lose each other's bytes.
    std::mutex crypt_rmw_mu_;

    std::mutex decompressed_mu_;  // one decompressed cluster, for small sequential reads
    uint64_t decompressed_entry_ = 0;
    std::vector<uint8_t> decompressed_cluster_;
};

Result<NodePtr> qcow2_open(OpenRequest &req);

}  // namespace qimg::qcow2

namespace qimg::qcow2 {
// create.cpp
Result<void> qcow2_create(CreateRequest &req);
std::vector<CreateOption> qcow2_create_options();
// amend.cpp
std::vector<CreateOption> qcow2_amend_options();
}  // namespace qimg::qcow2
