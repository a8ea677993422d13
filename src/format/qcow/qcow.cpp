// The qcow driver: QEMU's first copy-on-write format (version 1; QEMU's
// block/qcow.c is its only description), read and written as qemu-img 7.2
// does, with compressed clusters, a backing file and the legacy AES
// encryption (crypt_method 1: src/crypto/qcow_aes.h; each 512-byte sector
// of a cluster encrypted with the IV of its guest sector number; encrypted
// data is read and written in whole sectors, unaligned writes merged under
// rmw_mu_).
//
// Layout. A 48-byte header, the backing file name, the L1 table (one
// big-endian offset of an L2 table per 2^(cluster_bits + l2_bits) guest
// bytes), then L2 tables and clusters appended as they are needed. An L2
// entry is 0 (unallocated: the backing file, or zeroes), a cluster's
// offset, or a compressed cluster (header.h, decode_l2): raw deflate with
// a 4 KiB window, placed at any byte offset.
//
// Writes are ordered better than QEMU's, which points the L1 at an L2
// table before it is written and the L2 at a cluster before its data: new
// clusters and L2 tables are written first, and the entries naming them
// are kept in memory (the L2 table cache, dirty L1 entries) until the next
// flush, which makes the data durable, writes the L2 tables, makes them
// durable, then writes the L1 entries (flush_metadata). A kill at any
// point leaves every entry on disk naming data that was written before it:
// at worst unreferenced clusters at the end of the file, which the next
// allocation skips (allocation starts at the end of the file). A partial
// write to a new cluster fills the rest from the backing file (QEMU leaves
// zeroes there when the cluster is larger than the write).
//
// Hostile images: an entry naming data beyond INT64_MAX, an unaligned
// cluster offset or a compressed cluster that does not inflate to a whole
// cluster is an I/O error on reads of that cluster; the L1 table is read
// whole only when it lies in the file (or is small), so its size is bounded
// by the file's.
//
// Concurrency: the L1 table, the L2 table cache, the end of the file and
// the dirty state are guarded by mu_. A normal cluster never moves once
// allocated, so its data is read and rewritten outside the lock; an
// allocating write holds the lock until its data is written and its entry
// is in the cache, so a reader never finds an entry before the data.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "block/driver.h"
#include "block/open.h"
#include "block/table_cache.h"
#include "block/table_check.h"
#include "block/unit_cache.h"
#include "codec/codec.h"
#include "crypto/qcow_aes.h"
#include "crypto/sector_cipher.h"
#include "format/qcow/header.h"
#include "format/qcow/qcow.h"
#include "util/checked.h"
#include "util/endian.h"

namespace qimg::qcow {
namespace {

using L2Table = std::vector<uint64_t>;

// L2 tables kept in memory: 256 tables of at most 64 KiB.
constexpr size_t kL2CacheTables = 256;
constexpr uint64_t kCryptSector = crypto::kCipherSectorSize;
// An L1 table that reaches past the end of the file reads as zeroes there
// (as QEMU's file reads do); it is accepted only up to this size, so that
// a short hostile file cannot make us allocate gigabytes.
constexpr uint64_t kMaxL1BytesPastEof = 64ull << 20;

const char *kBadCluster = "qcow: invalid cluster offset in an L2 table";

class QcowNode final : public BlockNode {
public:
    QcowNode(NodePtr file, const Header &h, std::vector<uint64_t> l1,
             std::shared_ptr<const crypto::SectorCipher> cipher = nullptr)
        : h_(h), cs_(h.cluster_size()), size_(h.size / 512 * 512), cipher_(std::move(cipher)), l1_(std::move(l1)),
          l2_(kL2CacheTables, TableCache<L2Table>::Io{[this](uint64_t off) { return load_l2(off); },
                                                       [this](uint64_t off, const L2Table &t) { return store_l2(off, t); },
                                                       [this] { return file_->flush(); }}) {
        file_ = std::move(file);
        l1_dirty_.assign(l1_.size(), false);
    }
    ~QcowNode() override {
        if (!read_only_) (void)flush_metadata();
    }

    std::string_view driver_name() const override { return "qcow"; }
    uint64_t length() const override { return size_; }
    uint32_t cluster_size() const override { return uint32_t(cs_); }
    bool has_zero_init() const override { return true; }
    bool encrypted() const override { return h_.crypt_method != kCryptNone; }
    // Encrypted sectors are whole 512-byte units (QEMU's qcow declares that
    // alignment for every image).
    uint32_t request_alignment() const override { return cipher_ ? uint32_t(kCryptSector) : 1; }
    uint32_t compressed_cluster_size() const override { return encrypted() ? 0 : uint32_t(cs_); }

    Result<void> read(uint64_t off, void *buf, size_t len) override;
    Result<void> write(uint64_t off, const void *buf, size_t len) override;
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override;
    Result<void> flush() override {
        QIMG_TRY(flush_metadata());
        return BlockNode::flush();
    }
    Result<std::vector<uint8_t>> compress_cluster(const void *buf, size_t len,
                                                  const CompressOptions &opts) const override;
    Result<void> write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                       size_t len) override;
    Result<void> write_compressed(uint64_t off, const void *buf, size_t len) override {
        // qemu-img ends a compressed copy with an empty compressed write,
        // which QEMU's qcow driver refuses (so `convert -c -O qcow` exits 1
        // after writing a good image): nothing to do here.
        if (len == 0) return ok();
        QIMG_ASSIGN(auto z, compress_cluster(buf, len, CompressOptions{}));
        return write_compressed_data(off, z, buf, len);
    }
    Result<void> make_empty() override;

    // Called once by open on a read-write node: allocation starts at the
    // end of the file.
    void set_next_free(uint64_t end) { next_free_ = end; }

private:
    Result<void> check_io() const {
        if (encrypted() && !cipher_) return make_error(EPERM, "Cannot access an encrypted image opened without its key");
        return ok();
    }
    // Legacy AES (crypt_method 1): sectors numbered by guest offset.
    Result<void> decrypt(uint64_t off, uint8_t *buf, size_t len) const {
        return cipher_ ? cipher_->decrypt(off / kCryptSector, buf, len) : ok();
    }
    // An encrypted copy of `len` guest bytes at `off` (sector-aligned).
    Result<std::vector<uint8_t>> encrypted_copy(uint64_t off, const uint8_t *in, size_t len) const {
        std::vector<uint8_t> out(in, in + len);
        QIMG_TRY(cipher_->encrypt(off / kCryptSector, out.data(), out.size()));
        return out;
    }
    Result<void> read_aligned(uint64_t off, uint8_t *out, size_t len);
    Result<void> write_aligned(uint64_t off, const uint8_t *in, size_t len);
    Result<void> check_range(uint64_t off, uint64_t len) const {
        if (!range_fits(off, len, size_)) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }
    size_t in_cluster(uint64_t off, uint64_t len) const {
        return size_t(std::min<uint64_t>(len, cs_ - off % cs_));
    }

    Result<std::shared_ptr<L2Table>> load_l2(uint64_t off) {
        uint64_t n = h_.l2_entries();
        if (!range_fits(off, n * 8, uint64_t(INT64_MAX))) return make_error(EIO, "qcow: invalid L2 table offset");
        std::vector<uint8_t> raw(n * 8);
        file_->debug_event(BlkdebugEvent::L2Load);
        QIMG_TRY(read_padded(*file_, off, raw.data(), raw.size()));
        auto t = std::make_shared<L2Table>(n);
        for (uint64_t i = 0; i < n; ++i) (*t)[i] = be64(raw.data() + 8 * i);
        return t;
    }
    Result<void> store_l2(uint64_t off, const L2Table &t) {
        std::vector<uint8_t> raw(t.size() * 8);
        for (size_t i = 0; i < t.size(); ++i) put_be64(raw.data() + 8 * i, t[i]);
        file_->debug_event(BlkdebugEvent::L2Update);
        return file_->write(off, raw.data(), raw.size());
    }

    // The L2 entry of guest byte `off` (0 when its L2 table is absent). Holds mu_.
    Result<uint64_t> entry_locked(uint64_t off) {
        uint64_t l2_off = l1_[off / h_.l1_span()];
        if (l2_off == 0) return uint64_t(0);
        QIMG_ASSIGN(auto t, l2_.get(l2_off));
        return (*t)[(off / cs_) & (h_.l2_entries() - 1)];
    }
    Result<uint64_t> entry(uint64_t off) {
        std::lock_guard g(mu_);
        return entry_locked(off);
    }

    // Where a normal cluster's bytes start, checked.
    Result<uint64_t> cluster_host(const L2Entry &e, uint64_t off, size_t n) const {
        if (e.offset % 512 || !range_fits(e.offset + off % cs_, n, uint64_t(INT64_MAX)))
            return make_error(EIO, kBadCluster);
        return e.offset + off % cs_;
    }
    Result<LastUnitCache::Unit> inflate(const L2Entry &e);
    Result<void> read_cluster(uint64_t off, uint8_t *out, size_t n);
    // The guest content of the cluster holding `off` as it reads now, for
    // a partial rewrite of it.
    Result<std::vector<uint8_t>> current_cluster(uint64_t off, const L2Entry &e);

    // Allocation, all holding mu_.
    Result<std::shared_ptr<L2Table>> l2_for_write_locked(uint64_t off, uint64_t *l2_off);
    Result<uint64_t> normal_run_locked(uint64_t off, uint64_t len, uint64_t *host);
    Result<uint64_t> write_new_run_locked(uint64_t off, const uint8_t *in, uint64_t len);
    Result<void> flush_metadata();

    Header h_;
    uint64_t cs_;
    uint64_t size_;
    const std::shared_ptr<const crypto::SectorCipher> cipher_;  // legacy AES; null if none or opened without I/O
    std::mutex rmw_mu_;  // unaligned encrypted writes: read, merge, rewrite whole sectors
    std::mutex mu_;
    std::vector<uint64_t> l1_;
    std::vector<bool> l1_dirty_;
    TableCache<L2Table> l2_;
    uint64_t next_free_ = 0;
    bool dirty_ = false;  // entries in memory that the file does not have yet
    LastUnitCache inflated_;
};

Result<LastUnitCache::Unit> QcowNode::inflate(const L2Entry &e) {
    if (auto u = inflated_.find(e.offset)) return u;
    if (!range_fits(e.offset, e.compressed_bytes, uint64_t(INT64_MAX))) return make_error(EIO, kBadCluster);
    std::vector<uint8_t> in(e.compressed_bytes);
    file_->debug_event(BlkdebugEvent::ReadCompressed);
    QIMG_TRY(read_padded(*file_, e.offset, in.data(), in.size()));
    auto out = std::make_shared<std::vector<uint8_t>>(cs_);
    auto r = codec::decompress(codec::Codec::Deflate, 12, in, *out);
    if (!r) return make_error(EIO, "Input/output error");
    inflated_.store(e.offset, out);
    return LastUnitCache::Unit(out);
}

Result<void> QcowNode::read_cluster(uint64_t off, uint8_t *out, size_t n) {
    QIMG_ASSIGN(uint64_t raw, entry(off));
    L2Entry e = decode_l2(raw, h_.cluster_bits);
    switch (e.kind) {
    case L2Entry::Unallocated:
        if (backing_) return read_padded(*backing_, off, out, n);
        std::memset(out, 0, n);
        return ok();
    case L2Entry::Compressed: {
        QIMG_ASSIGN(auto unit, inflate(e));
        std::memcpy(out, unit->data() + off % cs_, n);
        return ok();
    }
    case L2Entry::Normal: {
        QIMG_ASSIGN(uint64_t host, cluster_host(e, off, n));
        file_->debug_event(BlkdebugEvent::ReadAio);
        QIMG_TRY(read_padded(*file_, host, out, n));
        return decrypt(off, out, n);
    }
    }
    return ok();
}

// Encrypted images are read and written in whole sectors: an unaligned
// request goes through a bounce buffer of the sectors it touches.
Result<void> QcowNode::read(uint64_t off, void *buf, size_t len) {
    QIMG_TRY(check_range(off, len));
    QIMG_TRY(check_io());
    auto *out = static_cast<uint8_t *>(buf);
    if (!cipher_ || (off % kCryptSector == 0 && len % kCryptSector == 0)) return read_aligned(off, out, len);
    const uint64_t a0 = off / kCryptSector * kCryptSector;
    const uint64_t a1 = (off + len + kCryptSector - 1) / kCryptSector * kCryptSector;
    std::vector<uint8_t> tmp(a1 - a0);
    QIMG_TRY(read_aligned(a0, tmp.data(), tmp.size()));
    std::memcpy(out, tmp.data() + (off - a0), len);
    return ok();
}

Result<void> QcowNode::read_aligned(uint64_t off, uint8_t *out, size_t len) {
    while (len > 0) {
        uint64_t host = 0, n;
        {
            std::lock_guard g(mu_);
            QIMG_ASSIGN(n, normal_run_locked(off, len, &host));
        }
        if (n) {
            // Clusters stored one after the other: one read.
            file_->debug_event(BlkdebugEvent::ReadAio);
            QIMG_TRY(read_padded(*file_, host, out, n));
            QIMG_TRY(decrypt(off, out, n));
        } else {
            n = in_cluster(off, len);
            QIMG_TRY(read_cluster(off, out, n));
        }
        off += n, out += n, len -= n;
    }
    return ok();
}

Result<std::vector<uint8_t>> QcowNode::current_cluster(uint64_t off, const L2Entry &e) {
    uint64_t start = off / cs_ * cs_;
    std::vector<uint8_t> c(cs_, 0);
    if (e.kind == L2Entry::Compressed) {
        QIMG_ASSIGN(auto unit, inflate(e));
        std::memcpy(c.data(), unit->data(), cs_);
    } else if (backing_) {
        // The part of the cluster past the virtual size stays zero.
        QIMG_TRY(read_padded(*backing_, start, c.data(), size_t(std::min<uint64_t>(cs_, size_ - start))));
    }
    return c;
}

// The L2 table covering `off`, allocating a zeroed one at the end of the
// file when the L1 entry is empty (written now, published at the next
// flush).
Result<std::shared_ptr<L2Table>> QcowNode::l2_for_write_locked(uint64_t off, uint64_t *l2_off) {
    uint64_t idx = off / h_.l1_span();
    if (l1_[idx] != 0) {
        *l2_off = l1_[idx];
        return l2_.get(l1_[idx]);
    }
    uint64_t bytes = h_.l2_entries() * 8;
    uint64_t at = (next_free_ + cs_ - 1) / cs_ * cs_;
    if (!range_fits(at, std::max(bytes, cs_), uint64_t(INT64_MAX))) return make_error(EFBIG, "File too large");
    auto t = std::make_shared<L2Table>(h_.l2_entries(), 0);
    file_->debug_event(BlkdebugEvent::L1Update);
    QIMG_TRY(store_l2(at, *t));
    next_free_ = at + bytes;
    l2_.put_new(at, t);
    l1_[idx] = at;
    l1_dirty_[idx] = true;
    dirty_ = true;
    *l2_off = at;
    return t;
}

// The bytes from `off` (at most `len`) that lie in normal clusters stored
// one after the other in the file, starting with off's own; 0 when off's
// cluster is not a normal one. *host: where off's byte is.
Result<uint64_t> QcowNode::normal_run_locked(uint64_t off, uint64_t len, uint64_t *host) {
    uint64_t pos = off, expect = 0;
    while (pos < off + len) {
        QIMG_ASSIGN(uint64_t raw, entry_locked(pos));
        L2Entry e = decode_l2(raw, h_.cluster_bits);
        size_t n = in_cluster(pos, off + len - pos);
        if (e.kind != L2Entry::Normal) break;
        QIMG_ASSIGN(uint64_t h, cluster_host(e, pos, n));
        if (pos == off) *host = h;
        else if (h != expect) break;
        expect = h + n;
        pos += n;
    }
    return pos - off;
}

// Writes a run of new clusters for [off, off+len) in one piece at the end
// of the file: the clusters of off's L2 table from off's on that are not
// normal ones (unallocated, or compressed and so rewritten whole). Parts
// of the first and last cluster the write does not cover keep what they
// read now. Returns the bytes written; the entries are published at the
// next flush.
Result<uint64_t> QcowNode::write_new_run_locked(uint64_t off, const uint8_t *in, uint64_t len) {
    uint64_t l2_off;
    QIMG_ASSIGN(auto t, l2_for_write_locked(off, &l2_off));
    const uint64_t mask = h_.l2_entries() - 1;
    const uint64_t table_end = (off / h_.l1_span() + 1) * h_.l1_span();
    const uint64_t run_start = off / cs_ * cs_;
    uint64_t pos = off;
    std::vector<L2Entry> old;
    while (pos < off + len && pos < table_end) {
        L2Entry e = decode_l2((*t)[(pos / cs_) & mask], h_.cluster_bits);
        if (e.kind == L2Entry::Normal) break;
        old.push_back(e);
        pos += in_cluster(pos, off + len - pos);
    }
    const uint64_t n = pos - off;
    const uint64_t run_bytes = old.size() * cs_;
    const uint64_t at = (next_free_ + cs_ - 1) / cs_ * cs_;
    if (!range_fits(at, run_bytes, uint64_t(INT64_MAX))) return make_error(EFBIG, "File too large");
    const uint8_t *data = in;
    std::vector<uint8_t> buf;
    if (off != run_start || n != run_bytes) {
        buf.resize(run_bytes);
        if (off != run_start) {
            QIMG_ASSIGN(auto c, current_cluster(run_start, old.front()));
            std::memcpy(buf.data(), c.data(), cs_);
        }
        if ((off + n) % cs_ && (old.size() > 1 || off == run_start)) {
            QIMG_ASSIGN(auto c, current_cluster(off + n - 1, old.back()));
            std::memcpy(buf.data() + run_bytes - cs_, c.data(), cs_);
        }
        std::memcpy(buf.data() + (off - run_start), in, n);
        data = buf.data();
    }
    if (cipher_) {
        // The whole run encrypted, the parts the write does not cover too
        // (zeros, as QEMU initialises them).
        if (data != buf.data()) buf.assign(in, in + run_bytes);
        QIMG_TRY(cipher_->encrypt(run_start / kCryptSector, buf.data(), buf.size()));
        data = buf.data();
    }
    file_->debug_event(BlkdebugEvent::ClusterAlloc);
    file_->debug_event(BlkdebugEvent::WriteAio);  // the data write, as QEMU announces it
    QIMG_TRY(file_->write(at, data, run_bytes));
    next_free_ = at + run_bytes;
    for (size_t i = 0; i < old.size(); ++i) (*t)[(run_start / cs_ + i) & mask] = at + i * cs_;
    l2_.mark_dirty(l2_off);
    dirty_ = true;
    return n;
}

Result<void> QcowNode::write(uint64_t off, const void *buf, size_t len) {
    QIMG_TRY(check_range(off, len));
    QIMG_TRY(check_io());
    auto *in = static_cast<const uint8_t *>(buf);
    if (!cipher_ || (off % kCryptSector == 0 && len % kCryptSector == 0)) return write_aligned(off, in, len);
    const uint64_t a0 = off / kCryptSector * kCryptSector;
    const uint64_t a1 = (off + len + kCryptSector - 1) / kCryptSector * kCryptSector;
    std::lock_guard g(rmw_mu_);
    std::vector<uint8_t> tmp(a1 - a0);
    QIMG_TRY(read_aligned(a0, tmp.data(), kCryptSector));
    if (a1 - a0 > kCryptSector) QIMG_TRY(read_aligned(a1 - kCryptSector, tmp.data() + tmp.size() - kCryptSector, kCryptSector));
    std::memcpy(tmp.data() + (off - a0), in, len);
    return write_aligned(a0, tmp.data(), tmp.size());
}

Result<void> QcowNode::write_aligned(uint64_t off, const uint8_t *in, size_t len) {
    while (len > 0) {
        uint64_t host = 0, n;
        {
            std::lock_guard g(mu_);
            QIMG_ASSIGN(n, normal_run_locked(off, len, &host));
            if (n == 0) { QIMG_ASSIGN(n, write_new_run_locked(off, in, len)); }
        }
        if (host) {
            // In place, outside the lock: a normal cluster never moves.
            file_->debug_event(BlkdebugEvent::WriteAio);
            if (cipher_) {
                QIMG_ASSIGN(auto enc, encrypted_copy(off, in, size_t(n)));
                QIMG_TRY(file_->write(host, enc.data(), enc.size()));
            } else {
                QIMG_TRY(file_->write(host, in, n));
            }
        }
        off += n, in += n, len -= n;
    }
    return ok();
}

// Data first, then the L2 tables, then the L1 entries naming new ones,
// each step durable before the next (see the top comment).
Result<void> QcowNode::flush_metadata() {
    std::lock_guard g(mu_);
    if (!dirty_) return ok();
    if (l2_.dirty()) QIMG_TRY(l2_.write_back());  // flushes the data first (Io::before_write)
    bool any = std::find(l1_dirty_.begin(), l1_dirty_.end(), true) != l1_dirty_.end();
    if (any) {
        QIMG_TRY(file_->flush());
        for (size_t i = 0; i < l1_.size(); ++i) {
            if (!l1_dirty_[i]) continue;
            uint8_t b[8];
            put_be64(b, l1_[i]);
            QIMG_TRY(file_->write(h_.l1_table_offset + 8 * i, b, sizeof b));
            l1_dirty_[i] = false;
        }
    }
    dirty_ = false;
    return ok();
}

Result<BlockStatus> QcowNode::block_status(uint64_t off, uint64_t len) {
    BlockStatus s;
    if (off >= size_) return s;
    len = std::min(len, size_ - off);
    std::lock_guard g(mu_);
    QIMG_ASSIGN(uint64_t raw, entry_locked(off));
    L2Entry first = decode_l2(raw, h_.cluster_bits);
    // A run of clusters of the same kind (normal ones contiguous on the
    // host), up to the end of this L2 table.
    uint64_t end = std::min(off + len, (off / h_.l1_span() + 1) * h_.l1_span());
    uint64_t pos = off + in_cluster(off, len);
    uint64_t expect = first.offset + (pos - off) + off % cs_;
    while (pos < end) {
        QIMG_ASSIGN(uint64_t r2, entry_locked(pos));
        L2Entry e = decode_l2(r2, h_.cluster_bits);
        if (e.kind != first.kind || e.kind == L2Entry::Compressed) break;
        if (e.kind == L2Entry::Normal && e.offset != expect) break;
        pos += in_cluster(pos, end - pos);
        expect += cs_;
    }
    s.bytes = pos - off;
    if (first.kind == L2Entry::Unallocated) return s;
    s.flags = kStatusData | kStatusAllocated;
    // QEMU's qcow_co_block_status: no host offset for encrypted data.
    if (first.kind == L2Entry::Normal && first.offset % 512 == 0 && !encrypted()) {
        s.flags |= kStatusOffsetValid;
        s.host_offset = first.offset + off % cs_;
        s.host_node = file_.get();
    }
    return s;
}

// Raw deflate with a 4 KiB window (QEMU inflates qcow clusters with one),
// at zlib's default level unless asked otherwise.
Result<std::vector<uint8_t>> QcowNode::compress_cluster(const void *buf, size_t len,
                                                        const CompressOptions &opts) const {
    QIMG_TRY(check_io());
    if (len > cs_) return make_error(EINVAL, "Compressed writes must cover whole clusters");
    codec::Params p{codec::Codec::Deflate, 12, opts.level, opts.fast};
    return codec::compress_unit(p, buf, len, cs_);
}

// A compressed cluster goes at the end of the file, unaligned, as QEMU
// puts it; its entry is published at the next flush.
Result<void> QcowNode::write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                             size_t len) {
    // Encrypted images have no compressed clusters (compressed_cluster_size() 0).
    if (data.empty() || cipher_) return write(off, raw, len);
    QIMG_TRY(check_range(off, len));
    QIMG_TRY(check_io());
    if (off % cs_ || (len != cs_ && off + len != size_) || data.size() >= cs_)
        return make_error(EINVAL, "Invalid argument");
    std::lock_guard g(mu_);
    uint64_t l2_off;
    QIMG_ASSIGN(auto t, l2_for_write_locked(off, &l2_off));
    size_t idx = size_t((off / cs_) & (h_.l2_entries() - 1));
    L2Entry e = decode_l2((*t)[idx], h_.cluster_bits);
    if (e.kind == L2Entry::Normal) {
        // An allocated cluster is rewritten in place (QEMU would write the
        // compressed bytes into it as if they were guest data).
        QIMG_ASSIGN(uint64_t host, cluster_host(e, off, len));
        return file_->write(host, raw, len);
    }
    uint64_t at = next_free_;
    uint64_t entry = encode_compressed(at, uint32_t(data.size()), h_.cluster_bits);
    if (entry == 0) return make_error(EFBIG, "File too large");
    file_->debug_event(BlkdebugEvent::WriteCompressed);
    QIMG_TRY(file_->write(at, data.data(), data.size()));
    next_free_ = at + data.size();
    (*t)[idx] = entry;
    l2_.mark_dirty(l2_off);
    dirty_ = true;
    return ok();
}

// qemu-img commit empties the image it committed: the L1 table zeroed and
// made durable, then the file cut back to its end (QEMU's order).
Result<void> QcowNode::make_empty() {
    std::lock_guard g(mu_);
    l2_.clear();
    std::fill(l1_.begin(), l1_.end(), 0);
    std::fill(l1_dirty_.begin(), l1_dirty_.end(), false);
    dirty_ = false;
    inflated_.store(UINT64_MAX, nullptr);  // offsets past the new end will be reused
    std::vector<uint8_t> zero(l1_.size() * 8, 0);
    QIMG_TRY(file_->write(h_.l1_table_offset, zero.data(), zero.size()));
    QIMG_TRY(file_->flush());
    uint64_t end = h_.l1_table_offset + zero.size();
    QIMG_TRY(file_->truncate(end, Prealloc::Off, false));
    next_free_ = end;
    return ok();
}

int qcow_probe(std::span<const uint8_t> head, const std::string &) { return probe_header(head) ? 100 : 0; }

Result<std::vector<uint64_t>> read_l1(BlockNode &file, const Header &h) {
    uint64_t n = h.l1_entries();
    uint64_t flen = file.length();
    TableCheck c = check_table(h.l1_table_offset, n, 8, TableLimits{});
    if (c.out_of_bounds) return make_error(EINVAL, "qcow: L1 table offset invalid");
    if (!range_fits(h.l1_table_offset, n * 8, flen) && n * 8 > kMaxL1BytesPastEof)
        return make_error(EINVAL, "qcow: L1 table of " + std::to_string(n * 8) + " bytes lies past the end of the file");
    std::vector<uint8_t> raw(n * 8);
    QIMG_TRY(read_padded(file, h.l1_table_offset, raw.data(), raw.size()));
    std::vector<uint64_t> l1(n);
    for (uint64_t i = 0; i < n; ++i) l1[i] = be64(raw.data() + 8 * i);
    return l1;
}

// The encrypt.* open options of QEMU's qcow_open: legacy AES images need
// encrypt.key-secret unless opened without I/O; a format other than aes,
// or one for an unencrypted image, is refused.
Result<std::shared_ptr<const crypto::SectorCipher>> open_cipher(OpenRequest &req, const Header &h) {
    auto take = [&](const char *k) -> std::optional<std::string> {
        auto it = req.options.find(k);
        if (it == req.options.end()) return std::nullopt;
        std::string v = it->second;
        req.options.erase(it);
        return v;
    };
    const auto fmt = take("encrypt.format");
    const auto key_secret = take("encrypt.key-secret");
    if (h.crypt_method == kCryptNone) {
        if (fmt) return make_error(EINVAL, "No encryption in image header, but options specified format '" + *fmt + "'");
        return std::shared_ptr<const crypto::SectorCipher>();
    }
    if (fmt && *fmt != "aes")
        return make_error(EINVAL, "Header reported 'aes' encryption format but options specify '" + *fmt + "'");
    if (req.flags.no_io) return std::shared_ptr<const crypto::SectorCipher>();
    if (!key_secret) return make_error(EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    QIMG_ASSIGN(std::string pass, req.secrets->lookup_utf8(*key_secret));
    return crypto::qcow_aes_cipher(pass);
}

Result<NodePtr> qcow_open(OpenRequest &req) {
    BlockNode &file = *req.file;
    HeaderBytes hb{};
    QIMG_TRY(read_padded(file, 0, hb.data(), hb.size()));
    QIMG_ASSIGN(Header h, parse_header(hb));
    QIMG_ASSIGN(auto cipher, open_cipher(req, h));
    QIMG_ASSIGN(std::vector<uint64_t> l1, read_l1(file, h));
    std::string backing;
    if (h.backing_file_offset != 0) {
        if (h.backing_file_size > kMaxBackingName) return make_error(EINVAL, "Backing file name too long");
        if (!range_fits(h.backing_file_offset, h.backing_file_size, uint64_t(INT64_MAX)))
            return make_error(EINVAL, "qcow: invalid backing file name offset");
        std::string name(h.backing_file_size, '\0');
        QIMG_TRY(read_padded(file, h.backing_file_offset, name.data(), name.size()));
        // A C string: a NUL inside ends it, as in QEMU.
        backing = std::string(name.c_str());
    }
    auto node = std::make_shared<QcowNode>(req.file, h, std::move(l1), std::move(cipher));
    node->set_read_only(!req.flags.read_write);
    if (req.flags.read_write) node->set_next_free(file.length());
    if (!backing.empty()) node->set_backing_names(backing, "", resolve_recorded_name(*node, backing));
    return NodePtr(node);
}

const Driver *make_qcow_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "qcow";
        d.probe = qcow_probe;
        d.open = qcow_open;
        d.create = qcow_create;
        d.create_options = qcow_create_options();
        d.supports_backing = true;
        d.supports_compression = true;
        d.strong_options = {"encrypt.key-secret"};
        return d;
    }();
    return &d;
}

}  // namespace
}  // namespace qimg::qcow

namespace qimg {
QIMG_REGISTER_DRIVER(qcow::make_qcow_driver);
}  // namespace qimg
