// qcow2 space accounting for `qemu-img measure -O qcow2` (see measure.h):
// the same arithmetic as QEMU's qcow2_measure / qcow2_calc_prealloc_size /
// qcow2_refcount_metadata_size, written from qcow2.txt's layout.
#include "format/qcow2/measure.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "block/status.h"
#include "util/checked.h"

namespace qimg::qcow2 {
namespace {

constexpr uint64_t kL1EntrySize = 8;          // qcow2.txt: "L1 table entry"
constexpr uint64_t kL2EntrySize = 8;          // standard L2 entry
constexpr uint64_t kL2EntrySizeExtended = 16; // L2 entry + subcluster bitmap
constexpr uint64_t kRefTableEntrySize = 8;
constexpr uint64_t kMaxL1Bytes = 32ull << 20; // QEMU's QCOW_MAX_L1_SIZE
constexpr unsigned kMinClusterBits = 9, kMaxClusterBits = 21;
constexpr unsigned kSubclustersPerCluster = 32;
constexpr uint64_t kDefaultClusterSize = 65536;
constexpr uint64_t kBitmapTableEntrySize = 8;
constexpr uint64_t kBitmapDirEntryFixed = 24;  // qcow2.txt: "Bitmap directory", fixed part

uint64_t round_up(uint64_t n, uint64_t d) { return div_round_up(n, d) * d; }

uint64_t number(const MeasureRequest &req, const char *key, uint64_t dflt) {
    if (!req.has(key)) return dflt;
    return std::strtoull(req.get(key).c_str(), nullptr, 10);
}

Result<uint64_t> cluster_size_option(const MeasureRequest &req, bool extended_l2) {
    uint64_t cs = number(req, "cluster_size", kDefaultClusterSize);
    bool pow2 = cs != 0 && (cs & (cs - 1)) == 0;
    if (!pow2 || cs < (1u << kMinClusterBits) || cs > (1u << kMaxClusterBits))
        return make_error(EINVAL, "Cluster size must be a power of two between 512 and 2048k");
    uint64_t min_ext = (1u << kMinClusterBits) * kSubclustersPerCluster;
    if (extended_l2 && cs < min_ext)
        return make_error(EINVAL, "Extended L2 entries are only supported with cluster sizes of at least " +
                                      std::to_string(min_ext) + " bytes");
    return cs;
}

Result<int> version_option(const MeasureRequest &req) {
    if (!req.has("compat")) return 3;
    std::string v = req.get("compat");
    if (v == "0.10") return 2;
    if (v == "1.1") return 3;
    return make_error(EINVAL, "Invalid compatibility level: '" + v + "'");
}

Result<unsigned> refcount_order_option(const MeasureRequest &req, int version) {
    uint64_t bits = number(req, "refcount_bits", 16);
    if (bits > 64 || bits == 0 || (bits & (bits - 1)) != 0)
        return make_error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
    if (version < 3 && bits != 16)
        return make_error(EINVAL, "Different refcount widths than 16 bits require compatibility level 1.1 or "
                                  "above (use compat=1.1 or greater)");
    return static_cast<unsigned>(__builtin_ctzll(bits));
}

// The LUKS header a qcow2 image with encrypt.format=luks carries: the
// 4 KiB partition header then 8 key slots of key-length x 4000 anti-forensic
// stripes, each rounded to 4 KiB (QEMU's qcrypto_block_luks layout).
Result<uint64_t> luks_header_size(const MeasureRequest &req) {
    if (!req.has("encrypt.key-secret"))
        return make_error(EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    std::string alg = req.get("encrypt.cipher-alg", "aes-256");
    std::string mode = req.get("encrypt.cipher-mode", "xts");
    uint64_t key = 0;
    if (alg == "aes-128") key = 16;
    else if (alg == "aes-192") key = 24;
    else if (alg == "aes-256") key = 32;
    else return make_error(ENOTSUP, "LUKS cipher algorithm '" + alg + "' is not supported by qimg");
    if (mode == "xts") key *= 2;
    constexpr uint64_t kStripes = 4000, kSlots = 8, kAlign = 4096;
    return kAlign + kSlots * round_up(key * kStripes, kAlign);
}

// "required": the bytes of data clusters a copy of `src` allocates: every
// cluster touched by data allocated somewhere in its chain (zeroes skipped).
Result<uint64_t> allocated_data(BlockNode &src, uint64_t ssize, uint64_t cluster_size) {
    uint64_t required = 0;
    uint64_t len = src.length();
    for (uint64_t off = 0; off < ssize;) {
        uint64_t pnum;
        uint32_t flags;
        if (off >= len) {  // the sector-rounded tail past the node's end reads as zeroes
            pnum = ssize - off;
            flags = kStatusZero;
        } else {
            auto s = chain_status(src, nullptr, off, std::min(ssize, len) - off);
            if (!s) return make_error(s.error().code, "Unable to get block status: " + s.error().message);
            pnum = s->bytes;
            flags = s->flags;
        }
        if (flags & kStatusZero) {
            // zero regions need no cluster (safe: the target has no backing file)
        } else if ((flags & (kStatusData | kStatusAllocated)) == (kStatusData | kStatusAllocated)) {
            // Count up to the end of the cluster and continue from there; the
            // extra `off % cluster_size` term is QEMU's own accounting.
            pnum = round_up(off + pnum, cluster_size) - off;
            required += off % cluster_size + pnum;
        }
        off += pnum;
    }
    return required;
}

// qcow2_get_persistent_dirty_bitmap_size for a qcow2 v3 source: its bitmaps
// are listed in its format-specific info.
bool source_bitmaps_size(BlockNode &src, uint64_t ssize, uint64_t cluster_size, uint64_t &out) {
    if (src.driver_name() != "qcow2") return false;
    nlohmann::ordered_json info = src.specific_info();
    if (!info.is_object() || !info.contains("data")) return false;
    const auto &data = info["data"];
    if (!data.contains("compat") || data["compat"] != "1.1") return false;
    uint64_t total = 0, dir = 0;
    if (data.contains("bitmaps") && data["bitmaps"].is_array()) {
        for (const auto &bm : data["bitmaps"]) {
            uint64_t gran = bm.value("granularity", uint64_t{65536});
            std::string name = bm.value("name", std::string());
            if (gran == 0) continue;
            uint64_t bytes = div_round_up(div_round_up(ssize, gran), 8);
            uint64_t clusters = div_round_up(bytes, cluster_size);
            total += clusters * cluster_size;
            total += round_up(clusters * kBitmapTableEntrySize, cluster_size);
            dir += round_up(kBitmapDirEntryFixed + name.size(), 8);
        }
    }
    out = total + round_up(dir, cluster_size);
    return true;
}

}  // namespace

uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, unsigned refcount_order,
                                bool generous_increase, uint64_t *refblock_count) {
    // Every host cluster has a refcount, the refcount structures included:
    // iterate to the fixed point where no more blocks or table clusters are needed.
    const uint64_t blocks_per_table_cluster = cluster_size / kRefTableEntrySize;
    const uint64_t refcounts_per_block = cluster_size * 8 / (uint64_t{1} << refcount_order);
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = div_round_up(clusters + table + blocks, refcounts_per_block);
        table = div_round_up(blocks, blocks_per_table_cluster);
        n = clusters + blocks + table;
        if (n == last && generous_increase) {
            clusters += div_round_up(table, 2);
            n = 0;  // one more round with the extra room
            generous_increase = false;
        }
    } while (n != last);
    if (refblock_count) *refblock_count = blocks;
    return (blocks + table) * cluster_size;
}

uint64_t prealloc_size(uint64_t virtual_size, uint64_t cluster_size, unsigned refcount_order, bool extended_l2) {
    const uint64_t aligned = round_up(virtual_size, cluster_size);
    const uint64_t l2e = extended_l2 ? kL2EntrySizeExtended : kL2EntrySize;
    uint64_t meta = cluster_size;  // the header cluster
    // L2 tables: one entry per cluster, whole tables.
    uint64_t nl2e = round_up(aligned / cluster_size, cluster_size / l2e);
    meta += nl2e * l2e;
    // L1 table: one entry per L2 table, whole clusters.
    uint64_t nl1e = round_up(nl2e * l2e / cluster_size, cluster_size / kL1EntrySize);
    meta += nl1e * kL1EntrySize;
    meta += refcount_metadata_size((meta + aligned) / cluster_size, cluster_size, refcount_order, false);
    return meta + aligned;
}

Result<MeasureInfo> measure(MeasureRequest &req) {
    bool extended_l2 = req.get("extended_l2", "off") == "on";
    QIMG_ASSIGN(uint64_t cluster_size, cluster_size_option(req, extended_l2));
    QIMG_ASSIGN(int version, version_option(req));
    QIMG_ASSIGN(unsigned refcount_order, refcount_order_option(req, version));
    QIMG_ASSIGN(Prealloc prealloc, parse_prealloc(req.get("preallocation", "off")));
    bool has_backing_file = req.has("backing_file");
    uint64_t luks_payload = 0;
    if (req.get("encrypt.format") == "luks") {
        QIMG_ASSIGN(uint64_t header, luks_header_size(req));
        luks_payload = round_up(header, cluster_size);
    }

    uint64_t virtual_size = round_up(number(req, "size", 0), cluster_size);
    const uint64_t l2e = extended_l2 ? kL2EntrySizeExtended : kL2EntrySize;
    uint64_t l2_tables = div_round_up(virtual_size / cluster_size, cluster_size / l2e);
    if (l2_tables > kMaxL1Bytes / kL1EntrySize)
        return make_error(EFBIG, "The image size is too large (try using a larger cluster size)");

    uint64_t required = 0;
    uint64_t ssize = 0;
    if (req.source) {
        ssize = (req.source->length() + 511) / 512 * 512;  // QEMU 7.2 lengths are whole sectors
        virtual_size = round_up(ssize, cluster_size);
        if (has_backing_file) {
            // The new image's backing file may share nothing with the source.
            required = virtual_size;
        } else {
            QIMG_ASSIGN(required, allocated_data(*req.source, ssize, cluster_size));
        }
    }
    if (prealloc == Prealloc::Full || prealloc == Prealloc::Falloc) required = virtual_size;

    MeasureInfo info;
    info.fully_allocated = luks_payload + prealloc_size(virtual_size, cluster_size, refcount_order, extended_l2);
    // Metadata of the fully allocated image is still counted: an overestimate, as QEMU.
    info.required = info.fully_allocated - virtual_size + required;
    if (version >= 3 && req.source)
        info.has_bitmaps = source_bitmaps_size(*req.source, ssize, cluster_size, info.bitmaps);
    return info;
}

}  // namespace qimg::qcow2
