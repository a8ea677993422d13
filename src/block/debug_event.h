// Debug events: the points in a request that a format announces to the
// nodes below it (QEMU's BlkdebugEvent, BLKDBG_EVENT), so that a blkdebug
// filter there (filter/blkdebug/) can inject errors at "the L2 table update"
// rather than at "the 7th write". A format calls
// `file()->debug_event(BlkdebugEvent::L2Update)` just before the I/O it
// names; nodes without rules pass the event to their file child, and the
// bottom of the graph ignores it.
#pragma once

#include <array>
#include <optional>
#include <string_view>

namespace qimg {

// QEMU 7.2's qapi BlkdebugEvent, in its order (the names are its values).
enum class BlkdebugEvent {
    L1Update, L1GrowAllocTable, L1GrowWriteTable, L1GrowActivateTable, L2Load, L2Update,
    L2UpdateCompressed, L2AllocCowRead, L2AllocWrite, ReadAio, ReadBackingAio, ReadCompressed, WriteAio,
    WriteCompressed, VmstateLoad, VmstateSave, CowRead, CowWrite, ReftableLoad, ReftableGrow, ReftableUpdate,
    RefblockLoad, RefblockUpdate, RefblockUpdatePart, RefblockAlloc, RefblockAllocHookup, RefblockAllocWrite,
    RefblockAllocWriteBlocks, RefblockAllocWriteTable, RefblockAllocSwitchTable, ClusterAlloc,
    ClusterAllocBytes, ClusterFree, FlushToOs, FlushToDisk, PwritevRmwHead, PwritevRmwAfterHead,
    PwritevRmwTail, PwritevRmwAfterTail, Pwritev, PwritevZero, PwritevDone, EmptyImagePrepare,
    L1ShrinkWriteTable, L1ShrinkFreeL2Clusters, CorWrite, ClusterAllocSpace, None,
};

inline constexpr std::array<std::string_view, size_t(BlkdebugEvent::None) + 1> kBlkdebugEventNames = {
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table", "l2_load", "l2_update",
    "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write", "read_aio", "read_backing_aio",
    "read_compressed", "write_aio", "write_compressed", "vmstate_load", "vmstate_save", "cow_read", "cow_write",
    "reftable_load", "reftable_grow", "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup", "refblock_alloc_write",
    "refblock_alloc_write_blocks", "refblock_alloc_write_table", "refblock_alloc_switch_table", "cluster_alloc",
    "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk", "pwritev_rmw_head",
    "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev", "pwritev_zero",
    "pwritev_done", "empty_image_prepare", "l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write",
    "cluster_alloc_space", "none",
};

inline constexpr size_t kBlkdebugEventCount = kBlkdebugEventNames.size();

inline std::string_view blkdebug_event_name(BlkdebugEvent e) { return kBlkdebugEventNames[size_t(e)]; }

inline std::optional<BlkdebugEvent> parse_blkdebug_event(std::string_view name) {
    for (size_t i = 0; i < kBlkdebugEventCount; ++i)
        if (kBlkdebugEventNames[i] == name) return BlkdebugEvent(i);
    return std::nullopt;
}

}  // namespace qimg
