// BlockNode: the one interface shared by protocol drivers (file, later nbd,
// http) and format drivers (raw, qcow2, ...). The CLI and the engine talk to
// images only through it. A format node owns a protocol child (`file()`) and
// optionally a backing node (`backing()`).
//
// Concurrency contract: every method may be called from several threads at
// once; each driver says at the top of its main file how it guards its state.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "block/debug_event.h"
#include "block/perm.h"
#include "util/result.h"

namespace qimg {

class BlockNode;
using NodePtr = std::shared_ptr<BlockNode>;

// Flags of a block-status answer, mirroring QEMU's BDRV_BLOCK_* meanings.
enum BlockStatusFlag : uint32_t {
    kStatusData = 1u << 0,         // reads return data stored in this layer (or below, for RECURSE)
    kStatusZero = 1u << 1,         // reads return zeroes
    kStatusOffsetValid = 1u << 2,  // host_offset/host_node locate the data
    kStatusAllocated = 1u << 3,    // this layer defines the content (no backing fall-through)
    kStatusRecurse = 1u << 4,      // ask host_node at host_offset for finer data/zero detail
    kStatusEof = 1u << 5,          // the range reaches the end of the node
};

struct BlockStatus {
    uint32_t flags = 0;
    uint64_t bytes = 0;             // length of the extent, starting at the queried offset
    uint64_t host_offset = 0;       // valid with kStatusOffsetValid
    BlockNode *host_node = nullptr; // node that host_offset addresses
};

// How compress_cluster() compresses (qimg-only choices; the defaults give
// QEMU's output byte for byte).
struct CompressOptions {
    int level = -1;     // codec level; -1: QEMU's (zlib 6, zstd 3)
    bool fast = false;  // fastest deflate: ISA-L igzip when built with it, else zlib level 1
};

enum class Prealloc { Off, Metadata, Falloc, Full };
Result<Prealloc> parse_prealloc(std::string_view s);
std::string_view prealloc_name(Prealloc p);

// Cache behaviour of a node, from qemu-img's -t/-T cache modes.
struct CacheMode {
    bool direct = false;        // O_DIRECT
    bool writethrough = false;  // flush after every write
    bool no_flush = false;      // flushes are ignored ("unsafe")
};
// Parses "writeback", "writethrough", "none"/"off", "directsync", "unsafe".
Result<CacheMode> parse_cache_mode(std::string_view s);

// write_zeroes flags.
enum WriteZeroesFlag : unsigned {
    kZeroMayUnmap = 1u << 0,    // the range may be deallocated instead of written
    kZeroNoFallback = 1u << 1,  // fail with ENOTSUP instead of writing zero buffers
};

// Result of a consistency check (qemu-img check), in QEMU's terms.
struct CheckReport {
    int64_t corruptions = 0, leaks = 0, check_errors = 0;
    int64_t corruptions_fixed = 0, leaks_fixed = 0;
    int64_t image_end_offset = 0;
    int64_t total_clusters = 0, allocated_clusters = 0, fragmented_clusters = 0, compressed_clusters = 0;
    bool has_cluster_stats = false;
};
enum class CheckRepair { None, Leaks, All };

// An internal snapshot, as `qemu-img snapshot -l` and `info` list it
// (QEMU's QEMUSnapshotInfo).
struct SnapshotInfo {
    std::string id, name;
    uint64_t vm_state_size = 0;
    uint32_t date_sec = 0, date_nsec = 0;
    uint64_t vm_clock_nsec = 0;
    uint64_t icount = UINT64_MAX;  // UINT64_MAX: not recorded
};

// One `qemu-img bitmap` action on a persistent dirty bitmap.
struct BitmapAction {
    enum class Kind { Add, Remove, Clear, Enable, Disable, Merge };
    Kind kind = Kind::Add;
    std::string name;            // the bitmap acted on
    uint64_t granularity = 0;    // Add: 0 = the driver's default
    BlockNode *src = nullptr;    // Merge: node holding the source bitmap
    std::string src_name;        // Merge: source bitmap name
    std::string node_name;       // QEMU's node name, for messages ("#block123")
};

// A persistent dirty bitmap as a format lists it (qemu-img info, convert
// --bitmaps, measure).
struct PersistentBitmapInfo {
    std::string name;
    uint64_t granularity = 0;
    bool enabled = false;   // records writes (qcow2: the AUTO flag)
    bool in_use = false;    // inconsistent: not stored cleanly, data unusable
};

// The dirty bits of one bitmap: bit i covers bytes [i * granularity,
// (i+1) * granularity) of an image of `image_size` bytes, least significant
// bit first in each byte.
struct BitmapBits {
    uint64_t image_size = 0;
    uint64_t granularity = 0;
    std::vector<uint8_t> bits;
    bool in_use = false;  // inconsistent: `bits` is empty
};

// What a child node is to its parent: the edges of the graph. A node may
// have any number of children; file() and backing() are the first child of
// their kind.
enum class ChildKind {
    File,      // the protocol node (or filtered node) holding the image
    Backing,   // the backing image, read where this layer has no data
    DataFile,  // qcow2's external data file: guest data only
    Extent,    // one of several files holding the image (vmdk extents)
    Payload,   // an encryption payload or detached header (luks)
};

struct BlockChild {
    ChildKind kind = ChildKind::File;
    // The option prefix that configures it ("file", "backing", "data-file",
    // "extents.3"), and the name messages use.
    std::string name;
    NodePtr node;
};

class BlockNode {
public:
    virtual ~BlockNode() = default;

    // --- identity -------------------------------------------------------
    virtual std::string_view driver_name() const = 0;
    // The name users see ("image: ..."): the filename given, or a json: string.
    const std::string &filename() const { return filename_; }
    void set_filename(std::string f) { filename_ = std::move(f); }
    bool read_only() const { return read_only_; }

    // --- data path ------------------------------------------------------
    // Virtual size in bytes.
    virtual uint64_t length() const = 0;
    // Reads [off, off+len). Any alignment; ranges past length() are an error
    // for formats; protocols return zeroes past their end.
    virtual Result<void> read(uint64_t off, void *buf, size_t len) = 0;
    virtual Result<void> write(uint64_t off, const void *buf, size_t len);
    virtual Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags);
    virtual Result<void> discard(uint64_t off, uint64_t len);
    // Writes whole clusters compressed (qemu-img convert -c): `off` aligned to
    // compressed_cluster_size(), `len` a multiple of it except at the end of
    // the image. Formats that cannot compress answer ENOTSUP.
    virtual Result<void> write_compressed(uint64_t off, const void *buf, size_t len);
    // The unit write_compressed() works in; 0 when the format cannot compress.
    virtual uint32_t compressed_cluster_size() const { return 0; }
    // Every cluster must be written compressed (QEMU's
    // BlockDriverInfo.needs_compressed_writes: vmdk streamOptimized), so a
    // copy into it compresses as with -c.
    virtual bool needs_compressed_writes() const { return false; }
    // The same write split in two for a parallel engine: compress_cluster()
    // is pure CPU and thread-safe (any number of threads at once; `len` at
    // most compressed_cluster_size()); an empty result means "store this
    // cluster uncompressed". write_compressed_data() then allocates and
    // writes `data` for the cluster at `off` (serialised inside the driver;
    // callers that want QEMU's packed layout call it in offset order), or
    // `raw`/`len` as a normal write when `data` is empty. Defaults: ENOTSUP,
    // and write_compressed(off, raw, len).
    virtual Result<std::vector<uint8_t>> compress_cluster(const void *buf, size_t len,
                                                          const CompressOptions &opts) const;
    virtual Result<void> write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                               size_t len);
    virtual Result<void> flush();
    // Grows or shrinks the virtual size. `exact` is false when the driver may
    // round up (as QEMU's truncate with exact=false).
    virtual Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact);

    // Allocation status of this layer only, starting at `off`, for at most
    // `len` bytes (answers may be shorter). Layers below are consulted by
    // block/status.h. The default: everything is data at the same offset.
    virtual Result<BlockStatus> block_status(uint64_t off, uint64_t len);

    // Whether what block_status() leaves unallocated (neither data nor
    // zero) reads as zeroes where there is no backing file below, as for
    // every format (QEMU: drivers that support backing files). A protocol
    // that cannot say what it holds (null-co) answers false.
    virtual bool unallocated_reads_zero() const { return true; }

    // I/O alignment the node needs (O_DIRECT); callers need not honour it,
    // it is a hint for efficient request sizes.
    virtual uint32_t request_alignment() const { return 1; }

    // Page-cache advice for bulk streaming copies (convert), which neither
    // re-read what they wrote nor what they read: StartWriteback begins
    // writing back dirty pages, WaitWriteback waits for writeback begun
    // earlier, DropClean drops clean cached pages, WillNeed starts reading
    // a range the copy is about to read (asynchronous readahead, so that
    // the disk sees more requests than the copy has threads; never given
    // for a whole node). Best effort.
    // Host-file protocols act on it. len == 0: the whole node; the default
    // passes that to file(). A range [off, off+len) is in this node's
    // offsets: a format that maps them to its file's (raw) passes it on,
    // the default ignores it (it cannot tell where the range is stored).
    enum class CacheAdvice { StartWriteback, WaitWriteback, DropClean, WillNeed };
    virtual void cache_advice(CacheAdvice a, uint64_t off = 0, uint64_t len = 0);

    // Whether the order of writes changes what the image looks like
    // (formats that allocate as they go: qcow2 places clusters in write
    // order). When it does not (raw), a copy may write out of order
    // without -W and produce the same image.
    virtual bool layout_follows_write_order() const { return true; }

    // Offloaded copy (convert -C, QEMU's copy_range): copies [off, off+len)
    // of this node to `dst` at `dst_off` without passing the data through
    // user space. copy_range_from() is the source side, copy_range_to() the
    // destination side; each layer maps its offsets and hands over to its
    // child until two host files meet (copy_file_range). Default: ENOTSUP,
    // and the caller falls back to reading and writing.
    virtual Result<void> copy_range_from(uint64_t off, BlockNode &dst, uint64_t dst_off, uint64_t len);
    virtual Result<void> copy_range_to(BlockNode &src, uint64_t src_off, uint64_t off, uint64_t len);

    // --- metadata -------------------------------------------------------
    // Bytes allocated on the host for this node and its file children
    // ("disk size"); nullopt-like error when unknown. The default counts the
    // file child only: qemu-img 7.2 leaves a qcow2 external data file out.
    virtual Result<uint64_t> allocated_size();
    // Cluster size for "cluster_size:" in info; 0 when the format has none.
    virtual uint32_t cluster_size() const { return 0; }
    virtual bool is_dirty() const { return false; }
    // QEMU's bdrv_has_zero_init(): a newly created node of this kind reads
    // as zeroes everywhere, so a copy into it may skip zero writes. Default:
    // unknown, so no.
    virtual bool has_zero_init() const { return false; }
    // Format-specific information as qemu-img prints it under
    // "format-specific" ({"type": ..., "data": {...}}); null if none.
    virtual nlohmann::ordered_json specific_info() const { return nullptr; }
    // Consistency check / repair. Default: ENOTSUP ("does not support checks").
    virtual Result<CheckReport> check(CheckRepair repair);
    // Whether the driver answers QEMU's bdrv_get_info() (cluster size, dirty
    // flag); info prints "dirty-flag" only then. Formats without it override.
    virtual bool has_driver_info() const { return true; }
    virtual bool encrypted() const { return false; }

    // --- internal snapshots (qemu-img snapshot) -------------------------
    // Default: ENOTSUP, which `snapshot -l` and `info` treat as "none".
    virtual Result<std::vector<SnapshotInfo>> snapshot_list();
    // Defaults give qemu-img's answers for formats without snapshots.
    virtual Result<void> snapshot_create(const SnapshotInfo &sn);
    virtual Result<void> snapshot_goto(const std::string &name);
    virtual Result<void> snapshot_delete(const std::string &id, const std::string &name);
    // QEMU's bdrv_snapshot_load_tmp (convert -l, measure -l): a read-only
    // node reads the snapshot with this ID and/or name (null: not compared)
    // from now on. Default: qemu-img's "does not support" error.
    virtual Result<void> snapshot_load_tmp(const std::string *id, const std::string *name);

    // --- persistent dirty bitmaps (qemu-img bitmap) ---------------------
    // Default: the format stores no bitmaps ("Can't store persistent
    // bitmaps", "Dirty bitmap 'x' not found").
    virtual Result<void> bitmap_action(const BitmapAction &a);
    // The persistent bitmaps, in the image's order. Default: none.
    virtual Result<std::vector<PersistentBitmapInfo>> bitmap_list();
    // A copy of one bitmap's bits (merge sources, convert --bitmaps). Errors
    // in QEMU's words ("Dirty bitmap 'x' not found", inconsistent bitmaps).
    virtual Result<BitmapBits> bitmap_read(const std::string &name);
    // QEMU's bdrv_supports_persistent_dirty_bitmap.
    virtual bool supports_persistent_bitmaps() const { return false; }

    // --- metadata changes -----------------------------------------------
    // Records a new backing file name and format in the image header (empty
    // name: none). Default: ENOTSUP.
    virtual Result<void> change_backing_file(const std::string &name, const std::string &format);
    // Changes format options in place (qemu-img amend); options are the
    // validated `-o` values by name. Only called when the driver record
    // lists amend options. `status(done, total)` reports progress of long
    // operations (may be empty).
    using AmendStatus = std::function<void(int64_t done, int64_t total)>;
    virtual Result<void> amend(const std::map<std::string, std::string> &options, bool force,
                               const AmendStatus &status);
    // Drops every cluster this layer allocates, so that all reads fall
    // through to the backing file (QEMU's bdrv_make_empty, done by `qemu-img
    // commit` without -d). Default: ENOTSUP.
    virtual Result<void> make_empty();

    // --- permissions and locking ------------------------------------------
    // Takes the permissions `p` (block/perm.h) on this node, in place of any
    // taken before. Protocol nodes turn them into locks other processes see
    // (the file protocol into QEMU's lock bytes) and fail when another user
    // conflicts; the default accepts anything.
    virtual Result<void> set_perm(Perms p) { (void)p; return ok(); }

    // --- debug events (block/debug_event.h) -------------------------------
    // A format announces the I/O it is about to do on this node (its file
    // child); a blkdebug filter acts on it. Default: passed to file(), as
    // QEMU's bdrv_debug_event follows the primary child.
    virtual void debug_event(BlkdebugEvent e) {
        if (file_) file_->debug_event(e);
    }

    // --- graph ----------------------------------------------------------
    // The child a filter node shows unchanged (QEMU's bdrv_filter_bs of an
    // is_filter driver: throttle, copy-on-read), or nullptr. The generic
    // walks (block/status.h, backing_chain_next) look through it.
    virtual BlockNode *filtered_child() const { return nullptr; }
    // Every child, in the order attached. flush(), cache_advice() and
    // allocated_size() cover them by default (backing files excepted, and
    // a data file is left out of allocated_size() as qemu-img 7.2 does).
    const std::vector<BlockChild> &children() const { return children_; }
    BlockNode *child(ChildKind kind) const;
    BlockNode *file() const { return file_.get(); }
    BlockNode *backing() const { return backing_.get(); }
    const NodePtr &file_ptr() const { return file_; }
    const NodePtr &backing_ptr() const { return backing_; }
    // Backing file name as recorded in the image, its recorded format, and
    // the name resolved relative to this image (what is actually opened).
    const std::string &backing_filename() const { return backing_filename_; }
    const std::string &backing_format() const { return backing_format_; }
    const std::string &full_backing_filename() const { return full_backing_filename_; }

    // Set by the opener (BlockOpener::open_child and the generic open
    // code). set_file/set_backing replace the child of that kind.
    void attach_child(ChildKind kind, std::string name, NodePtr node);
    void set_file(NodePtr f) { attach_child(ChildKind::File, "file", std::move(f)); }
    void set_backing(NodePtr b) { attach_child(ChildKind::Backing, "backing", std::move(b)); }
    void set_read_only(bool ro) { read_only_ = ro; }
    void set_backing_names(std::string name, std::string fmt, std::string full) {
        backing_filename_ = std::move(name);
        backing_format_ = std::move(fmt);
        full_backing_filename_ = std::move(full);
    }

protected:
    Error not_supported(std::string_view what) const;

    std::vector<BlockChild> children_;
    // The File and Backing children, kept by attach_child for the drivers'
    // hot paths.
    NodePtr file_;
    NodePtr backing_;
    std::string filename_;
    std::string backing_filename_, backing_format_, full_backing_filename_;
    bool read_only_ = true;
};

// QEMU's bdrv_skip_filters(): the first node from `node` down that is not
// a filter.
BlockNode *skip_filters(BlockNode *node);
// QEMU's bdrv_backing_chain_next(): the backing node of `node`'s first
// non-filter node, itself with filters skipped; nullptr when none.
BlockNode *backing_chain_next(BlockNode *node);

// Reads that may cross the end of `node`: the part past length() reads as zeroes.
Result<void> read_padded(BlockNode &node, uint64_t off, void *buf, size_t len);

}  // namespace qimg
