// The request pipeline shared by the engine's copying jobs (convert's copy,
// commit, rebase): one dispatching thread plans requests in order and hands
// them to worker threads; each request owns one buffer of a fixed pool, so
// at most `in_flight` requests exist at once. A job says what a request is
// (PipelineJob); the pipeline owns the threads, the buffers, the ordering,
// the rate limit, write-behind and the first error.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "block/node.h"
#include "util/memory_room.h"

namespace qimg::engine {

inline constexpr unsigned kMaxInFlight = 16;               // qemu-img's MAX_COROUTINES, the -m limit
inline constexpr unsigned kMinDefaultInFlight = 8;          // default_in_flight() on 1-4 cores
inline constexpr unsigned kMaxSlots = 64;                  // the engine's own limit (default on big machines)
inline constexpr uint64_t kMaxBufferBytes = 128ull << 20;  // all request buffers together, by default
// The page-cache budget of a copy's target (--write-behind,
// PipelineOptions::write_behind) when the command line gives none:
// write_behind_budget() of the memory this process may fill. The engine's
// option structs default to kFallbackWriteBehind; the commands (convert,
// dd, commit, rebase) pass default_write_behind().
inline constexpr uint64_t kFallbackWriteBehind = 128ull << 20;  // nothing could be read
inline constexpr uint64_t kMinWriteBehind = 16ull << 20;

// The policy, from what util/memory_room.h probed:
//  - In a memory-limited cgroup, a quarter of its room (limit less working
//    set, the tightest level). Everything the copy puts in the page cache
//    is charged to the cgroup: the target (at most about the budget), the
//    source pages read since the last write-behind round (a round starts
//    every quarter of the budget written; zeroes and holes read are not
//    written, so this can be more) and the request buffers (32 MiB by
//    default); a quarter keeps that around half the room, the rest left
//    to whatever else runs there (bench_memlimit.sh: peak 258-406 MiB in
//    512 MiB).
//    The dirty part is what reclaim cannot simply drop, what gets a
//    container OOM-killed.
//  - Without a limit (or a looser one), half of MemAvailable. The kernel's
//    own dirty throttling (vm.dirty_ratio, 20 % of roughly that memory)
//    stops a writer long before, so the copy never waits where qemu-img
//    would not, and a copy smaller than a quarter of the budget never
//    starts a round at all: qemu-img's wall time. What it keeps is the
//    bound on the cache: a copy larger than the host's memory evicts at
//    most about half of what others could use.
//  - Never below kMinWriteBehind (a round every 4 MiB already costs more
//    syscalls than it saves), kFallbackWriteBehind when nothing was read.
// Rounded down to whole MiB.
uint64_t write_behind_budget(const MemoryRoom &room);
// write_behind_budget(probe_memory_room()), probed once per process.
uint64_t default_write_behind();

// Requests in flight when none is asked for (-m not given): two per core,
// at least 8 (qemu-img's own default) and at most kMaxSlots (buffers within
// kMaxBufferBytes). Each request in flight is a thread doing blocking I/O
// and page-cache copies, so the number is a compromise until the disk queue
// depth is decoupled from the threads: measured on a 2-core VM (session of
// 2026-12-05, fifth), a cold fragmented raw source wants the depth (2 GiB to
// qcow2, medians of 6: 4 in flight 0.87 s, 8 0.70 s, 16 0.71 s, qemu-img
// -m 16 -W 0.66 s) while a qcow2 source or a cached one wants fewer threads
// (cached qcow2 to raw, perf stat: 4 in flight 0.30 s, 16 0.39 s, qemu-img
// 0.40 s). On 8 cores and more this is 16 and up, qemu-img's best -m.
unsigned default_in_flight();

struct PipelineRequest {
    uint64_t seq = 0;         // plan order (set by the pipeline)
    uint64_t offset = 0;      // the target range the request writes (bytes)
    uint64_t length = 0;
    int kind = 0;             // the job's
    uint8_t *buf = nullptr;   // PipelineOptions::buf_bytes, 4 KiB aligned
    uint64_t rate_bytes = 0;  // charged to the rate limit when dispatched
    bool counted = false;     // reported through on_bytes once written
    // Bytes the write stage streamed to the target (write-behind accounting).
    uint64_t streamed = 0;
    // The dispatcher waits until this request and all before it are written
    // before it plans the next one (a job whose planning reads state that
    // this request's writes may change).
    bool drain_after = false;
    std::vector<uint8_t> cdata;  // job scratch: one compressed cluster
    // Job scratch: what the write stage writes, when the read stage decides.
    struct Piece {
        uint64_t offset = 0, length = 0;
        size_t buf_offset = 0;  // the bytes in `buf`
        int kind = 0;
        std::vector<uint8_t> data;
    };
    std::vector<Piece> pieces;
};

class PipelineJob {
public:
    virtual ~PipelineJob() = default;
    // Dispatching thread, one call per request: fills in offset, length,
    // kind, rate_bytes, counted, drain_after. Returns false at the end.
    virtual Result<bool> plan(PipelineRequest &r) = 0;
    // Dispatching thread, right after plan(r), possibly several requests
    // before a worker takes r: a hint to start reading what r will read
    // (BlockNode::CacheAdvice::WillNeed). Default: nothing.
    virtual void prefetch(const PipelineRequest &r) { (void)r; }
    // Worker threads, concurrently and in any order: reads (and transforms)
    // what the request will write. Not called for a request planned after one
    // that failed.
    virtual Result<void> read(PipelineRequest &r) = 0;
    // Worker threads: writes the request; in plan order with `in_order`,
    // otherwise as soon as it is read.
    virtual Result<void> write(PipelineRequest &r) = 0;
    // Write-behind (PipelineOptions::write_behind), from its thread: every
    // request below target offset `to` has been read, those in [from, to)
    // since the last call; the job drops what its sources cached for them
    // (drop_chain_cache). Default: nothing.
    virtual void drop_read_cache(uint64_t from, uint64_t to) {
        (void)from;
        (void)to;
    }
};

// Drops the cached pages of [off, off+len) of `node` and its backing chain
// (same guest offsets), where the layers can map the range (raw can, qcow2
// cannot: BlockNode::cache_advice).
void drop_chain_cache(BlockNode *node, uint64_t off, uint64_t len);

struct PipelineOptions {
    unsigned in_flight = 0;    // requests (and buffers) in flight, 1..kMaxSlots; 0: default_in_flight()
    // Threads; 0 = one per request slot. The file protocol's I/O is blocking,
    // so each request in flight needs its own thread to be in flight at all
    // (qemu-img gets the same from its coroutines over a 64-thread AIO pool);
    // with -c the extra threads only time-share the cores.
    unsigned workers = 0;
    bool in_order = true;      // writes in plan order (one at a time)
    size_t buf_bytes = 2 << 20;
    uint64_t rate_limit = 0;   // bytes per second of rate_bytes, 0 = unlimited
    // Out-of-order writes: two requests that touch the same aligned block of
    // this size are never written at the same time (a cluster whose
    // copy-on-write, zeroing or read-modify-write must not interleave with
    // another write into it). 0 or 1: no restriction.
    uint64_t conflict_granule = 0;
    // Bounded page cache: at most about this many bytes written to `target`
    // are left dirty or cached (see pipeline.cpp); a writer that would
    // exceed it waits for the write-behind thread. 0: off.
    uint64_t write_behind = 0;
    BlockNode *target = nullptr;
    // After each counted write, from the workers, concurrently (the callee
    // serialises): bytes done and `total_bytes`.
    std::function<void(uint64_t done, uint64_t total)> on_bytes;
    uint64_t total_bytes = 0;
};

// The conflict granule for writes into `target`: its cluster (a
// copy-on-write or zeroing unit) or its request alignment (O_DIRECT
// read-modify-write), whichever is larger.
inline uint64_t write_granule(const BlockNode &target) {
    return std::max<uint64_t>(target.cluster_size(), target.request_alignment());
}

// Runs `job` to its end or its first error in plan order (the error its
// stage returned; requests planned before a failed one still run).
Result<void> run_pipeline(PipelineJob &job, const PipelineOptions &o);

}  // namespace qimg::engine
