// qcow2 runtime (open) options: the cache sizes, lazy-refcounts,
// pass-discard-* and overlap-check.* that QEMU's qcow2 accepts as node
// options (--image-opts, json:), validated as qcow2_update_options does.
#pragma once

#include <cstdint>

#include "format/qcow2/header.h"
#include "util/json_filename.h"
#include "util/result.h"

namespace qimg::qcow2 {

struct RuntimeOptions {
    uint64_t l2_cache_entries = 0;      // of l2_cache_entry_size bytes
    uint64_t l2_cache_entry_size = 0;
    uint64_t refcount_cache_entries = 0;  // clusters
    uint64_t cache_clean_interval = 0;    // seconds
    bool lazy_refcounts = false;
    bool pass_discard_request = false, pass_discard_snapshot = true, pass_discard_other = false;
    uint32_t overlap_check = 0;  // one bit per overlap-check.* member, in QEMU's order
};

// Takes the runtime options out of `opts` (what is left is rejected by the
// opener). `virtual_size` bounds the default L2 cache.
Result<RuntimeOptions> take_runtime_options(OptionMap &opts, const Header &h, uint64_t virtual_size);

}  // namespace qimg::qcow2
