// The qcow2 format driver (qcow2.txt, QEMU 7.2 behaviour): opening and
// validating images, reads through L1/L2 (standard, extended L2,
// compressed, zero clusters, backing files, external data files),
// allocation status, format-specific info, and the write path (cluster and
// L2 allocation, copy-on-write, zero/discard, truncate, compressed writes).
//
// Concurrency: one mutex (mu_) guards all metadata: header, L1, the L2 and
// refcount caches and pending frees. Reads and in-place writes of already
// allocated clusters look the mapping up under the mutex and do the data
// I/O without it; allocating writes hold it for the whole cluster. A
// cluster freed by a concurrent discard/COW is only released at the next
// metadata flush (pending_frees_), which keeps that window small; callers
// that discard and read the same range concurrently get either content.
//
// Crash safety: a new data cluster's refcount is set before its L2 entry;
// refcount blocks are written and synced before any dirty L2 table
// (L2Cache::before_write), a new L2 table is on disk before the L1 entry
// points at it, and freed clusters are decremented only after the L2
// tables that dropped them are on disk. An interruption leaks clusters at
// worst.
#include "format/qcow2/qcow2.h"
#include "format/qcow2/measure.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "block/open.h"
#include "block/status.h"
#include "format/qcow2/compress.h"
#include "util/endian.h"
#include "util/progname.h"

namespace qimg::qcow2 {
namespace {

std::string hex(uint64_t v) {
    char b[32];
    std::snprintf(b, sizeof b, "%#" PRIx64, v);
    return b;
}

}  // namespace

Qcow2Node::Qcow2Node(NodePtr file, Header h) : header_(std::move(h)) { file_ = std::move(file); }

Qcow2Node::~Qcow2Node() { (void)close(); }

uint64_t Qcow2Node::length() const {
    std::lock_guard g(mu_);
    return header_.size;
}

bool Qcow2Node::is_dirty() const {
    std::lock_guard g(mu_);
    return header_.incompatible & kIncompatDirty;
}

// As QEMU: an image without preallocated metadata reads as zeroes; a
// preallocated one only if its data file does.
bool Qcow2Node::has_zero_init() const {
    std::lock_guard g(mu_);
    bool preallocated = !l1_table_.empty() && l1_table_[0] != 0;
    if (preallocated && encryption_.active()) return false;
    return !preallocated || (data_file_ && data_file_->has_zero_init());
}

Result<void> Qcow2Node::init() {
    cluster_bits_ = header_.cluster_bits;
    cluster_size_ = header_.cluster_size();
    l2_entry_words_ = header_.extended_l2() ? 2 : 1;
    l2_index_bits_ = cluster_bits_ - (header_.extended_l2() ? 4 : 3);
    l2_entries_ = uint64_t{1} << l2_index_bits_;
    subclusters_per_cluster_ = header_.extended_l2() ? kSubclusters : 1;
    subcluster_size_ = cluster_size_ / subclusters_per_cluster_;
    l2_layout_ = L2Layout(cluster_bits_, header_.extended_l2(), header_.has_data_file());

    l1_table_.assign(header_.l1_size, 0);
    if (header_.l1_size) {
        std::vector<uint8_t> raw(uint64_t(header_.l1_size) * 8);
        auto r = read_padded(*file_, header_.l1_table_offset, raw.data(), raw.size());
        if (!r) return Err(r.error().prepended("Could not read L1 table: "));
        for (uint64_t i = 0; i < header_.l1_size; i++) l1_table_[i] = be64(&raw[i * 8]);
    }
    refcounts_ = std::make_unique<Refcounts>(*file_, cluster_bits_, header_.refcount_order, [this](uint64_t off, uint32_t clusters) -> Result<void> {
        QIMG_TRY(write_refcount_table_pointer(*file_, off, clusters));
        header_.refcount_table_offset = off;
        header_.refcount_table_clusters = clusters;
        return file_->flush();
    });
    {
        auto r = refcounts_->load(header_.refcount_table_offset, header_.refcount_table_clusters);
        if (!r) return Err(r.error().prepended("Could not initialize refcount handling: "));
    }
    l2_cache_ = std::make_unique<L2Cache>(*file_, cluster_size_, [this]() -> Result<void> {
        QIMG_TRY(refcounts_->write_back());
        return file_->flush();
    });
    return ok();
}

Result<std::shared_ptr<Qcow2Node>> Qcow2Node::open(OpenRequest &req) {
    const bool rw = req.flags.read_write;
    // qemu-img check (BDRV_O_CHECK) may open corrupt images read-write to repair them.
    QIMG_ASSIGN(Header h, read_header(*req.file, rw && !req.flags.check, req.flags.check));
    // Without a key only metadata can be read (qemu-img info).
    QIMG_ASSIGN(Encryption enc, open_encryption(h, *req.file, req.options, req.flags.no_io, *req.secrets));
    QIMG_ASSIGN(RuntimeOptions runtime, take_runtime_options(req.options, h, h.size));
    if (h.stale_bitmaps_extension) {
        // QEMU's qcow2_read_extensions, on every open (no newline at the end).
        std::fprintf(stderr, "%s: warning: %s\nSome clusters may be leaked, run 'qemu-img check -r' on the "
                             "image file to fix.",
                     program_name().c_str(),
                     h.version < 3 ? "This qcow2 v2 image contains bitmaps, but they may have been modified by a "
                                     "program without persistent bitmap support; so now they must all be "
                                     "considered inconsistent"
                                   : "a program lacking bitmap support modified this file, so all bitmaps are now "
                                     "considered inconsistent");
    }
    auto node = std::make_shared<Qcow2Node>(req.file, std::move(h));
    node->encryption_ = std::move(enc);
    node->runtime_options_ = runtime;
    node->set_filename(req.filename);
    node->set_read_only(!rw);
    QIMG_TRY(node->init());
    // In check mode the check reads the snapshot table (QEMU skips it too,
    // so that a broken table can be reported and repaired).
    if (!req.flags.check) QIMG_TRY(node->load_snapshots());
    QIMG_TRY(node->load_bitmaps());
    // QEMU's qcow2_do_open: a writable open clears the autoclear bits it
    // does not know and rewrites the header at once, as it does for a stale
    // bitmaps extension (written without it).
    const bool clear_autoclear = rw && (node->header_.autoclear & ~kAutoclearMask);
    if (clear_autoclear) node->header_.autoclear &= kAutoclearMask;
    if (rw) QIMG_TRY(node->claim_bitmaps());
    if (rw && (node->header_.stale_bitmaps_extension || clear_autoclear)) {
        std::lock_guard g(node->mu_);
        node->header_.stale_bitmaps_extension = false;
        auto r = node->write_header_locked();
        if (!r) return Err(errno_error(r.error().code, "Could not update qcow2 header"));
    }
    const Header &hh = node->header_;
    QIMG_TRY(node->open_data_file(req));
    if (rw && !req.flags.check && (hh.incompatible & kIncompatDirty)) QIMG_TRY(node->repair_dirty());
    // The opener opens the backing file the header names (block/open.h).
    if (!hh.backing_file.empty())
        node->set_backing_names(hh.backing_file, hh.backing_format, resolve_recorded_name(*node, hh.backing_file));
    return node;
}

// QEMU's qcow2_do_open: the data-file child comes from the node's options
// (data-file.filename=...) or else from the name in the header. qemu-img
// info (BDRV_O_NO_IO) opens no data file at all, so that an untrusted
// image's reference to other files can be looked at safely.
Result<void> Qcow2Node::open_data_file(OpenRequest &req) {
    OptionMap child = extract_prefix(req.options, "data-file");
    std::optional<std::string> reference;
    if (auto it = req.options.find("data-file"); it != req.options.end()) {
        reference = it->second;
        req.options.erase(it);
    }
    if (req.flags.no_io) {
        data_file_ = header_.has_data_file() ? nullptr : file_;
        return ok();
    }
    // qemu-img names no nodes, so a reference can never be resolved.
    if (reference) return make_error(EINVAL, "Cannot find device='" + *reference + "' nor node-name='" + *reference + "'");
    ChildSpec spec;
    spec.kind = ChildKind::DataFile;
    spec.name = "data-file";
    spec.options = std::move(child);
    NodePtr df;
    if (!spec.options.empty()) {
        QIMG_ASSIGN(df, req.opener->open_child(*this, req.flags, spec));
    }
    if (!header_.has_data_file()) {
        if (df) return make_error(EINVAL, "'data-file' can only be set for images with an external data file");
        if (header_.data_file_raw()) return make_error(EINVAL, "data-file-raw requires a data file");
        data_file_ = file_;
        return ok();
    }
    if (!df && header_.data_file && !header_.data_file->empty()) {
        // QEMU opens the name the header records relative to the working
        // directory, not to the image.
        spec.recorded = *header_.data_file;
        QIMG_ASSIGN(df, req.opener->open_child(*this, req.flags, spec));
    }
    if (!df) return make_error(EINVAL, "'data-file' is required for this image");
    data_file_ = std::move(df);
    return ok();
}

Result<NodePtr> qcow2_open(OpenRequest &req) {
    QIMG_ASSIGN(auto n, Qcow2Node::open(req));
    return NodePtr(std::move(n));
}

// --- mapping -------------------------------------------------------------

Result<std::optional<std::shared_ptr<L2Table>>> Qcow2Node::load_l2_locked(uint64_t l1_index) {
    std::optional<std::shared_ptr<L2Table>> none;
    if (l1_index >= l1_table_.size()) return none;
    uint64_t l2_off = l1_table_[l1_index] & kL1OffsetMask;
    if (l2_off == 0) return none;
    if (l2_off & (cluster_size_ - 1))
        return Err(corruption_locked("L2 table offset " + hex(l2_off) + " unaligned (L1 index: " + hex(l1_index) + ")"));
    QIMG_ASSIGN(auto t, l2_cache_->get(l2_off));
    return std::optional<std::shared_ptr<L2Table>>(std::move(t));
}

// A lookup of the run of like subclusters at `off` inside one L2 table
// (classify() per subcluster), not a walk of whole tables: the walker of
// l1l2.h (for_each_l2_table / L2Layout::for_each_entry) serves the loops
// over every entry (snapshots, amend, check, make_empty); reads, writes and
// status take this path.
Result<Qcow2Node::Mapping> Qcow2Node::map_locked(uint64_t off, uint64_t len) {
    Mapping m;
    const uint64_t l1_index = off >> (cluster_bits_ + l2_index_bits_);
    const uint64_t table_end = (l1_index + 1) << (cluster_bits_ + l2_index_bits_);
    len = std::min(len, table_end - off);
    QIMG_ASSIGN(auto table, load_l2_locked(l1_index));
    if (!table) {
        m.bytes = len;
        return m;
    }
    const L2Table &t = **table;
    const bool ext = l2_entry_words_ == 2;
    bool first = true;
    uint64_t pos = off, expect_host = 0;
    while (pos < off + len) {
        uint64_t idx = (pos >> cluster_bits_) & (l2_entries_ - 1);
        uint64_t entry = t[idx * l2_entry_words_], bitmap = ext ? t[idx * l2_entry_words_ + 1] : 0;
        unsigned sc = unsigned((pos & (cluster_size_ - 1)) / subcluster_size_);
        SubclusterType type = classify(entry, bitmap, sc, ext, header_.has_data_file());
        if (type == SubclusterType::Invalid)
            return Err(corruption_locked("Invalid cluster entry found  (L2 offset: " +
                                         hex(l1_table_[l1_index] & kL1OffsetMask) + ", L2 index: " + hex(idx) + ")"));
        uint64_t host = 0;
        bool has_host = type == SubclusterType::Normal || type == SubclusterType::ZeroAlloc ||
                        type == SubclusterType::UnallocatedAlloc;
        if (has_host) {
            uint64_t hc = entry_host(entry);
            if (hc & (cluster_size_ - 1))
                return Err(corruption_locked("Cluster allocation offset " + hex(hc) + " unaligned (L2 offset: " +
                                             hex(l1_table_[l1_index] & kL1OffsetMask) + ", L2 index: " + hex(idx) + ")"));
            if (header_.data_file_raw() && hc != (pos & ~(cluster_size_ - 1)))
                return Err(corruption_locked("External data file host cluster offset " + hex(hc) +
                                             " does not match guest cluster offset: " + hex(pos & ~(cluster_size_ - 1)) +
                                             ", which is not allowed with raw external data"));
            host = hc + (pos & (cluster_size_ - 1));
        }
        uint64_t unit_end = std::min(off + len, (pos / subcluster_size_ + 1) * subcluster_size_);
        if (first) {
            m.type = type;
            m.host = host;
            m.l2_entry = entry;
            first = false;
        } else if (type != m.type || (has_host && host != expect_host)) {
            break;
        }
        expect_host = host + (unit_end - pos);
        m.bytes += unit_end - pos;
        pos = unit_end;
    }
    return m;
}

// --- reads ---------------------------------------------------------------

Result<void> Qcow2Node::read_unallocated(uint64_t off, uint8_t *buf, size_t len) {
    if (!backing_) {
        std::memset(buf, 0, len);
        return ok();
    }
    return read_padded(*backing_, off, buf, len);
}

Result<void> Qcow2Node::read_compressed(uint64_t entry, uint64_t in_cluster, uint8_t *buf, size_t len) {
    std::lock_guard g(decompressed_mu_);
    if (decompressed_cluster_.size() != cluster_size_ || decompressed_entry_ != entry) {
        const CompressedExtent c = decode_compressed(entry, cluster_bits_);
        std::vector<uint8_t> in(c.bytes);
        QIMG_TRY(read_padded(*data_file_, c.offset, in.data(), c.bytes));
        decompressed_cluster_.resize(cluster_size_);
        decompressed_entry_ = 0;
        QIMG_TRY(qcow2::decompress_cluster(header_.compression_type, in, decompressed_cluster_));
        decompressed_entry_ = entry;
    }
    std::memcpy(buf, decompressed_cluster_.data() + in_cluster, len);
    return ok();
}

// Reads without holding mu_ during data I/O (the mapping is looked up under it).
Result<void> Qcow2Node::read_range_unlocked(uint64_t off, uint8_t *p, size_t len) {
    while (len > 0) {
        Mapping m;
        {
            std::lock_guard g(mu_);
            QIMG_ASSIGN(m, map_locked(off, len));
        }
        size_t n = size_t(std::min<uint64_t>(m.bytes, len));
        switch (m.type) {
        case SubclusterType::Unallocated:
        case SubclusterType::UnallocatedAlloc:
            QIMG_TRY(read_unallocated(off, p, n));
            break;
        case SubclusterType::ZeroPlain:
        case SubclusterType::ZeroAlloc:
            std::memset(p, 0, n);
            break;
        case SubclusterType::Normal:
            file_->debug_event(BlkdebugEvent::ReadAio);
            QIMG_TRY(read_data(m.host, off, p, n));
            break;
        case SubclusterType::Compressed:
            n = size_t(std::min<uint64_t>(n, cluster_size_ - (off & (cluster_size_ - 1))));
            file_->debug_event(BlkdebugEvent::ReadCompressed);
            QIMG_TRY(read_compressed(m.l2_entry, off & (cluster_size_ - 1), p, n));
            break;
        case SubclusterType::Invalid:
            return make_error(EIO, "Invalid cluster entry");
        }
        off += n;
        p += n;
        len -= n;
    }
    return ok();
}

Result<void> Qcow2Node::read_data(uint64_t host, uint64_t guest, uint8_t *buf, size_t len) {
    if (!encryption_.active()) return read_padded(*data_file_, host, buf, len);
    // Whole sectors are read and decrypted; a partial one through a copy.
    constexpr uint64_t kSector = crypto::kCipherSectorSize;
    const uint64_t head = host % kSector, a1 = (host + len + kSector - 1) / kSector * kSector;
    if (head == 0 && len % kSector == 0) {
        QIMG_TRY(read_padded(*data_file_, host, buf, len));
        return encryption_.decrypt(host, guest, buf, len);
    }
    std::vector<uint8_t> tmp(a1 - (host - head));
    QIMG_TRY(read_padded(*data_file_, host - head, tmp.data(), tmp.size()));
    QIMG_TRY(encryption_.decrypt(host - head, guest - head, tmp.data(), tmp.size()));
    std::memcpy(buf, tmp.data() + head, len);
    return ok();
}

Result<void> Qcow2Node::write_data(uint64_t host, uint64_t guest, const uint8_t *buf, size_t len) {
    if (!encryption_.active()) return data_file_->write(host, buf, len);
    // QEMU's qcow2_co_encrypt on a bounce buffer: the caller's data stays clear.
    std::vector<uint8_t> tmp(buf, buf + len);
    QIMG_TRY(encryption_.encrypt(host, guest, tmp.data(), tmp.size()));
    return data_file_->write(host, tmp.data(), tmp.size());
}

Result<void> Qcow2Node::read(uint64_t off, void *buf, size_t len) {
    if (!data_file_) return make_error(ENOMEDIUM, std::strerror(ENOMEDIUM));  // opened for info only
    uint64_t size = length();
    if (off > size || len > size - off) return make_error(EIO, "Request beyond the end of the image");
    return read_range_unlocked(off, static_cast<uint8_t *>(buf), len);
}

// --- status and info -----------------------------------------------------

bool Qcow2Node::detect_metadata_preallocation_locked() {
    // QEMU's qcow2_detect_metadata_preallocation: more clusters in use than
    // the file really occupies means preallocated (sparse) data clusters.
    auto real = file_->allocated_size();
    if (!real) return false;
    uint64_t real_clusters = *real / cluster_size_;
    uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
    uint64_t end = (file_->length() + cluster_size_ - 1) / cluster_size_, count = 0;
    for (uint64_t i = 0; i < end && count < threshold; i++) {
        auto r = refcounts_->get(i);
        if (!r) return false;
        count += *r != 0;
    }
    return count >= threshold;
}

Result<BlockStatus> Qcow2Node::block_status(uint64_t off, uint64_t len) {
    std::lock_guard g(mu_);
    QIMG_ASSIGN(Mapping m, map_locked(off, len));
    BlockStatus s;
    s.bytes = m.bytes;
    switch (m.type) {
    case SubclusterType::Normal: s.flags = kStatusData | kStatusOffsetValid; break;
    case SubclusterType::ZeroAlloc: s.flags = kStatusZero | kStatusOffsetValid; break;
    case SubclusterType::UnallocatedAlloc: s.flags = kStatusOffsetValid; break;
    case SubclusterType::ZeroPlain: s.flags = kStatusZero; break;
    case SubclusterType::Compressed: s.flags = kStatusData; break;
    default: s.flags = 0; break;
    }
    // As QEMU: the host offset of encrypted data is of no use to a reader.
    if (encryption_.active()) s.flags &= ~kStatusOffsetValid;
    if (s.flags & kStatusOffsetValid) {
        s.host_offset = m.host;
        s.host_node = data_file_.get();
    }
    // Only preallocated metadata sends the caller down to the data file; a
    // raw external data file (data_file_raw) does not, so qemu-img 7.2 maps
    // its clusters as data even where the data file has holes.
    if ((s.flags & kStatusData) && (s.flags & kStatusOffsetValid)) {
        if (!metadata_prealloc_) metadata_prealloc_ = detect_metadata_preallocation_locked();
        if (*metadata_prealloc_) s.flags |= kStatusRecurse;
    }
    return s;
}

void Qcow2Node::cache_advice(CacheAdvice a, uint64_t off, uint64_t len) {
    // Mapping the range could read L2 tables in the caller's thread (the
    // copy's dispatcher): readahead is left to the reads themselves.
    if (a == CacheAdvice::WillNeed) return;
    if (len == 0) {
        file_->cache_advice(a);
        if (data_file_ && data_file_ != file_) data_file_->cache_advice(a);
        return;
    }
    const uint64_t size = length();
    if (off >= size) return;
    len = std::min(len, size - off);
    // Host runs first, under the lock; the advice itself without it.
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    {
        std::lock_guard g(mu_);
        while (len > 0) {
            auto m = map_locked(off, len);
            if (!m || m->bytes == 0) break;  // best effort: a damaged table ends it
            if (m->type == SubclusterType::Normal || m->type == SubclusterType::ZeroAlloc) {
                if (!runs.empty() && runs.back().first + runs.back().second == m->host)
                    runs.back().second += m->bytes;
                else
                    runs.emplace_back(m->host, m->bytes);
            }
            off += m->bytes;
            len -= m->bytes;
        }
    }
    for (auto [host, n] : runs) data_file_->cache_advice(a, host, n);
}

nlohmann::ordered_json Qcow2Node::specific_info() const {
    std::lock_guard g(mu_);
    nlohmann::ordered_json data;
    if (header_.version == 2) {
        data["compat"] = "0.10";
        data["compression-type"] = "zlib";
        data["refcount-bits"] = header_.refcount_bits();
    } else {
        data["compat"] = "1.1";
        data["compression-type"] = header_.compression_type == kCompressionZstd ? "zstd" : "zlib";
        data["lazy-refcounts"] = bool(header_.compatible & kCompatLazyRefcounts);
        if (!bitmaps_.empty()) {
            // As published on disk (QEMU's qcow2_get_bitmap_info_list).
            nlohmann::ordered_json arr = nlohmann::ordered_json::array();
            for (const LoadedBitmap &b : bitmaps_) {
                nlohmann::ordered_json e;
                nlohmann::ordered_json flags = nlohmann::ordered_json::array();
                if (b.entry.flags & kBmeFlagInUse) flags.push_back("in-use");
                if (b.entry.flags & kBmeFlagAuto) flags.push_back("auto");
                e["flags"] = flags;
                e["name"] = b.entry.name;
                e["granularity"] = uint64_t{1} << b.entry.granularity_bits;
                arr.push_back(e);
            }
            data["bitmaps"] = arr;
        }
        data["refcount-bits"] = header_.refcount_bits();
        if (header_.data_file) data["data-file"] = *header_.data_file;
        if (header_.has_data_file()) data["data-file-raw"] = header_.data_file_raw();
        data["corrupt"] = bool(header_.incompatible & kIncompatCorrupt);
        data["extended-l2"] = header_.extended_l2();
    }
    if (nlohmann::ordered_json e = encryption_info_json(encryption_); !e.is_null()) data["encrypt"] = e;
    nlohmann::ordered_json out;
    out["type"] = "qcow2";
    out["data"] = data;
    return out;
}

// --- metadata updates ----------------------------------------------------

Result<void> Qcow2Node::write_header_locked() {
    QIMG_TRY(write_header_safely(*file_, header_));
    return file_->flush();
}

void Qcow2Node::signal_corruption_locked(const std::string &what, bool fatal) {
    fatal = fatal && !read_only_;
    if (signaled_corruption_ && (!fatal || (header_.incompatible & kIncompatCorrupt))) return;
    if (fatal)
        std::fprintf(stderr, "qcow2: Marking image as corrupt: %s; further corruption events will be suppressed\n",
                     what.c_str());
    else
        std::fprintf(stderr, "qcow2: Image is corrupt: %s; further non-fatal corruption events will be suppressed\n",
                     what.c_str());
    if (fatal && header_.version >= 3) {  // v2 headers have no feature bits
        // qcow2_mark_corrupt: the bit in memory, then the one header field
        // synced; best effort, the caller's EIO is what counts.
        header_.incompatible |= kIncompatCorrupt;
        if (write_header_field(*file_, hdr::kIncompatibleFeatures, header_.incompatible)) (void)file_->flush();
    }
    signaled_corruption_ = true;
}

Error Qcow2Node::corruption_locked(const std::string &what) {
    signal_corruption_locked(what, true);
    return Error{EIO, std::strerror(EIO)};
}

Result<void> Qcow2Node::prepare_write_locked() {
    if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");
    // Bitmaps are published IN_USE before the image changes (bitmap_node.cpp;
    // normally already at open).
    if (!bitmaps_tracking_ && !bitmaps_.empty()) QIMG_TRY(start_bitmap_tracking_locked(false));
    if (first_write_done_) return ok();
    bool update = false;
    // Autoclear bits we do not maintain (unknown ones) are cleared before
    // the first change, as the spec asks; the bitmaps bit stays with them.
    uint64_t keep = kAutoclearDataFileRaw | (header_.bitmaps ? kAutoclearBitmaps : 0);
    if (header_.autoclear & ~keep) {
        header_.autoclear &= keep;
        update = true;
    }
    if ((header_.compatible & kCompatLazyRefcounts) && !(header_.incompatible & kIncompatDirty)) {
        header_.incompatible |= kIncompatDirty;
        lazy_dirty_set_ = true;
        update = true;
    }
    if (update) QIMG_TRY(write_header_locked());
    first_write_done_ = true;
    return ok();
}

// QEMU's qcow2_mark_dirty, for changes that update refcounts and the L1/L2
// COPIED flags in separate writes (internal snapshots): until close() has
// flushed everything and cleared the bit, an interrupted image is marked as
// one whose refcounts need the repair QEMU and qimg do on a read-write open.
// v2 images have no dirty bit.
Result<void> Qcow2Node::mark_dirty_locked() {
    if (header_.version < 3 || (header_.incompatible & kIncompatDirty)) return ok();
    header_.incompatible |= kIncompatDirty;
    lazy_dirty_set_ = true;
    dirty_change_pending_ = true;
    return write_header_locked();
}

Result<void> Qcow2Node::free_later(uint64_t entry) {
    if (entry & kOflagCompressed) {
        const CompressedExtent c = decode_compressed(entry, cluster_bits_);
        pending_frees_.emplace_back(c.offset, c.bytes);
    } else if (!header_.has_data_file()) {
        uint64_t host = entry_host(entry);
        if (host) pending_frees_.emplace_back(host, cluster_size_);
    }
    if (pending_frees_.size() > 4096) QIMG_TRY(flush_metadata_locked());
    return ok();
}

// QEMU queues the discards of freed clusters and merges adjacent ones
// (qcow2_process_discards): with clusters smaller than a file system block,
// only a merged run frees the blocks it covers, so runs are punched whole.
Result<void> Qcow2Node::discard_freed_locked(const std::vector<uint64_t> &hosts) {
    std::vector<uint64_t> free_clusters;
    for (uint64_t host : hosts) {
        QIMG_ASSIGN(uint64_t rc, refcounts_->get(host >> cluster_bits_));
        if (rc == 0) free_clusters.push_back(host >> cluster_bits_);
    }
    std::sort(free_clusters.begin(), free_clusters.end());
    free_clusters.erase(std::unique(free_clusters.begin(), free_clusters.end()), free_clusters.end());
    for (size_t i = 0; i < free_clusters.size();) {
        size_t j = i + 1;
        while (j < free_clusters.size() && free_clusters[j] == free_clusters[j - 1] + 1) ++j;
        (void)file_->discard(free_clusters[i] << cluster_bits_, (j - i) * cluster_size_);
        i = j;
    }
    return ok();
}

Result<void> Qcow2Node::flush_metadata_locked() {
    QIMG_TRY(l2_cache_->write_back());
    if (!pending_frees_.empty()) {
        QIMG_TRY(file_->flush());  // L2 tables that dropped the clusters are durable
        for (auto [off, len] : pending_frees_) QIMG_TRY(refcounts_->update(off, len, -1));
        pending_frees_.clear();
    }
    QIMG_TRY(refcounts_->write_back());
    return ok();
}

Result<void> Qcow2Node::flush() {
    std::lock_guard g(mu_);
    if (!read_only_) QIMG_TRY(flush_metadata_locked());
    // Bitmap changes (qemu-img bitmap) are published here; bitmaps that
    // record guest writes are stored at close.
    if (!read_only_ && bitmaps_need_store_ && !bitmaps_tracking_) QIMG_TRY(store_bitmaps_locked(false));
    QIMG_TRY(file_->flush());
    if (data_file_ && data_file_ != file_) QIMG_TRY(data_file_->flush());
    return ok();
}

Result<void> Qcow2Node::close() {
    std::lock_guard g(mu_);
    if (closed_ || read_only_ || !refcounts_) return ok();
    closed_ = true;
    QIMG_TRY(flush_metadata_locked());
    if (bitmaps_need_store_) QIMG_TRY(store_bitmaps_locked(false));
    QIMG_TRY(file_->flush());
    if (data_file_ && data_file_ != file_) QIMG_TRY(data_file_->flush());
    // As QEMU's qcow2_inactivate, closing a read-write node marks it clean
    // (this includes a dirty image that check -r could not repair).
    // A change begun under mark_dirty_locked() that failed half-way leaves
    // the bit set, so that the next read-write open repairs the refcounts.
    if ((lazy_dirty_set_ || (header_.incompatible & kIncompatDirty)) && !dirty_change_pending_) {
        header_.incompatible &= ~kIncompatDirty;
        QIMG_TRY(write_header_locked());
    }
    return ok();
}

Result<void> Qcow2Node::set_backing_file(const std::string &name, const std::string &fmt) {
    std::lock_guard g(mu_);
    Header saved = header_;
    header_.backing_file = name;
    header_.backing_format = fmt;
    auto r = write_header_locked();
    if (!r) {
        header_ = saved;
        return r;
    }
    set_backing_names(name, fmt, resolve_recorded_name(*this, name));
    return ok();
}

Result<void> Qcow2Node::grow_l1_locked(uint64_t min_size) {
    if (min_size <= l1_table_.size()) return ok();
    if (min_size > kMaxL1Bytes / 8) return make_error(EFBIG, "Failed to grow the L1 table: File too large");
    QIMG_TRY(flush_metadata_locked());
    uint64_t bytes = min_size * 8;
    QIMG_ASSIGN(uint64_t new_off, refcounts_->alloc_clusters((bytes + cluster_size_ - 1) / cluster_size_));
    std::vector<uint8_t> raw(bytes, 0);
    for (uint64_t i = 0; i < l1_table_.size(); i++) put_be64(&raw[i * 8], l1_table_[i]);
    // As qcow2_grow_l1_table: the refcounts are durable before the new
    // table is written (qcow2_cache_flush), each step then synced.
    QIMG_TRY(refcounts_->write_back());
    QIMG_TRY(file_->flush());
    QIMG_TRY(file_->write(new_off, raw.data(), raw.size()));
    QIMG_TRY(file_->flush());
    QIMG_TRY(write_l1_table_pointer(*file_, uint32_t(min_size), new_off));
    QIMG_TRY(file_->flush());
    uint64_t old_off = header_.l1_table_offset, old_bytes = l1_table_.size() * 8;
    header_.l1_table_offset = new_off;
    header_.l1_size = uint32_t(min_size);
    l1_table_.resize(min_size, 0);
    if (old_off && old_bytes) QIMG_TRY(refcounts_->update(old_off, old_bytes, -1));
    return ok();
}

Result<void> Qcow2Node::check_metadata_overlap(uint64_t host, uint64_t len) const {
    auto overlaps = [&](uint64_t a, uint64_t alen) { return alen && host < a + alen && a < host + len; };
    if (overlaps(0, cluster_size_) || overlaps(header_.l1_table_offset, uint64_t(l1_table_.size()) * 8) ||
        overlaps(header_.refcount_table_offset, uint64_t(header_.refcount_table_clusters) * cluster_size_))
        return make_error(EIO, "Preventing invalid write on metadata (overlaps with qcow2 metadata)");
    if (overlaps(header_.snapshots_offset, snapshots_size_))
        return make_error(EIO, "Preventing invalid write on metadata (overlaps with snapshot table)");
    for (const Snapshot &sn : snapshots_)
        if (overlaps(sn.l1_table_offset, uint64_t(sn.l1_size) * 8))
            return make_error(EIO, "Preventing invalid write on metadata (overlaps with inactive L1 table)");
    return ok();
}

// The L2 slot for `off`, allocating the L2 table if needed.
Result<Qcow2Node::Slot> Qcow2Node::l2_slot_for_write(uint64_t off) {
    uint64_t l1_index = off >> (cluster_bits_ + l2_index_bits_);
    if (l1_index >= l1_table_.size()) QIMG_TRY(grow_l1_locked(l1_index + 1));
    Slot s;
    s.index = (off >> cluster_bits_) & (l2_entries_ - 1);
    uint64_t l1e = l1_table_[l1_index];
    uint64_t l2_off = l1e & kL1OffsetMask;
    if (l2_off && !(l1e & kOflagCopied)) {
        // Shared with a snapshot: write to a copy (snapshot.cpp).
        QIMG_TRY(cow_l2_locked(l1_index));
        l1e = l1_table_[l1_index];
        l2_off = l1e & kL1OffsetMask;
    }
    if (l2_off == 0) {
        QIMG_ASSIGN(uint64_t n, refcounts_->alloc_clusters(1));
        auto t = std::make_shared<L2Table>(cluster_size_ / 8, 0);
        // Refcount first, then the table, then the L1 entry pointing at it.
        QIMG_TRY(refcounts_->write_back());
        QIMG_TRY(file_->flush());
        QIMG_TRY(l2_cache_->write_table(n, *t));
        QIMG_TRY(file_->flush());
        l1_table_[l1_index] = n | kOflagCopied;
        uint8_t e[8];
        put_be64(e, l1_table_[l1_index]);
        file_->debug_event(BlkdebugEvent::L1Update);
        QIMG_TRY(file_->write(header_.l1_table_offset + l1_index * 8, e, 8));
        QIMG_TRY(file_->flush());  // qcow2_write_l1_entry writes with bdrv_pwrite_sync
        l2_cache_->put_new(n, t);
        s.table = t;
        s.l2_offset = n;
        return s;
    }
    if (l2_off & (cluster_size_ - 1))
        return Err(corruption_locked("L2 table offset " + hex(l2_off) + " unaligned (L1 index: " + hex(l1_index) + ")"));
    QIMG_ASSIGN(s.table, l2_cache_->get(l2_off));
    s.l2_offset = l2_off;
    return s;
}

// --- writes ----------------------------------------------------------------

// Writes [off, off+len) within one cluster. Called with mu_ held.
Result<void> Qcow2Node::write_cluster_locked(uint64_t off, const uint8_t *buf, size_t len) {
    QIMG_ASSIGN(Slot s, l2_slot_for_write(off));
    L2Table &t = *s.table;
    const bool ext = l2_entry_words_ == 2;
    uint64_t entry = t[s.index * l2_entry_words_], bitmap = ext ? t[s.index * l2_entry_words_ + 1] : 0;
    const uint64_t cluster_start = off & ~(cluster_size_ - 1), in = off - cluster_start;
    const bool compressed = entry & kOflagCompressed;
    const uint64_t old_host = compressed ? 0 : entry_host(entry);
    const bool allocated = !compressed && (old_host != 0 || (header_.has_data_file() && (entry & kOflagCopied)));

    if (ext && ((bitmap >> 32) & bitmap & 0xffffffffu) && allocated)
        return make_error(EIO, "Invalid cluster entry found");

    // In place: the cluster is ours alone (COPIED) and not compressed.
    if (allocated && (entry & kOflagCopied)) {
        if (old_host & (cluster_size_ - 1))  // qcow2's handle_copied
            return Err(corruption_locked(std::string(entry & kOflagZero ? "Preallocated zero" : "Data") +
                                         " cluster offset " + hex(old_host) + " unaligned (guest offset: " + hex(off) +
                                         ")"));
        if (!header_.has_data_file()) QIMG_TRY(check_metadata_overlap(old_host, cluster_size_));
        if (!ext) {
            if (!(entry & kOflagZero)) return write_data(old_host + in, off, buf, len);
            // A zero cluster with a reserved host cluster: the rest must read as zeroes.
            std::vector<uint8_t> full(cluster_size_, 0);
            std::memcpy(full.data() + in, buf, len);
            QIMG_TRY(write_data(old_host, cluster_start, full.data(), cluster_size_));
            t[s.index] = entry & ~kOflagZero;
            l2_cache_->mark_dirty(s.l2_offset);
            return ok();
        }
        // Extended L2: fill the partial edges of subclusters that are not yet data.
        uint64_t sc0 = in / subcluster_size_, sc1 = (in + len - 1) / subcluster_size_;
        uint64_t a = sc0 * subcluster_size_, b = (sc1 + 1) * subcluster_size_;
        std::vector<uint8_t> area(b - a);
        for (uint64_t sc = sc0; sc <= sc1; sc++) {
            SubclusterType ty = classify(entry, bitmap, unsigned(sc), true, header_.has_data_file());
            uint8_t *p = area.data() + (sc * subcluster_size_ - a);
            if (ty == SubclusterType::Normal)
                QIMG_TRY(read_data(old_host + sc * subcluster_size_, cluster_start + sc * subcluster_size_, p,
                                   subcluster_size_));
            else if (ty == SubclusterType::ZeroAlloc) std::memset(p, 0, subcluster_size_);
            else QIMG_TRY(read_unallocated(cluster_start + sc * subcluster_size_, p, subcluster_size_));
        }
        std::memcpy(area.data() + (in - a), buf, len);
        QIMG_TRY(write_data(old_host + a, cluster_start + a, area.data(), area.size()));
        uint64_t mask = 0;
        for (uint64_t sc = sc0; sc <= sc1; sc++) mask |= uint64_t{1} << sc;
        uint64_t nb = (bitmap | mask) & ~(mask << 32);
        if (nb != bitmap) {
            t[s.index * 2 + 1] = nb;
            l2_cache_->mark_dirty(s.l2_offset);
        }
        return ok();
    }

    // Allocate a new host cluster (external data files map 1:1).
    uint64_t host;
    if (header_.has_data_file()) {
        host = cluster_start;
    } else {
        QIMG_ASSIGN(host, refcounts_->alloc_clusters(1));
    }
    uint64_t new_bitmap = 0;
    if (ext && !compressed && !allocated) {
        // Only the touched subclusters are written; the others keep their state.
        uint64_t sc0 = in / subcluster_size_, sc1 = (in + len - 1) / subcluster_size_;
        uint64_t a = sc0 * subcluster_size_, b = (sc1 + 1) * subcluster_size_;
        std::vector<uint8_t> area(b - a);
        if (in != a || in + len != b) {
            for (uint64_t sc : {sc0, sc1}) {
                uint8_t *p = area.data() + (sc * subcluster_size_ - a);
                if (bitmap & (uint64_t{1} << (sc + 32))) std::memset(p, 0, subcluster_size_);
                else QIMG_TRY(read_unallocated(cluster_start + sc * subcluster_size_, p, subcluster_size_));
            }
        }
        std::memcpy(area.data() + (in - a), buf, len);
        QIMG_TRY(write_data(host + a, cluster_start + a, area.data(), area.size()));
        uint64_t mask = 0;
        for (uint64_t sc = sc0; sc <= sc1; sc++) mask |= uint64_t{1} << sc;
        new_bitmap = (bitmap | mask) & ~(mask << 32);
    } else {
        std::vector<uint8_t> full(cluster_size_);
        if (len != cluster_size_) {
            // Copy-on-write: the rest of the cluster keeps what it read before.
            uint64_t vis = std::min<uint64_t>(cluster_size_, header_.size - cluster_start);
            mu_.unlock();
            auto r = read_range_unlocked(cluster_start, full.data(), vis);
            mu_.lock();
            QIMG_TRY(r);
            if (vis < cluster_size_) std::memset(full.data() + vis, 0, cluster_size_ - vis);
        }
        std::memcpy(full.data() + in, buf, len);
        QIMG_TRY(write_data(host, cluster_start, full.data(), cluster_size_));
        new_bitmap = ext ? 0xffffffffull : 0;
    }
    // The slot may have been evicted while unlocked: look it up again.
    QIMG_ASSIGN(Slot s2, l2_slot_for_write(off));
    uint64_t cur = (*s2.table)[s2.index * l2_entry_words_];
    if (cur != entry) {
        // Someone else changed the entry meanwhile; give our cluster back.
        if (!header_.has_data_file()) pending_frees_.emplace_back(host, cluster_size_);
        return write_cluster_locked(off, buf, len);
    }
    (*s2.table)[s2.index * l2_entry_words_] = host | kOflagCopied;
    if (ext) (*s2.table)[s2.index * 2 + 1] = new_bitmap;
    l2_cache_->mark_dirty(s2.l2_offset);
    if (compressed || (allocated && !header_.has_data_file())) QIMG_TRY(free_later(entry));
    return ok();
}

// Writes the leading clusters of [off, off+len) that have no host cluster
// yet (unallocated, or zero without a host) into one run of freshly
// allocated contiguous clusters: the refcounts are taken under the lock, the
// data goes out in one write without it (so other requests allocate and
// write meanwhile, and the file sees large sequential writes), and the L2
// entries are set afterwards. Stays within one L2 table. Returns the bytes
// of [off, off+len) written, 0 if the first cluster does not qualify.
//
// A request that starts or ends inside a cluster (a copy whose source
// extents are not cluster-aligned) takes its partial first and last
// clusters into the same run: their uncovered parts (zeroes, or what the
// backing file shows there) are written beside the data, as QEMU merges
// copy-on-write areas into the guest write, instead of each partial cluster
// being written whole under the lock and then again by the neighbouring
// request. Extended L2 entries keep per-subcluster state and so take only
// whole clusters here.
void Qcow2Node::wait_inflight_locked(std::unique_lock<std::mutex> &g, uint64_t start, uint64_t end) {
    inflight_done_.wait(g, [&] {
        return std::none_of(inflight_allocs_.begin(), inflight_allocs_.end(),
                            [&](const auto &r) { return r.first < end && start < r.second; });
    });
}

Result<uint64_t> Qcow2Node::write_new_clusters(uint64_t off, const uint8_t *buf, uint64_t len) {
    std::unique_lock g(mu_);
    if (header_.has_data_file() || len == 0) return uint64_t{0};
    const bool ext = l2_entry_words_ == 2;
    const uint64_t head = off & (cluster_size_ - 1);
    if (ext && (head || len < cluster_size_)) return uint64_t{0};
    const uint64_t start = off - head;
    // Clusters the request touches (whole ones only with extended L2).
    uint64_t want = ext ? len >> cluster_bits_ : (head + len + cluster_size_ - 1) >> cluster_bits_;
    uint64_t max_n = std::min<uint64_t>(want, l2_entries_ - ((start >> cluster_bits_) & (l2_entries_ - 1)));
    if (max_n == 0) return uint64_t{0};
    wait_inflight_locked(g, start, start + max_n * cluster_size_);
    QIMG_ASSIGN(Slot s, l2_slot_for_write(start));
    std::vector<std::pair<uint64_t, uint64_t>> old;  // entry, extended-L2 bitmap
    for (uint64_t i = 0; i < max_n; i++) {
        uint64_t e = (*s.table)[(s.index + i) * l2_entry_words_];
        if ((e & kOflagCompressed) || entry_host(e)) break;
        old.emplace_back(e, ext ? (*s.table)[(s.index + i) * 2 + 1] : 0);
    }
    const uint64_t n = old.size();
    if (n == 0) return uint64_t{0};
    const uint64_t run_end = start + n * cluster_size_;
    const uint64_t data_end = std::min(off + len, run_end);
    QIMG_ASSIGN(uint64_t host, refcounts_->alloc_clusters(n));
    inflight_allocs_.emplace_back(start, run_end);
    g.unlock();

    // The uncovered parts of the first and last cluster: what the cluster
    // showed before (zeroes for a zero cluster, else the backing file's
    // data, zeroes past the image's end).
    // Zeroes are written as a zeroing (fallocate on a file, as QEMU's
    // handle_alloc_space), so the padding the next request overwrites costs
    // no copy.
    auto pad = [&](uint64_t a, uint64_t b, uint64_t entry) -> Result<void> {
        if (a >= b) return ok();
        const uint64_t vis_end = std::min(b, header_.size);
        const bool zeroes = (entry & kOflagZero) || !backing_ || a >= vis_end;
        // Encrypted zeroes are data like any other.
        if (zeroes && !encryption_.active()) return data_file_->write_zeroes(host + (a - start), b - a, 0);
        std::vector<uint8_t> tmp(b - a, 0);
        if (!zeroes) QIMG_TRY(read_unallocated(a, tmp.data(), vis_end - a));
        return write_data(host + (a - start), a, tmp.data(), tmp.size());
    };
    file_->debug_event(BlkdebugEvent::WriteAio);
    auto wr = pad(start, off, old.front().first);
    if (wr) wr = write_data(host + head, off, buf, data_end - off);
    if (wr) wr = pad(data_end, run_end, old.back().first);
    g.lock();
    // Whatever happens below, the range is no longer being written.
    std::erase(inflight_allocs_, std::pair<uint64_t, uint64_t>(start, run_end));
    inflight_done_.notify_all();
    if (!wr) {
        pending_frees_.emplace_back(host, n * cluster_size_);
        return wr.error();
    }
    // Publish: the data is written, the refcounts are in the cache (and reach
    // the disk before any L2 table that points at them, L2Cache::before_write).
    for (uint64_t i = 0; i < n; i++) {
        const uint64_t coff = start + i * cluster_size_;
        QIMG_ASSIGN(Slot s2, l2_slot_for_write(coff));
        uint64_t &e = (*s2.table)[s2.index * l2_entry_words_];
        uint64_t bm = ext ? (*s2.table)[s2.index * 2 + 1] : 0;
        if (e != old[i].first || bm != old[i].second) {
            // Changed while unlocked (a concurrent write or zeroing of the
            // same cluster): give ours back and redo our part of this
            // cluster normally.
            pending_frees_.emplace_back(host + i * cluster_size_, cluster_size_);
            const uint64_t a = std::max(coff, off), b = std::min(coff + cluster_size_, data_end);
            QIMG_TRY(write_cluster_locked(a, buf + (a - off), b - a));
            continue;
        }
        e = (host + i * cluster_size_) | kOflagCopied;
        if (ext) (*s2.table)[s2.index * 2 + 1] = 0xffffffffull;
        l2_cache_->mark_dirty(s2.l2_offset);
    }
    return data_end - off;
}

Result<void> Qcow2Node::write(uint64_t off, const void *buf, size_t len) {
    const uint8_t *p = static_cast<const uint8_t *>(buf);
    {
        std::lock_guard g(mu_);
        QIMG_TRY(prepare_write_locked());
        if (off > header_.size || len > header_.size - off) return make_error(EIO, "Request beyond the end of the image");
        mark_bitmaps_dirty_locked(off, len);
    }
    constexpr uint64_t kSector = crypto::kCipherSectorSize;
    if (!encryption_.active() || len == 0 || ((off | len) % kSector) == 0) return write_guest(off, p, len);
    // Encrypted: whole sectors, the partial ones merged with what they hold
    // (QEMU's block layer pads requests to the request alignment).
    const uint64_t a0 = off / kSector * kSector, a1 = (off + len + kSector - 1) / kSector * kSector;
    std::vector<uint8_t> tmp(a1 - a0, 0);
    std::lock_guard g(crypt_rmw_mu_);
    const uint64_t size = length();
    QIMG_TRY(read(a0, tmp.data(), std::min<uint64_t>(kSector, size - a0)));
    if (a1 - a0 > kSector) QIMG_TRY(read(a1 - kSector, tmp.data() + (a1 - a0 - kSector), std::min<uint64_t>(kSector, size - (a1 - kSector))));
    std::memcpy(tmp.data() + (off - a0), p, len);
    return write_guest(a0, tmp.data(), tmp.size());
}

Result<void> Qcow2Node::write_guest(uint64_t off, const uint8_t *p, size_t len) {
    while (len > 0) {
        QIMG_ASSIGN(uint64_t batched, write_new_clusters(off, p, len));
        if (batched) {
            off += batched;
            p += batched;
            len -= batched;
            continue;
        }
        size_t n = size_t(std::min<uint64_t>(len, cluster_size_ - (off & (cluster_size_ - 1))));
        // Fast path: an allocated data cluster owned by us is written without the lock.
        bool done = false;
        {
            std::unique_lock g(mu_);
            const uint64_t cstart = off & ~(cluster_size_ - 1);
            wait_inflight_locked(g, cstart, cstart + cluster_size_);
            QIMG_ASSIGN(Mapping m, map_locked(off, n));
            if (m.type == SubclusterType::Normal && m.bytes >= n) {
                uint64_t l1_index = off >> (cluster_bits_ + l2_index_bits_);
                QIMG_ASSIGN(auto t, load_l2_locked(l1_index));
                uint64_t e = (**t)[((off >> cluster_bits_) & (l2_entries_ - 1)) * l2_entry_words_];
                if ((e & kOflagCopied) && (l1_table_[l1_index] & kOflagCopied)) {
                    if (!header_.has_data_file()) QIMG_TRY(check_metadata_overlap(m.host, n));
                    g.unlock();
                    file_->debug_event(BlkdebugEvent::WriteAio);
                    QIMG_TRY(write_data(m.host, off, p, n));
                    done = true;
                }
            }
            if (!done) {
                QIMG_TRY(write_cluster_locked(off, p, n));
                done = true;
            }
        }
        off += n;
        p += n;
        len -= n;
    }
    return ok();
}

// Makes a whole cluster read as zeroes (zero flag / all-zero bitmap) or
// deallocates it (discard). Called with mu_ held.
Result<void> Qcow2Node::zero_or_discard_cluster_locked(uint64_t off, bool zero, bool unmap) {
    // As QEMU, an L2 table is allocated even where none exists yet, so that
    // zeroed clusters are recorded (and shadow any backing file).
    QIMG_ASSIGN(Slot s, l2_slot_for_write(off));
    L2Table &t = *s.table;
    const bool ext = l2_entry_words_ == 2;
    uint64_t entry = t[s.index * l2_entry_words_];
    uint64_t old_bitmap = ext ? t[s.index * l2_entry_words_ + 1] : 0;
    const bool compressed = entry & kOflagCompressed;
    const uint64_t host = compressed ? 0 : entry_host(entry);
    const bool allocated = !compressed && (host != 0 || (header_.has_data_file() && (entry & kOflagCopied)));
    const bool need_zero = zero ? true : (backing_ != nullptr);
    uint64_t ne, nb = 0;
    bool free_old = compressed;
    if (!zero && header_.version < 3) {
        ne = 0;
        free_old = free_old || allocated;
    } else if (allocated && !unmap && zero && !header_.has_data_file()) {
        ne = entry & (kL2OffsetMask | kOflagCopied);
        if (!ext) ne |= kOflagZero;
    } else if (allocated && header_.has_data_file() && !unmap) {
        ne = entry & (kL2OffsetMask | kOflagCopied);
        if (!ext) ne |= kOflagZero;
    } else {
        ne = 0;
        free_old = free_old || (allocated && !header_.has_data_file());
        if (need_zero && !ext) ne |= kOflagZero;
    }
    if (ext) nb = need_zero ? (0xffffffffull << 32) : 0;
    if (ne == entry && (!ext || nb == old_bitmap)) return ok();
    t[s.index * l2_entry_words_] = ne;
    if (ext) t[s.index * 2 + 1] = nb;
    l2_cache_->mark_dirty(s.l2_offset);
    if (free_old) QIMG_TRY(free_later(entry));
    return ok();
}

// Extended L2: marks whole subclusters of one cluster as zero.
Result<void> Qcow2Node::zero_subclusters_locked(uint64_t off, uint64_t len) {
    QIMG_ASSIGN(Slot s, l2_slot_for_write(off));
    L2Table &t = *s.table;
    uint64_t entry = t[s.index * 2];
    if (entry & kOflagCompressed) {
        // Decompress into a regular cluster first, then zero in it.
        std::vector<uint8_t> z(len, 0);
        return write_cluster_locked(off, z.data(), len);
    }
    uint64_t in = off & (cluster_size_ - 1);
    uint64_t mask = 0;
    // Whole subclusters; a range ending at the image end takes its last partial one.
    for (uint64_t sc = in / subcluster_size_; sc < (in + len + subcluster_size_ - 1) / subcluster_size_; sc++) mask |= uint64_t{1} << sc;
    t[s.index * 2 + 1] = (t[s.index * 2 + 1] & ~mask) | (mask << 32);
    l2_cache_->mark_dirty(s.l2_offset);
    return ok();
}

// True if [a, b) reads as zeroes according to allocation status (QEMU's
// is_zero(): data clusters holding zeroes do not count). Call without mu_.
Result<bool> Qcow2Node::reads_as_zero(uint64_t a, uint64_t b) {
    b = std::min(b, length());
    while (a < b) {
        QIMG_ASSIGN(ChainStatus st, chain_status(*this, nullptr, a, b - a));
        if (!(st.flags & kStatusZero) || st.bytes == 0) return false;
        a += st.bytes;
    }
    return true;
}

// Zeroes as QEMU's qcow2 driver does: whole subclusters (clusters without
// extended L2) get the zero flag — an L2 table is allocated for them if
// needed —, v2 images without a backing file have them deallocated instead,
// and a partial unit becomes a zero unit when the rest of it already reads as
// zeroes and holds no data; otherwise the partial piece is written as zero
// data (or ENOTSUP with kZeroNoFallback).
Result<void> Qcow2Node::write_zeroes(uint64_t off, uint64_t len, unsigned flags) {
    {
        std::lock_guard g(mu_);
        QIMG_TRY(prepare_write_locked());
        if (off > header_.size || len > header_.size - off) return make_error(EIO, "Request beyond the end of the image");
        mark_bitmaps_dirty_locked(off, len);
    }
    const bool v2 = header_.version < 3;
    if (v2 && backing_) {
        // No zero flag in v2, and deallocating would show the backing file.
        if (flags & kZeroNoFallback) return not_supported("write_zeroes");
        return BlockNode::write_zeroes(off, len, flags);
    }
    // A raw external data file must hold the zeroes itself.
    if (header_.data_file_raw()) QIMG_TRY(data_file_->write_zeroes(off, len, flags & ~kZeroNoFallback));
    const uint64_t unit = v2 ? cluster_size_ : subcluster_size_;
    const uint64_t size = length();
    // Makes whole units [a, b) of one cluster read as zeroes.
    auto zero_units = [&](uint64_t a, uint64_t b) -> Result<void> {
        std::lock_guard g(mu_);
        uint64_t cstart = a & ~(cluster_size_ - 1);
        if (a == cstart && (b == cstart + cluster_size_ || b == size)) {
            return zero_or_discard_cluster_locked(a, !v2, v2 || (flags & kZeroMayUnmap));
        }
        return zero_subclusters_locked(a, b - a);
    };
    // A partial unit [x, y) inside unit [us, ue).
    auto partial = [&](uint64_t x, uint64_t y) -> Result<void> {
        uint64_t us = x / unit * unit, ue = std::min(us + unit, size);
        QIMG_ASSIGN(bool rest_zero, reads_as_zero(us, x));
        if (rest_zero) {
            QIMG_ASSIGN(rest_zero, reads_as_zero(y, ue));
        }
        if (rest_zero) {
            std::unique_lock g(mu_);
            QIMG_ASSIGN(Mapping m, map_locked(us, 1));
            if (m.type == SubclusterType::Unallocated || m.type == SubclusterType::UnallocatedAlloc ||
                m.type == SubclusterType::ZeroPlain || m.type == SubclusterType::ZeroAlloc) {
                g.unlock();
                return zero_units(us, ue);
            }
        }
        if (flags & kZeroNoFallback) return not_supported("write_zeroes");
        std::vector<uint8_t> z(y - x, 0);
        return write(x, z.data(), z.size());
    };
    const uint64_t end = off + len;
    while (off < end) {
        uint64_t cstart = off & ~(cluster_size_ - 1);
        uint64_t cend = std::min(cstart + cluster_size_, end);
        // Whole units of this cluster; the image's last unit counts as whole.
        uint64_t ua = std::min(cend, (off + unit - 1) / unit * unit);
        uint64_t ub = cend == size ? cend : std::max(ua, cend / unit * unit);
        if (off < ua) QIMG_TRY(partial(off, ua));
        if (ua < ub) QIMG_TRY(zero_units(ua, ub));
        if (ub < cend) QIMG_TRY(partial(ub, cend));
        off = cend;
    }
    return ok();
}

Result<void> Qcow2Node::discard(uint64_t off, uint64_t len) {
    std::lock_guard g(mu_);
    QIMG_TRY(prepare_write_locked());
    if (off > header_.size || len > header_.size - off) return make_error(EIO, "Request beyond the end of the image");
    // v2 has no zero flag: deallocating would expose the backing file (QEMU: ENOTSUP; a hint).
    if (header_.version < 3 && backing_) return ok();
    mark_bitmaps_dirty_locked(off, len);
    // Only whole clusters can be discarded; partial ones are left alone (a hint).
    uint64_t a = (off + cluster_size_ - 1) & ~(cluster_size_ - 1);
    uint64_t b = (off + len) & ~(cluster_size_ - 1);
    if (off + len == header_.size) b = (off + len + cluster_size_ - 1) & ~(cluster_size_ - 1);
    for (uint64_t c = a; c < b; c += cluster_size_) QIMG_TRY(zero_or_discard_cluster_locked(c, false, true));
    return ok();
}

// --- compressed writes ---------------------------------------------------

// Space for one compressed cluster, packed after the previous one as QEMU's
// qcow2_alloc_bytes does; every host cluster it touches gains a reference.
Result<uint64_t> Qcow2Node::alloc_compressed_bytes_locked(uint64_t size) {
    uint64_t start = free_byte_offset_;
    if (start != 0 && (start & (cluster_size_ - 1)) != 0) {
        uint64_t room = cluster_size_ - (start & (cluster_size_ - 1));
        if (size <= room) {
            QIMG_TRY(refcounts_->update(start, 1, +1));
            free_byte_offset_ = start + size;
            return start;
        }
        uint64_t more = (size - room + cluster_size_ - 1) / cluster_size_;
        QIMG_ASSIGN(uint64_t n, refcounts_->alloc_clusters(more));
        if (n == start + room) {
            QIMG_TRY(refcounts_->update(start, 1, +1));
            free_byte_offset_ = start + size;
            return start;
        }
        QIMG_TRY(refcounts_->update(n, more * cluster_size_, -1));
    }
    QIMG_ASSIGN(uint64_t n, refcounts_->alloc_clusters((size + cluster_size_ - 1) / cluster_size_));
    free_byte_offset_ = n + size;
    return n;
}

Result<void> Qcow2Node::write_compressed(uint64_t off, const void *buf, size_t len) {
    // QEMU refuses before anything else, the end-of-writes signal included.
    if (header_.has_data_file()) return make_error(ENOTSUP, "Compression is not supported with external data files");
    if (len == 0) {
        // QEMU's end-of-compressed-writes signal: truncating the file to its
        // length in whole sectors (file lengths are sector-rounded) leaves it
        // ending on a sector boundary, as qemu-img convert -c does.
        return file_->truncate(file_->length(), Prealloc::Off, false);
    }
    if (off & (cluster_size_ - 1)) return make_error(EINVAL, "Compressed writes must be cluster aligned");
    const uint8_t *p = static_cast<const uint8_t *>(buf);
    while (len > 0) {
        size_t n = size_t(std::min<uint64_t>(len, cluster_size_));
        QIMG_TRY(write_compressed_cluster(off, p, n));
        off += n;
        p += n;
        len -= n;
    }
    return ok();
}

Result<void> Qcow2Node::write_compressed_cluster(uint64_t off, const uint8_t *buf, size_t len) {
    QIMG_ASSIGN(std::vector<uint8_t> data, compress_cluster(buf, len, CompressOptions{}));
    return store_compressed(off, data, buf, len, true);
}

Result<std::vector<uint8_t>> Qcow2Node::compress_cluster(const void *buf, size_t len,
                                                         const CompressOptions &opts) const {
    return qcow2::compress_cluster(header_.compression_type, buf, len, cluster_size_, opts);  // empty: store normally
}

Result<void> Qcow2Node::write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                              size_t len) {
    // The engine's path (convert -c): QEMU's rules, so that -n into an
    // allocated cluster fails as in qemu-img.
    return store_compressed(off, data, raw, len, false);
}

Result<void> Qcow2Node::store_compressed(uint64_t off, std::span<const uint8_t> data, const void *raw, size_t len,
                                         bool may_overwrite) {
    if (off & (cluster_size_ - 1)) return make_error(EINVAL, "Compressed writes must be cluster aligned");
    if (len != cluster_size_ && off + len != length()) return make_error(EINVAL, "Compressed writes must cover whole clusters");
    if (header_.has_data_file()) return make_error(ENOTSUP, "Compression is not supported with external data files");
    if (data.empty()) return write(off, raw, len);  // incompressible: a normal cluster
    size_t clen = data.size();
    std::lock_guard g(mu_);
    QIMG_TRY(prepare_write_locked());
    mark_bitmaps_dirty_locked(off, len);
    QIMG_ASSIGN(Slot s, l2_slot_for_write(off));
    uint64_t old = (*s.table)[s.index * l2_entry_words_];
    // As QEMU: compression cannot overwrite an allocated cluster.
    if (!may_overwrite && (old & kL2OffsetMask)) return make_error(EIO, "Compressed cluster already allocated");
    QIMG_ASSIGN(uint64_t host, alloc_compressed_bytes_locked(clen));
    QIMG_TRY(file_->write(host, data.data(), clen));
    QIMG_ASSIGN(Slot s2, l2_slot_for_write(off));
    (*s2.table)[s2.index * l2_entry_words_] = encode_compressed(host, clen, cluster_bits_);
    if (l2_entry_words_ == 2) (*s2.table)[s2.index * 2 + 1] = 0;
    l2_cache_->mark_dirty(s2.l2_offset);
    if ((old & kOflagCompressed) || entry_host(old)) QIMG_TRY(free_later(old));
    return ok();
}

Result<void> Qcow2Node::allocate_initial_clusters() {
    std::lock_guard g(mu_);
    QIMG_ASSIGN(uint64_t off, refcounts_->alloc_clusters(3));
    if (off != 0) return make_error(EIO, "Huh, first cluster in empty image is already in use?");
    return ok();
}

// --- driver record ---------------------------------------------------------

namespace {

int qcow2_probe(std::span<const uint8_t> head, const std::string &) {
    ByteReader fields(head);
    if (head.size() >= kHeaderLengthWithCompression && fields.get(hdr::kMagic) == kMagic &&
        fields.get(hdr::kVersion) >= 2)
        return 100;
    return 0;
}

const Driver *make_qcow2_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "qcow2";
        d.probe = qcow2_probe;
        d.open = qcow2_open;
        d.create = qcow2_create;
        d.measure = measure;
        d.create_options = qcow2_create_options();
        d.amend_options = qcow2_amend_options();
        d.supports_backing = true;
        d.supports_compression = true;
        d.supports_check = true;
        d.strong_options = {"encrypt.key-secret"};
        d.supports_snapshots = true;
        d.supports_bitmaps = true;
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_qcow2_driver);

}  // namespace qimg::qcow2
