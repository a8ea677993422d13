// qcow2 option amendment (qemu-img amend; QEMU's qcow2_amend_options):
// version upgrade and downgrade (zero clusters expanded for v2), refcount
// width changes, lazy refcounts, external data file name and raw flag, and
// the virtual size. Options are handled in QEMU's order (upgrade first,
// downgrade last) with its messages.
//
// Crash safety: header changes are single-sector writes followed by a sync;
// the refcount width change and zero-cluster expansion write their new
// structures and data, sync, and only then publish (see Refcounts::
// change_order and expand_zero_clusters_in_l1_locked).
#include <cinttypes>
#include <cstdio>
#include <optional>

#include "format/qcow2/qcow2.h"

namespace qimg::qcow2 {
namespace {

// QEMU's qcow2_amend_helper_cb: spreads the progress of several operations
// over one 0..100% range, projecting the work of those not started yet.
class AmendProgress {
public:
    AmendProgress(const BlockNode::AmendStatus &out, int total_ops) : out_(out), total_ops_(total_ops) {}
    // Starts operation `op` (distinct ids, in order) and returns its callback.
    BlockNode::AmendStatus start(int op) {
        return [this, op](int64_t done, int64_t work) { report(op, done, work); };
    }

private:
    void report(int op, int64_t done, int64_t work) {
        if (!out_ || total_ops_ <= 0) return;
        if (op != last_op_) {
            if (last_op_ != 0) {
                offset_done_ += last_work_;
                ops_done_++;
            }
            last_op_ = op;
        }
        if (ops_done_ >= total_ops_) return;
        last_work_ = work;
        const int64_t current = offset_done_ + work;
        const int64_t projected = current * (total_ops_ - ops_done_ - 1) / (ops_done_ + 1);
        out_(offset_done_ + done, current + projected);
    }

    const BlockNode::AmendStatus &out_;
    int total_ops_;
    int ops_done_ = 0, last_op_ = 0;
    int64_t offset_done_ = 0, last_work_ = 0;
};

enum { kOpUpgrade = 1, kOpRefcountOrder = 3, kOpDowngrade = 4 };

std::optional<std::string> opt(const std::map<std::string, std::string> &o, const char *k) {
    auto it = o.find(k);
    if (it == o.end()) return std::nullopt;
    return it->second;
}

}  // namespace

std::vector<CreateOption> qcow2_amend_options() {
    using T = CreateOption::Type;
    return {
        {"encrypt.state", T::String, "Select new state of affected keyslots (active/inactive)", ""},
        {"encrypt.keyslot", T::Number, "Select a single keyslot to modify explicitly", ""},
        {"encrypt.old-secret", T::String, "Select all keyslots that match this password", ""},
        {"encrypt.new-secret", T::String, "New secret to set in the matching keyslots. Empty string to erase", ""},
        {"encrypt.iter-time", T::Number, "Time to spend in PBKDF in milliseconds", ""},
        {"size", T::Size, "Virtual disk size", ""},
        {"compat", T::String, "Compatibility level (v2 [0.10] or v3 [1.1])", ""},
        {"backing_file", T::String, "File name of a base image", ""},
        {"backing_fmt", T::String, "Image format of the base image", ""},
        {"data_file", T::String, "File name of an external data file", ""},
        {"data_file_raw", T::Bool, "The external data file must stay valid as a raw image", ""},
        {"lazy_refcounts", T::Bool, "Postpone refcount updates", ""},
        {"refcount_bits", T::Number, "Width of a reference count entry in bits", ""},
    };
}

Result<void> Qcow2Node::update_header_locked(const char *what) {
    auto r = write_header_locked();
    if (!r) return Err(r.error().prepended(std::string(what) + ": "));
    return ok();
}

// qcow2_mark_clean: metadata on disk, then the dirty bit cleared.
Result<void> Qcow2Node::mark_clean_locked() {
    if (!(header_.incompatible & kIncompatDirty)) return ok();
    QIMG_TRY(flush_metadata_locked());
    QIMG_TRY(file_->flush());
    header_.incompatible &= ~kIncompatDirty;
    lazy_dirty_set_ = false;
    return write_header_locked();
}

Result<void> Qcow2Node::amend(const std::map<std::string, std::string> &o, bool force, const AmendStatus &status) {
    std::lock_guard g(mu_);
    if (read_only_) return make_error(EROFS, "Cannot write to a read-only image");

    // Validation in the option list's order, as qcow2_amend_options walks it.
    bool encryption_update = false;
    for (const auto &[k, v] : o)
        if (k.rfind("encrypt.", 0) == 0) {
            if (header_.crypt_method == 0) return make_error(EINVAL, "Can't amend encryption options - encryption not present");
            if (header_.crypt_method != kCryptLuks)
                return make_error(ENOTSUP, "Only LUKS encryption options can be amended");
            encryption_update = true;
        }
    // Key slots first (qcrypto_block_amend_options): they live in the
    // crypto header clusters, which nothing else below moves.
    if (encryption_update) {
        if (!header_.crypto_header) return make_error(EINVAL, "Missing CRYPTO header for crypt method 2");
        QIMG_TRY(amend_encryption(encryption_, *header_.crypto_header, *file_, o, force));
    }
    const uint32_t old_version = header_.version;
    uint32_t new_version = old_version;
    if (auto c = opt(o, "compat")) {
        if (*c == "0.10" || *c == "v2") new_version = 2;
        else if (*c == "1.1" || *c == "v3") new_version = 3;
        else return make_error(EINVAL, "Unknown compatibility level " + *c);
    }
    uint64_t new_size = 0;
    if (auto s = opt(o, "size")) new_size = std::stoull(*s);
    const auto backing_file = opt(o, "backing_file");
    const auto backing_fmt = opt(o, "backing_fmt");
    const bool had_lazy = header_.compatible & kCompatLazyRefcounts;
    bool lazy = had_lazy;
    if (auto l = opt(o, "lazy_refcounts")) lazy = *l == "on";
    uint32_t refcount_bits = header_.refcount_bits();
    if (auto r = opt(o, "refcount_bits")) {
        uint64_t n = std::stoull(*r);
        if (n == 0 || n > 64 || (n & (n - 1)))
            return make_error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
        refcount_bits = uint32_t(n);
    }
    const auto data_file = opt(o, "data_file");
    if (data_file && !header_.has_data_file())
        return make_error(EINVAL, "data-file can only be set for images that use an external data file");
    bool data_file_raw = header_.data_file_raw();
    if (auto r = opt(o, "data_file_raw")) {
        data_file_raw = *r == "on";
        if (data_file_raw && !header_.data_file_raw())
            return make_error(EINVAL, "data-file-raw cannot be set on existing images");
    }

    AmendProgress progress(status, int(new_version != old_version) + int(refcount_bits != header_.refcount_bits()));

    // Upgrade first: the other changes may need v3.
    if (new_version > old_version) QIMG_TRY(upgrade_locked(progress.start(kOpUpgrade)));

    if (refcount_bits != header_.refcount_bits()) {
        if (new_version < 3 && refcount_bits != 16)
            return make_error(EINVAL, "Refcount widths other than 16 bits require compatibility level 1.1 or above "
                                      "(use compat=1.1 or greater)");
        QIMG_TRY(change_refcount_order_locked(uint32_t(__builtin_ctz(refcount_bits)), progress.start(kOpRefcountOrder)));
    }

    // data-file-raw blocks backing files, so it is cleared before anything else.
    if (header_.has_data_file()) {
        if (data_file_raw) header_.autoclear |= kAutoclearDataFileRaw;
        else header_.autoclear &= ~kAutoclearDataFileRaw;
    }
    if (data_file) {
        if (data_file->empty()) header_.data_file.reset();
        else header_.data_file = *data_file;
    }
    QIMG_TRY(update_header_locked("Failed to update the image header"));

    if (backing_file || backing_fmt) {
        const auto cur_file = header_.backing_file.empty() ? std::nullopt : std::optional<std::string>(header_.backing_file);
        const auto cur_fmt = header_.backing_format.empty() ? std::nullopt : std::optional<std::string>(header_.backing_format);
        if (backing_file != cur_file || backing_fmt != cur_fmt)
            return make_error(EINVAL, "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
    }

    if (lazy != had_lazy) {
        if (lazy) {
            if (new_version < 3)
                return make_error(EINVAL, "Lazy refcounts only supported with compatibility level 1.1 and above "
                                          "(use compat=1.1 or greater)");
            header_.compatible |= kCompatLazyRefcounts;
            auto r = update_header_locked("Failed to update the image header");
            if (!r) {
                header_.compatible &= ~kCompatLazyRefcounts;
                return r;
            }
        } else {
            auto c = mark_clean_locked();
            if (!c) return Err(c.error().prepended("Failed to make the image clean: "));
            header_.compatible &= ~kCompatLazyRefcounts;
            auto r = update_header_locked("Failed to update the image header");
            if (!r) {
                header_.compatible |= kCompatLazyRefcounts;
                return r;
            }
        }
    }

    // Exactly the size asked for (exact=true).
    if (new_size) QIMG_TRY(truncate_locked(new_size, Prealloc::Off, true));

    // Downgrade last, after the features v2 cannot hold were removed.
    if (new_version < old_version) QIMG_TRY(downgrade_locked(progress.start(kOpDowngrade)));
    return ok();
}

// qcow2_upgrade: v3 snapshot entries need the disk size and large VM state
// size fields; the table is rewritten (in new clusters) when one lacks them.
Result<void> Qcow2Node::upgrade_locked(const AmendStatus &status) {
    if (status) status(0, 2);
    bool rewrite = false;
    for (const Snapshot &sn : snapshots_) rewrite = rewrite || sn.extra_data_size < 16;
    if (rewrite) {
        auto r = write_snapshots_locked(snapshots_);
        if (!r) return Err(r.error().prepended("Failed to update the snapshot table: "));
        QIMG_TRY(flush_metadata_locked());
    }
    if (status) status(1, 2);
    header_.version = 3;
    auto r = update_header_locked("Failed to update the image header");
    if (!r) {
        header_.version = 2;
        return r;
    }
    if (status) status(2, 2);
    return ok();
}

// qcow2_downgrade to v2, with QEMU's refusals.
Result<void> Qcow2Node::downgrade_locked(const AmendStatus &status) {
    if (header_.refcount_order != 4) return make_error(ENOTSUP, "compat=0.10 requires refcount_bits=16");
    if (header_.has_data_file()) return make_error(ENOTSUP, "Cannot downgrade an image with a data file");
    // Other v2 readers would not know that these snapshot fields matter.
    for (const Snapshot &sn : snapshots_)
        if (sn.vm_state_size > UINT32_MAX || sn.disk_size != (header_.size + 511) / 512 * 512)
            return make_error(ENOTSUP, "Internal snapshots prevent downgrade of image");
    if (header_.incompatible & kIncompatDirty) {
        auto c = mark_clean_locked();
        if (!c) return Err(c.error().prepended("Failed to make the image clean: "));
    }
    if (header_.incompatible & ~kIncompatCompression) {
        char m[96];
        std::snprintf(m, sizeof m, "Cannot downgrade an image with incompatible features 0x%" PRIx64 " set",
                      header_.incompatible & ~kIncompatCompression);
        return make_error(ENOTSUP, m);
    }
    const Header saved = header_;
    header_.compatible = 0;
    header_.autoclear = 0;
    {
        auto r = expand_zero_clusters_locked(status);
        if (!r) {
            header_ = saved;
            return Err(r.error().prepended("Failed to turn zero into data clusters: "));
        }
    }
    if (header_.incompatible & kIncompatCompression) {
        // Only zstd sets the bit; zstd-compressed clusters cannot stay.
        bool any = false;
        auto r = for_each_l2_table(l1_table_, active_l2_loader(), [&](uint64_t, uint64_t, L2Table &t) -> Result<bool> {
            (void)l2_layout_.for_each_entry(t, [&](const L2Entry &e) { any = any || e.type == ClusterType::Compressed; });
            return !any;  // no further table is read once one is found
        });
        if (!r) {
            header_ = saved;
            return make_error(EINVAL, "Failed to check block status");
        }
        if (any) {
            header_ = saved;
            return make_error(ENOTSUP,
                              "Cannot downgrade an image with zstd compression type and existing compressed clusters");
        }
        header_.incompatible &= ~kIncompatCompression;
        header_.compression_type = kCompressionZlib;
    }
    header_.version = 2;
    auto r = update_header_locked("Failed to update the image header");
    if (!r) header_ = saved;
    return r;
}

// qcow2_expand_zero_clusters: v2 has no zero flag. Zero clusters become
// unallocated (no backing file) or data clusters holding zeroes, in the
// active L1 table and every snapshot's.
Result<void> Qcow2Node::expand_zero_clusters_locked(const AmendStatus &status) {
    uint64_t total = l1_table_.size(), visited = 0;
    for (const Snapshot &sn : snapshots_) total += sn.l1_size;
    QIMG_TRY(expand_zero_clusters_in_l1_locked(l1_table_, visited, total, status));
    for (const Snapshot &sn : snapshots_) {
        QIMG_TRY(validate_snapshot_l1_reported(sn, cluster_size_));
        QIMG_ASSIGN(std::vector<uint64_t> l1, read_l1_locked(sn.l1_table_offset, sn.l1_size, 0));
        QIMG_TRY(expand_zero_clusters_in_l1_locked(l1, visited, total, status));
    }
    QIMG_TRY(flush_metadata_locked());
    forget_freed_state_locked();
    return ok();
}

// One L1 table's L2 tables, changed in place (the same entries in a shared
// table are right for every user). Per table: new clusters allocated and
// zeroed, refcounts and zeroes synced, then the table written. The L1 step
// stays a loop of its own rather than for_each_l2_table(): progress counts
// every L1 entry, empty ones too, and the table's refcount is read before
// the table, as QEMU's expand_zero_clusters_in_l1 does.
Result<void> Qcow2Node::expand_zero_clusters_in_l1_locked(const std::vector<uint64_t> &l1, uint64_t &visited,
                                                          uint64_t total, const AmendStatus &status) {
    const std::vector<uint8_t> zeroes(cluster_size_, 0);
    for (uint64_t i = 0; i < l1.size(); i++) {
        const uint64_t l2_off = l1[i] & kL1OffsetMask;
        if (l2_off) {
            if (l2_off & (cluster_size_ - 1)) {
                char m[96];
                std::snprintf(m, sizeof m, "L2 table offset %#" PRIx64 " unaligned (L1 index: %#" PRIx64 ")", l2_off, i);
                return Err(corruption_locked(m));
            }
            QIMG_ASSIGN(uint64_t l2_refcount, refcounts_->get(l2_off >> cluster_bits_));
            QIMG_ASSIGN(auto table, l2_cache_->get(l2_off));
            L2Table &t = *table;
            bool dirty = false;
            // v2 targets have neither extended L2 nor a data file: one word an entry.
            QIMG_TRY(l2_layout_.for_each_entry(t, [&](const L2Entry &e) -> Result<void> {
                if (e.type != ClusterType::ZeroPlain && e.type != ClusterType::ZeroAlloc) return ok();
                uint64_t host = e.host;
                if (e.type == ClusterType::ZeroPlain) {
                    if (!backing_) {
                        t[e.index] = 0;
                        dirty = true;
                        return ok();
                    }
                    QIMG_ASSIGN(host, refcounts_->alloc_clusters(1));
                    if (l2_refcount > 1) QIMG_TRY(refcounts_->update(host, cluster_size_, int64_t(l2_refcount) - 1));
                }
                if (host & (cluster_size_ - 1)) {
                    char m[128];
                    std::snprintf(m, sizeof m,
                                  "Cluster allocation offset %#" PRIx64 " unaligned (L2 offset: %#" PRIx64
                                  ", L2 index: %#" PRIx64 ")",
                                  host, l2_off, e.index);
                    return Err(corruption_locked(m));
                }
                QIMG_TRY(check_metadata_overlap(host, cluster_size_));
                // A new cluster is counted once per user of the table; a
                // preallocated one may also be shared through another L2
                // table (a snapshot's copy of this one). QEMU 7.2 judges
                // both by the table's refcount and sets COPIED on shared
                // clusters, which its own check reports as corruption.
                uint64_t refcount = l2_refcount;
                if (e.type == ClusterType::ZeroAlloc && !header_.has_data_file()) {
                    QIMG_ASSIGN(refcount, refcounts_->get(host >> cluster_bits_));
                }
                QIMG_TRY(data_file_->write(host, zeroes.data(), cluster_size_));
                t[e.index] = host | (refcount == 1 ? kOflagCopied : 0);
                dirty = true;
                return ok();
            }));
            if (dirty) {
                l2_cache_->mark_dirty(l2_off);
                // Syncs the refcounts and the zeroes before the table.
                QIMG_TRY(l2_cache_->write_back());
            }
        }
        visited++;
        if (status) status(int64_t(visited), int64_t(total));
    }
    return ok();
}

Result<void> Qcow2Node::change_refcount_order_locked(uint32_t order, const AmendStatus &status) {
    QIMG_TRY(flush_metadata_locked());
    auto publish = [this](uint64_t off, uint32_t clusters, uint32_t new_order) -> Result<void> {
        const Header saved = header_;
        header_.refcount_table_offset = off;
        header_.refcount_table_clusters = clusters;
        header_.refcount_order = new_order;
        auto r = write_header_locked();
        if (!r) {
            header_ = saved;
            return Err(r.error().prepended("Failed to update the qcow2 header: "));
        }
        return ok();
    };
    return refcounts_->change_order(order, publish, status);
}

}  // namespace qimg::qcow2
