// qemu-img check -r all on qcow2: a new refcount structure written from
// the expected refcounts when the one on disk cannot be trusted (QEMU's
// rebuild_refcount_structure), into free clusters, durable before the
// header points at it.
#include <cstdio>

#include "format/qcow2/checker.h"
#include "util/endian.h"
#include "util/progname.h"

namespace qimg::qcow2 {

uint64_t Checker::alloc_imrt(uint64_t count, uint64_t &first_free) {
    uint64_t cluster = first_free, contiguous = 0;
    bool first_gap = true;
    for (; cluster < expected_.size() && contiguous < count; cluster++) {
        if (!expected_.get(cluster)) {
            contiguous++;
            if (first_gap) {
                first_free = cluster;
                first_gap = false;
            }
        } else if (contiguous) {
            contiguous = 0;
        }
    }
    if (contiguous < count) expected_.resize(cluster + count - contiguous);
    cluster -= contiguous;
    for (uint64_t i = 0; i < count; i++) expected_.set(cluster + i, 1);
    return cluster << cluster_bits_;
}

std::vector<uint8_t> Checker::encode_refblock(uint64_t index) const {
    const uint32_t order = node_.header_.refcount_order;
    const uint64_t per = (cluster_size_ * 8) >> order;
    std::vector<uint8_t> d(cluster_size_, 0);
    for (uint64_t j = 0; j < per; j++) {
        uint64_t c = index * per + j;
        if (c >= expected_.size()) break;
        uint64_t v = expected_.get(c);
        if (!v) continue;
        switch (order) {
        case 0: d[j / 8] |= uint8_t((v & 1) << (j % 8)); break;
        case 1: d[j / 4] |= uint8_t((v & 3) << (2 * (j % 4))); break;
        case 2: d[j / 2] |= uint8_t((v & 15) << (4 * (j % 2))); break;
        case 3: d[j] = uint8_t(v); break;
        case 4: put_be16(&d[2 * j], uint16_t(v)); break;
        case 5: put_be32(&d[4 * j], uint32_t(v)); break;
        default: put_be64(&d[8 * j], v); break;
        }
    }
    return d;
}

// QEMU's rebuild_refcounts_write_refblocks: true when the reftable grew.
Result<bool> Checker::write_refblocks(uint64_t first, uint64_t end, std::vector<uint64_t> &reftable) {
    const uint64_t per = (cluster_size_ * 8) >> node_.header_.refcount_order;
    uint64_t first_free = 0;
    bool grown = false;
    for (uint64_t cluster = first; cluster < end; cluster++) {
        cluster = expected_.next_nonzero(cluster);
        if (cluster >= end) break;
        uint64_t index = cluster / per, start = index * per, refblock;
        if (reftable.size() > index && reftable[index]) {
            refblock = reftable[index];
        } else {
            if (first_free < start) first_free = start;
            refblock = alloc_imrt(1, first_free);
            if ((refblock >> cluster_bits_) >= end) end = (refblock >> cluster_bits_) + 1;
            if (reftable.size() <= index) {
                uint64_t bytes = ((index + 1) * 8 + cluster_size_ - 1) / cluster_size_ * cluster_size_;
                reftable.resize(bytes / 8, 0);
                grown = true;
            }
            reftable[index] = refblock;
        }
        if (auto oc = pre_write_check(refblock, cluster_size_, false); !oc)
            return Err(oc.error().prepended("ERROR writing refblock: "));
        std::vector<uint8_t> d = encode_refblock(index);
        auto w = file_.write(refblock, d.data(), cluster_size_);
        if (!w) return Err(w.error().prepended("ERROR writing refblock: "));
        cluster = start + per - 1;
    }
    return grown;
}

Result<void> Checker::rebuild(CheckResult &res) {
    std::vector<uint64_t> reftable;
    auto fail = [&](const Error &e) -> Result<void> {
        std::fprintf(stderr, "%s: %s\n", program_name().c_str(), e.message.c_str());
        res.check_errors++;
        return Err(e);
    };
    auto g = write_refblocks(0, expected_.size(), reftable);
    if (!g) return fail(g.error());
    uint64_t reftable_offset = 0, reftable_clusters = 0;
    bool changed = true;
    while (changed) {
        uint64_t first_free = 0;
        reftable_clusters = (reftable.size() * 8 + cluster_size_ - 1) / cluster_size_;
        reftable_offset = alloc_imrt(reftable_clusters, first_free);
        uint64_t s = reftable_offset >> cluster_bits_;
        auto r = write_refblocks(s, s + reftable_clusters, reftable);
        if (!r) return fail(r.error());
        changed = *r;
    }
    std::vector<uint8_t> raw(reftable.size() * 8);
    for (size_t i = 0; i < reftable.size(); i++) put_be64(&raw[i * 8], reftable[i]);
    if (auto oc = pre_write_check(reftable_offset, raw.size(), false); !oc)
        return fail(oc.error().prepended("ERROR writing reftable: "));
    auto w = file_.write(reftable_offset, raw.data(), raw.size());
    if (!w) return fail(w.error().prepended("ERROR writing reftable: "));
    // Refblocks and table durable before the header points at them.
    w = file_.flush();
    if (!w) return fail(w.error().prepended("ERROR writing reftable: "));
    w = write_refcount_table_pointer(file_, reftable_offset, uint32_t(reftable_clusters));
    if (w) w = file_.flush();
    if (!w) return fail(w.error().prepended("ERROR setting reftable: "));
    node_.header_.refcount_table_offset = reftable_offset;
    node_.header_.refcount_table_clusters = uint32_t(reftable_clusters);
    QIMG_TRY(node_.reset_refcounts());
    return ok();
}

}  // namespace qimg::qcow2
