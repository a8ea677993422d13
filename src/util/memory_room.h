// How much memory this process may still fill: the room left under the
// memory limit of its cgroup (v2 or v1, the tightest level of the
// hierarchy) and the host's MemAvailable. The copy engine sizes its
// page-cache budget from it (engine/pipeline.h). Pure parsers of the /proc
// and /sys files, and one probe that reads them under a root directory so
// that tests can hand it a fake tree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qimg {

// What a limit file holds when nothing is limited: cgroup v2's "max", v1's
// page-rounded LONG_MAX (9223372036854771712) or anything else >= 2^62.
inline constexpr uint64_t kNoMemoryLimit = UINT64_MAX;

// A limit file (v2 memory.max / memory.high, v1 memory.limit_in_bytes):
// bytes, kNoMemoryLimit, or nullopt when malformed.
std::optional<uint64_t> parse_cgroup_limit(std::string_view contents);
// A byte counter (memory.current, memory.usage_in_bytes): one decimal
// number and optional white space; nullopt when malformed.
std::optional<uint64_t> parse_cgroup_counter(std::string_view contents);
// The value of `key` in a memory.stat ("key value" lines).
std::optional<uint64_t> parse_memory_stat(std::string_view stat, std::string_view key);
// MemAvailable of /proc/meminfo ("MemAvailable:   24242692 kB"), in bytes.
std::optional<uint64_t> parse_mem_available(std::string_view meminfo);

// This process's cgroups as /proc/self/cgroup names them.
struct CgroupMembership {
    std::optional<std::string> v2_path;         // "0::<path>"
    std::optional<std::string> v1_memory_path;  // "<id>:<controllers with memory>:<path>"
};
CgroupMembership parse_proc_cgroup(std::string_view contents);

// A cgroup file system mount of /proc/self/mountinfo: the cgroup its top
// directory is (`root`, "/" unless a container bind-mounts a sub-tree) and
// where it is mounted.
struct CgroupMount {
    std::string root;
    std::string mount_point;
};
struct CgroupMounts {
    std::optional<CgroupMount> v2;         // the first cgroup2 mount
    std::optional<CgroupMount> v1_memory;  // the cgroup (v1) mount with the memory controller
};
CgroupMounts parse_mountinfo(std::string_view contents);

// The directory of cgroup `path` under `m`, relative to m.mount_point
// ("" for the mount's top, else "/a/b"); the mount's top when `path` is
// not below m.root (a process outside the mounted sub-tree).
std::string cgroup_relative_dir(const CgroupMount &m, std::string_view path);

struct MemoryRoom {
    // The least, over the levels of the cgroup hierarchy that set a limit,
    // of limit minus working set (usage less the inactive file pages, which
    // reclaim frees without writing anything: Kubernetes' "working set");
    // nullopt when no level limits memory or nothing could be read.
    std::optional<uint64_t> cgroup_room;
    std::optional<uint64_t> cgroup_limit;  // the limit of that level
    std::optional<uint64_t> mem_available;  // /proc/meminfo, bytes
};

// Reads /proc/self/cgroup, /proc/self/mountinfo, /proc/meminfo and the
// cgroup files, each path prefixed with `root` ("" for this system).
// Unreadable or malformed files leave their part out; never fails.
MemoryRoom probe_memory_room(const std::string &root = "");

}  // namespace qimg
