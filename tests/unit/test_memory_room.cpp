// Memory room probing (util/memory_room.h): the parsers of the cgroup and
// /proc files, malformed and "no limit" values, and probe_memory_room() on
// fake /proc and /sys trees shaped like a systemd v2 host, a hybrid v1 VM,
// a Docker v1 container and a namespaced v2 container.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "util/memory_room.h"

namespace qimg {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1ull << 20;

TEST(MemoryRoomParse, Limit) {
    EXPECT_EQ(parse_cgroup_limit("536870912\n"), 512 * kMiB);
    EXPECT_EQ(parse_cgroup_limit(" 42 "), 42u);
    EXPECT_EQ(parse_cgroup_limit("0\n"), 0u);
    EXPECT_EQ(parse_cgroup_limit("max\n"), kNoMemoryLimit);
    EXPECT_EQ(parse_cgroup_limit("-1"), kNoMemoryLimit);
    EXPECT_EQ(parse_cgroup_limit("9223372036854771712\n"), kNoMemoryLimit);  // v1's "unlimited"
    EXPECT_EQ(parse_cgroup_limit("18446744073709551615"), kNoMemoryLimit);
    EXPECT_EQ(parse_cgroup_limit(""), std::nullopt);
    EXPECT_EQ(parse_cgroup_limit("\n"), std::nullopt);
    EXPECT_EQ(parse_cgroup_limit("12abc"), std::nullopt);
    EXPECT_EQ(parse_cgroup_limit("1 2"), std::nullopt);
    EXPECT_EQ(parse_cgroup_limit("-5"), std::nullopt);
    EXPECT_EQ(parse_cgroup_limit("+5"), std::nullopt);
    EXPECT_EQ(parse_cgroup_limit("maximum"), std::nullopt);
    EXPECT_EQ(parse_cgroup_limit("18446744073709551616"), std::nullopt);  // overflow
}

TEST(MemoryRoomParse, Counter) {
    EXPECT_EQ(parse_cgroup_counter("403558400\n"), 403558400u);
    EXPECT_EQ(parse_cgroup_counter("max"), std::nullopt);
    EXPECT_EQ(parse_cgroup_counter(""), std::nullopt);
    EXPECT_EQ(parse_cgroup_counter("99999999999999999999"), std::nullopt);
}

TEST(MemoryRoomParse, Stat) {
    std::string stat = "anon 1000\nfile 9000\nactive_file 10\ninactive_file 2048\ntotal_inactive_file 4096\n";
    EXPECT_EQ(parse_memory_stat(stat, "inactive_file"), 2048u);
    EXPECT_EQ(parse_memory_stat(stat, "total_inactive_file"), 4096u);
    EXPECT_EQ(parse_memory_stat(stat, "file"), 9000u);
    EXPECT_EQ(parse_memory_stat(stat, "shmem"), std::nullopt);
    EXPECT_EQ(parse_memory_stat("inactive_file x\n", "inactive_file"), std::nullopt);
    EXPECT_EQ(parse_memory_stat("", "inactive_file"), std::nullopt);
}

TEST(MemoryRoomParse, MemAvailable) {
    std::string mi = "MemTotal:       24683748 kB\nMemFree:        21841528 kB\nMemAvailable:   24242692 kB\n";
    EXPECT_EQ(parse_mem_available(mi), 24242692ull * 1024);
    EXPECT_EQ(parse_mem_available("MemAvailable: 100\n"), 100u);  // no unit: bytes
    EXPECT_EQ(parse_mem_available("MemTotal: 5 kB\n"), std::nullopt);  // kernels before 3.14
    EXPECT_EQ(parse_mem_available("MemAvailable:   kB\n"), std::nullopt);
    EXPECT_EQ(parse_mem_available("MemAvailable: 18446744073709551615 kB\n"), std::nullopt);  // overflow
    EXPECT_EQ(parse_mem_available(""), std::nullopt);
}

TEST(MemoryRoomParse, ProcCgroup) {
    auto hybrid = parse_proc_cgroup("9:name=systemd:/\n4:memory:/process_api/cdf1\n1:cpu:/\n0::/\n");
    EXPECT_EQ(hybrid.v1_memory_path, "/process_api/cdf1");
    EXPECT_EQ(hybrid.v2_path, "/");
    auto v2 = parse_proc_cgroup("0::/user.slice/user-0.slice/session-1.scope\n");
    EXPECT_EQ(v2.v2_path, "/user.slice/user-0.slice/session-1.scope");
    EXPECT_EQ(v2.v1_memory_path, std::nullopt);
    auto joined = parse_proc_cgroup("3:cpu,memory,blkio:/a:b\n");  // ':' in the path
    EXPECT_EQ(joined.v1_memory_path, "/a:b");
    auto odd = parse_proc_cgroup("garbage\n5:memory\n6:memory:relative\n2:memoryx:/no\n");
    EXPECT_EQ(odd.v1_memory_path, std::nullopt);
    EXPECT_EQ(odd.v2_path, std::nullopt);
}

TEST(MemoryRoomParse, Mountinfo) {
    auto m = parse_mountinfo(
        "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "34 30 0:31 /docker/abc /sys/fs/cgroup/mem\\040ory rw,relatime shared:9 master:2 - cgroup cgroup rw,memory\n"
        "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "41 30 0:38 / /other rw - cgroup2 cgroup2 rw\n"
        "short line - cgroup2\n");
    ASSERT_TRUE(m.v2);
    EXPECT_EQ(m.v2->mount_point, "/sys/fs/cgroup/unified");
    EXPECT_EQ(m.v2->root, "/");
    ASSERT_TRUE(m.v1_memory);
    EXPECT_EQ(m.v1_memory->mount_point, "/sys/fs/cgroup/mem ory");
    EXPECT_EQ(m.v1_memory->root, "/docker/abc");
    EXPECT_FALSE(parse_mountinfo("").v2);
}

TEST(MemoryRoomParse, RelativeDir) {
    EXPECT_EQ(cgroup_relative_dir({"/", "/sys/fs/cgroup"}, "/a/b"), "/a/b");
    EXPECT_EQ(cgroup_relative_dir({"/", "/sys/fs/cgroup"}, "/"), "");
    EXPECT_EQ(cgroup_relative_dir({"/docker/abc", "/m"}, "/docker/abc"), "");
    EXPECT_EQ(cgroup_relative_dir({"/docker/abc", "/m"}, "/docker/abc/sub/"), "/sub");
    EXPECT_EQ(cgroup_relative_dir({"/docker/abc", "/m"}, "/docker/abcd"), "");  // not below the root
    EXPECT_EQ(cgroup_relative_dir({"/docker/abc", "/m"}, "/elsewhere"), "");
}

// A fake root: /proc and /sys files written under a temporary directory.
class FakeRoot {
public:
    FakeRoot() {
        char name[] = "/tmp/qimg-memroom-XXXXXX";
        EXPECT_NE(mkdtemp(name), nullptr);
        root_ = name;
    }
    ~FakeRoot() { fs::remove_all(root_); }
    void put(const std::string &path, const std::string &contents) {
        fs::create_directories(fs::path(root_ + path).parent_path());
        std::ofstream(root_ + path) << contents;
    }
    MemoryRoom probe() const { return probe_memory_room(root_); }

private:
    std::string root_;
};

constexpr const char *kMeminfo = "MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n";  // 4 GiB available

TEST(MemoryRoomProbe, SystemdV2TightestLevel) {
    FakeRoot r;
    r.put("/proc/meminfo", kMeminfo);
    r.put("/proc/self/cgroup", "0::/user.slice/job.scope\n");
    r.put("/proc/self/mountinfo", "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
    std::string cg = "/sys/fs/cgroup";
    // The root cgroup has no memory.max; user.slice: 1 GiB, 300 MiB used of
    // which 100 MiB inactive file pages: room 824 MiB.
    r.put(cg + "/user.slice/memory.max", "1073741824\n");
    r.put(cg + "/user.slice/memory.current", std::to_string(300 * kMiB) + "\n");
    r.put(cg + "/user.slice/memory.stat", "anon 1\ninactive_file " + std::to_string(100 * kMiB) + "\n");
    // job.scope: no max, but memory.high 512 MiB with 112 MiB used: room 400 MiB, the tightest.
    r.put(cg + "/user.slice/job.scope/memory.max", "max\n");
    r.put(cg + "/user.slice/job.scope/memory.high", std::to_string(512 * kMiB) + "\n");
    r.put(cg + "/user.slice/job.scope/memory.current", std::to_string(112 * kMiB) + "\n");
    auto m = r.probe();
    EXPECT_EQ(m.cgroup_room, 400 * kMiB);
    EXPECT_EQ(m.cgroup_limit, 512 * kMiB);
    EXPECT_EQ(m.mem_available, 4096 * kMiB);
}

TEST(MemoryRoomProbe, HybridV1WithoutLimit) {
    // This project's CI VM: cgroup2 mounted without the memory controller,
    // v1 memory with LONG_MAX everywhere.
    FakeRoot r;
    r.put("/proc/meminfo", kMeminfo);
    r.put("/proc/self/cgroup", "4:memory:/process_api/cdf1\n0::/\n");
    r.put("/proc/self/mountinfo",
          "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
          "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n");
    r.put("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
    for (std::string d : {"", "/process_api", "/process_api/cdf1"}) {
        r.put("/sys/fs/cgroup/memory" + d + "/memory.limit_in_bytes", "9223372036854771712\n");
        r.put("/sys/fs/cgroup/memory" + d + "/memory.usage_in_bytes", "403558400\n");
    }
    auto m = r.probe();
    EXPECT_EQ(m.cgroup_room, std::nullopt);
    EXPECT_EQ(m.mem_available, 4096 * kMiB);
}

TEST(MemoryRoomProbe, HybridV1Limited) {
    FakeRoot r;
    r.put("/proc/self/cgroup", "4:memory:/bench/run\n0::/\n");
    r.put("/proc/self/mountinfo", "34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
    r.put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    r.put("/sys/fs/cgroup/memory/bench/memory.limit_in_bytes", std::to_string(512 * kMiB));
    r.put("/sys/fs/cgroup/memory/bench/memory.usage_in_bytes", std::to_string(64 * kMiB));
    r.put("/sys/fs/cgroup/memory/bench/memory.stat",
          "inactive_file 0\ntotal_inactive_file " + std::to_string(32 * kMiB) + "\n");
    r.put("/sys/fs/cgroup/memory/bench/run/memory.limit_in_bytes", "9223372036854771712\n");
    auto m = r.probe();
    EXPECT_EQ(m.cgroup_room, 480 * kMiB);  // hierarchical: total_inactive_file
    EXPECT_EQ(m.cgroup_limit, 512 * kMiB);
    EXPECT_EQ(m.mem_available, std::nullopt);  // no /proc/meminfo
}

TEST(MemoryRoomProbe, DockerV1SubtreeMount) {
    // The container sees only its own cgroup, mounted at the v1 mount's top.
    FakeRoot r;
    r.put("/proc/self/cgroup", "7:memory:/docker/abc\n");
    r.put("/proc/self/mountinfo", "34 30 0:31 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n");
    r.put("/sys/fs/cgroup/memory/memory.limit_in_bytes", std::to_string(256 * kMiB));
    r.put("/sys/fs/cgroup/memory/memory.usage_in_bytes", std::to_string(300 * kMiB));  // above: no room
    auto m = r.probe();
    EXPECT_EQ(m.cgroup_room, 0u);
    EXPECT_EQ(m.cgroup_limit, 256 * kMiB);
}

TEST(MemoryRoomProbe, NamespacedV2Container) {
    FakeRoot r;
    r.put("/proc/meminfo", kMeminfo);
    r.put("/proc/self/cgroup", "0::/\n");
    r.put("/proc/self/mountinfo", "100 90 0:40 / /sys/fs/cgroup ro - cgroup2 cgroup rw\n");
    r.put("/sys/fs/cgroup/memory.max", std::to_string(2048 * kMiB) + "\n");
    auto m = r.probe();
    EXPECT_EQ(m.cgroup_room, 2048 * kMiB);  // no memory.current: nothing subtracted
}

TEST(MemoryRoomProbe, MalformedFilesAreIgnored) {
    FakeRoot r;
    r.put("/proc/meminfo", "MemAvailable: lots\n");
    r.put("/proc/self/cgroup", "0::/a\n");
    r.put("/proc/self/mountinfo", "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    r.put("/sys/fs/cgroup/a/memory.max", "garbage\n");
    r.put("/sys/fs/cgroup/a/memory.high", "");
    r.put("/sys/fs/cgroup/memory.max", std::to_string(100 * kMiB));
    r.put("/sys/fs/cgroup/memory.current", "not a number");
    auto m = r.probe();
    EXPECT_EQ(m.cgroup_room, 100 * kMiB);  // the readable ancestor; usage unreadable counts as 0
    EXPECT_EQ(m.mem_available, std::nullopt);
}

TEST(MemoryRoomProbe, NoMountinfoUsesTheUsualPlaces) {
    FakeRoot r;
    r.put("/proc/self/cgroup", "0::/a\n");
    r.put("/sys/fs/cgroup/a/memory.max", std::to_string(64 * kMiB));
    EXPECT_EQ(r.probe().cgroup_room, 64 * kMiB);
}

TEST(MemoryRoomProbe, NothingReadable) {
    FakeRoot r;
    auto m = r.probe();
    EXPECT_EQ(m.cgroup_room, std::nullopt);
    EXPECT_EQ(m.cgroup_limit, std::nullopt);
    EXPECT_EQ(m.mem_available, std::nullopt);
}

TEST(MemoryRoomProbe, ThisSystemDoesNotFail) {
    auto m = probe_memory_room();
    // Linux has had MemAvailable since 3.14.
    EXPECT_TRUE(m.mem_available);
}

}  // namespace
}  // namespace qimg
