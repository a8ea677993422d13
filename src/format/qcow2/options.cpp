// qcow2 runtime options (see options.h). qimg keeps its own caches; the
// values are checked and kept so that an image opens, or fails to, exactly
// where QEMU's does.
#include "format/qcow2/options.h"

#include <sys/sysinfo.h>

#include <algorithm>
#include <climits>
#include <iterator>
#include <optional>
#include <string>

#include "util/keyval.h"
#include "util/option_map.h"

namespace qimg::qcow2 {
namespace {

constexpr uint64_t kMinL2CacheEntries = 2;        // MIN_L2_CACHE_SIZE
constexpr uint64_t kMinRefcountCacheClusters = 4;  // MIN_REFCOUNT_CACHE_SIZE
constexpr uint64_t kDefaultL2CacheMax = 32u << 20;  // DEFAULT_L2_CACHE_MAX_SIZE (Linux)
constexpr uint64_t kDefaultCacheCleanInterval = 600;

// qcow2_runtime_opts' overlap-check members, bit i = QCOW2_OL_*_BITNR.
constexpr const char *kOverlapMembers[] = {
    "overlap-check.main-header",   "overlap-check.active-l1",    "overlap-check.active-l2",
    "overlap-check.refcount-table", "overlap-check.refcount-block", "overlap-check.snapshot-table",
    "overlap-check.inactive-l1",   "overlap-check.inactive-l2",  "overlap-check.bitmap-directory",
};
constexpr uint32_t kOverlapConstant = 0x3 | 0x8 | 0x20 | 0x40 | 0x100;  // QCOW2_OL_CONSTANT
constexpr uint32_t kOverlapCached = kOverlapConstant | 0x4 | 0x10;      // + active L2, refcount blocks
constexpr uint32_t kOverlapAll = kOverlapCached | 0x80;                  // + inactive L2

// Removes `key` from `opts` and parses it with `parse` (util/keyval's typed
// parsers, QEMU's wording); absent: an empty optional.
template <class T, class Parse>
Result<std::optional<T>> take_parsed(OptionMap &opts, const char *key, Parse parse) {
    auto it = opts.find(key);
    if (it == opts.end()) return std::optional<T>();
    QIMG_ASSIGN(T v, parse(key, it->second));
    opts.erase(it);
    return std::optional<T>(v);
}

Result<std::optional<bool>> take_bool(OptionMap &opts, const char *key) {
    return take_parsed<bool>(opts, key, [](std::string_view k, std::string_view v) { return parse_bool_opt(k, v); });
}
Result<std::optional<uint64_t>> take_size(OptionMap &opts, const char *key) {
    return take_parsed<uint64_t>(opts, key,
                                 [](std::string_view k, std::string_view v) { return parse_size_opt(k, v); });
}
Result<std::optional<uint64_t>> take_number(OptionMap &opts, const char *key) {
    return take_parsed<uint64_t>(opts, key,
                                 [](std::string_view k, std::string_view v) { return parse_number_opt(k, v); });
}

// QEMU allocates both caches at open (qcow2_cache_create); a request larger
// than the memory the kernel would ever commit fails there.
bool cache_fits(uint64_t entries, uint64_t entry_size) {
    struct sysinfo si {};
    if (sysinfo(&si) != 0) return true;
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(entries, entry_size, &bytes)) return false;
    const uint64_t room = (uint64_t(si.totalram) + si.totalswap) * si.mem_unit;
    return bytes <= room;
}

}  // namespace

Result<RuntimeOptions> take_runtime_options(OptionMap &opts, const Header &h, uint64_t virtual_size) {
    RuntimeOptions r;
    const uint64_t cs = h.cluster_size();

    QIMG_ASSIGN(std::optional<bool> lazy, take_bool(opts, "lazy-refcounts"));
    QIMG_ASSIGN(std::optional<bool> discard_request, take_bool(opts, "pass-discard-request"));
    QIMG_ASSIGN(std::optional<bool> discard_snapshot, take_bool(opts, "pass-discard-snapshot"));
    QIMG_ASSIGN(std::optional<bool> discard_other, take_bool(opts, "pass-discard-other"));
    std::optional<std::string> overlap = take_option(opts, "overlap-check");
    std::optional<std::string> overlap_template = take_option(opts, "overlap-check.template");
    std::optional<bool> overlap_bits[std::size(kOverlapMembers)];
    for (size_t i = 0; i < std::size(kOverlapMembers); i++) {
        QIMG_ASSIGN(overlap_bits[i], take_bool(opts, kOverlapMembers[i]));
    }
    QIMG_ASSIGN(std::optional<uint64_t> cache_size, take_size(opts, "cache-size"));
    QIMG_ASSIGN(std::optional<uint64_t> l2_cache_size, take_size(opts, "l2-cache-size"));
    QIMG_ASSIGN(std::optional<uint64_t> l2_entry_size, take_size(opts, "l2-cache-entry-size"));
    QIMG_ASSIGN(std::optional<uint64_t> refcount_cache_size, take_size(opts, "refcount-cache-size"));
    QIMG_ASSIGN(std::optional<uint64_t> clean_interval, take_number(opts, "cache-clean-interval"));

    // read_cache_sizes()
    const uint64_t l2_entry_bytes = h.extended_l2() ? 16 : 8;
    const uint64_t max_l2_entries = (virtual_size + cs - 1) / cs;
    const uint64_t max_l2_cache = (max_l2_entries * l2_entry_bytes + cs - 1) / cs * cs;
    const uint64_t min_refcount_cache = kMinRefcountCacheClusters * cs;
    uint64_t l2_cache = std::min(max_l2_cache, l2_cache_size.value_or(kDefaultL2CacheMax));
    uint64_t refcount_cache = refcount_cache_size.value_or(0);
    r.l2_cache_entry_size = l2_entry_size.value_or(cs);
    if (cache_size) {
        if (l2_cache_size && refcount_cache_size)
            return make_error(EINVAL,
                              "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time");
        if (l2_cache_size && *l2_cache_size > *cache_size)
            return make_error(EINVAL, "l2-cache-size may not exceed cache-size");
        if (refcount_cache > *cache_size) return make_error(EINVAL, "refcount-cache-size may not exceed cache-size");
        // QEMU's unsigned arithmetic, wrap-around included.
        if (l2_cache_size) {
            refcount_cache = *cache_size - l2_cache;
        } else if (refcount_cache_size) {
            l2_cache = *cache_size - refcount_cache;
        } else if (*cache_size >= max_l2_cache + min_refcount_cache) {
            l2_cache = max_l2_cache;
            refcount_cache = *cache_size - l2_cache;
        } else {
            refcount_cache = std::min(*cache_size, min_refcount_cache);
            l2_cache = *cache_size - refcount_cache;
        }
    }
    // An L2 cache that does not cover the disk defaults to 4 KiB entries.
    if (l2_cache < max_l2_cache && !l2_entry_size) r.l2_cache_entry_size = std::min<uint64_t>(cs, 4096);
    const uint64_t e = r.l2_cache_entry_size;
    if (e < (uint64_t{1} << kMinClusterBits) || e > cs || (e & (e - 1)) != 0)
        return make_error(EINVAL, "L2 cache entry size must be a power of two between " +
                                      std::to_string(1u << kMinClusterBits) + " and the cluster size (" +
                                      std::to_string(cs) + ")");

    // qcow2_update_options_prepare()
    r.l2_cache_entries = std::max(l2_cache / e, kMinL2CacheEntries);
    if (r.l2_cache_entries > INT_MAX) return make_error(EINVAL, "L2 cache size too big");
    r.refcount_cache_entries = std::max(refcount_cache / cs, kMinRefcountCacheClusters);
    if (r.refcount_cache_entries > INT_MAX) return make_error(EINVAL, "Refcount cache size too big");
    if (!cache_fits(r.l2_cache_entries, e) || !cache_fits(r.refcount_cache_entries, cs))
        return make_error(ENOMEM, "Could not allocate metadata caches");

    r.cache_clean_interval = clean_interval.value_or(kDefaultCacheCleanInterval);
    if (r.cache_clean_interval > UINT_MAX) return make_error(EINVAL, "Cache clean interval too big");

    r.lazy_refcounts = lazy.value_or((h.compatible & kCompatLazyRefcounts) != 0);
    if (r.lazy_refcounts && h.version < 3)
        return make_error(EINVAL, "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level");

    if (overlap && overlap_template && *overlap != *overlap_template)
        return make_error(EINVAL, "Conflicting values for qcow2 options 'overlap-check' ('" + *overlap +
                                      "') and 'overlap-check.template' ('" + *overlap_template + "')");
    const std::string mode = overlap ? *overlap : overlap_template ? *overlap_template : "cached";
    uint32_t tmpl = 0;
    if (mode == "none") tmpl = 0;
    else if (mode == "constant") tmpl = kOverlapConstant;
    else if (mode == "cached") tmpl = kOverlapCached;
    else if (mode == "all") tmpl = kOverlapAll;
    else
        return make_error(EINVAL, "Unsupported value '" + mode +
                                      "' for qcow2 option 'overlap-check'. Allowed are any of the following: "
                                      "none, constant, cached, all");
    for (size_t i = 0; i < std::size(kOverlapMembers); i++)
        if (overlap_bits[i].value_or((tmpl >> i) & 1)) r.overlap_check |= 1u << i;

    // qemu-img opens without BDRV_O_UNMAP, so discard requests stay in the
    // image unless asked for.
    r.pass_discard_request = discard_request.value_or(false);
    r.pass_discard_snapshot = discard_snapshot.value_or(true);
    r.pass_discard_other = discard_other.value_or(false);
    return r;
}

}  // namespace qimg::qcow2
