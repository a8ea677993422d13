// Memory room probing (see memory_room.h). Files per cgroup version
// (Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/memory.rst):
//   v2: memory.max, memory.high, memory.current, memory.stat inactive_file
//   v1: memory.limit_in_bytes, memory.usage_in_bytes,
//       memory.stat total_inactive_file (hierarchical, as usage_in_bytes)
// A level of the hierarchy limits its whole sub-tree, so every ancestor up
// to the mount's top is looked at and the tightest room wins.
#include "util/memory_room.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

namespace qimg {
namespace {

constexpr uint64_t kUnlimitedFrom = 1ull << 62;

std::string_view trim(std::string_view s) {
    auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (!s.empty() && ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && ws(s.back())) s.remove_suffix(1);
    return s;
}

// A whole decimal number, nothing else; nullopt on overflow.
std::optional<uint64_t> parse_u64(std::string_view s) {
    if (s.empty() || s.front() < '0' || s.front() > '9') return std::nullopt;
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (;;) {
        size_t p = s.find(sep);
        out.push_back(s.substr(0, p));
        if (p == std::string_view::npos) return out;
        s.remove_prefix(p + 1);
    }
}

// mountinfo escapes space, tab, newline and backslash as \ooo (octal).
std::string unescape_octal(std::string_view s) {
    auto oct = [](char c) { return c >= '0' && c <= '7'; };
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() && oct(s[i + 1]) && oct(s[i + 2]) && oct(s[i + 3])) {
            out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
            i += 3;
            continue;
        }
        out.push_back(s[i]);
    }
    return out;
}

// The whole of a small /proc or /sys file; nullopt when it cannot be read.
std::optional<std::string> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return std::nullopt;
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) return std::nullopt;
    return std::move(ss).str();
}

// "/a/b" -> "/a" -> "" (the mount's top).
std::string parent_dir(const std::string &rel) {
    size_t p = rel.rfind('/');
    return p == std::string::npos ? std::string() : rel.substr(0, p);
}

struct LevelFiles {
    std::array<const char *, 2> limits;  // the tightest of those that parse (nullptr: none)
    const char *usage;
    const char *inactive_key;  // in memory.stat
};
constexpr LevelFiles kV2Files{{"memory.max", "memory.high"}, "memory.current", "inactive_file"};
constexpr LevelFiles kV1Files{{"memory.limit_in_bytes", nullptr}, "memory.usage_in_bytes", "total_inactive_file"};

// Walks the cgroup `rel` of mount `m` up to the mount's top; keeps the
// least room in `out`.
void probe_hierarchy(const std::string &root, const CgroupMount &m, const std::string &path, const LevelFiles &files,
                     MemoryRoom &out) {
    std::string base = root + m.mount_point;
    for (std::string rel = cgroup_relative_dir(m, path);; rel = parent_dir(rel)) {
        std::string dir = base + rel + "/";
        uint64_t limit = kNoMemoryLimit;
        for (const char *f : files.limits) {
            if (!f) continue;
            if (auto c = read_file(dir + f))
                if (auto l = parse_cgroup_limit(*c)) limit = std::min(limit, *l);
        }
        if (limit != kNoMemoryLimit) {
            uint64_t usage = 0, inactive = 0;
            if (auto c = read_file(dir + files.usage)) usage = parse_cgroup_counter(*c).value_or(0);
            if (auto c = read_file(dir + "memory.stat")) inactive = parse_memory_stat(*c, files.inactive_key).value_or(0);
            uint64_t working = usage - std::min(usage, inactive);
            uint64_t room = limit - std::min(limit, working);
            if (!out.cgroup_room || room < *out.cgroup_room) {
                out.cgroup_room = room;
                out.cgroup_limit = limit;
            }
        }
        if (rel.empty()) break;
    }
}

}  // namespace

std::optional<uint64_t> parse_cgroup_counter(std::string_view contents) { return parse_u64(trim(contents)); }

std::optional<uint64_t> parse_cgroup_limit(std::string_view contents) {
    std::string_view s = trim(contents);
    if (s == "max" || s == "-1") return kNoMemoryLimit;
    auto v = parse_u64(s);
    if (v && *v >= kUnlimitedFrom) return kNoMemoryLimit;
    return v;
}

std::optional<uint64_t> parse_memory_stat(std::string_view stat, std::string_view key) {
    for (std::string_view line : split(stat, '\n')) {
        size_t sp = line.find(' ');
        if (sp != std::string_view::npos && line.substr(0, sp) == key) return parse_u64(trim(line.substr(sp + 1)));
    }
    return std::nullopt;
}

std::optional<uint64_t> parse_mem_available(std::string_view meminfo) {
    constexpr std::string_view kKey = "MemAvailable:";
    for (std::string_view line : split(meminfo, '\n')) {
        if (!line.starts_with(kKey)) continue;
        std::string_view v = trim(line.substr(kKey.size()));
        uint64_t scale = 1;
        if (v.ends_with("kB")) {
            v = trim(v.substr(0, v.size() - 2));
            scale = 1024;
        }
        auto n = parse_u64(v);
        uint64_t bytes;
        if (!n || __builtin_mul_overflow(*n, scale, &bytes)) return std::nullopt;
        return bytes;
    }
    return std::nullopt;
}

CgroupMembership parse_proc_cgroup(std::string_view contents) {
    CgroupMembership m;
    for (std::string_view line : split(contents, '\n')) {
        // "hierarchy-ID:controller-list:cgroup-path"; the path may hold ':'.
        size_t a = line.find(':');
        if (a == std::string_view::npos) continue;
        size_t b = line.find(':', a + 1);
        if (b == std::string_view::npos) continue;
        std::string_view id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1);
        std::string path(line.substr(b + 1));
        if (path.empty() || path.front() != '/') continue;
        if (id == "0" && controllers.empty()) {
            if (!m.v2_path) m.v2_path = path;
            continue;
        }
        auto list = split(controllers, ',');
        if (std::find(list.begin(), list.end(), "memory") != list.end() && !m.v1_memory_path) m.v1_memory_path = path;
    }
    return m;
}

CgroupMounts parse_mountinfo(std::string_view contents) {
    CgroupMounts out;
    for (std::string_view line : split(contents, '\n')) {
        // proc(5): ID parent major:minor root mount-point options [optional...] - fstype source super-options
        auto f = split(line, ' ');
        auto sep = std::find(f.begin(), f.end(), "-");
        if (sep == f.end() || sep - f.begin() < 6 || f.end() - sep < 4) continue;
        std::string_view fstype = sep[1], super_opts = sep[3];
        CgroupMount m{unescape_octal(f[3]), unescape_octal(f[4])};
        if (fstype == "cgroup2") {
            if (!out.v2) out.v2 = m;
        } else if (fstype == "cgroup") {
            auto opts = split(super_opts, ',');
            if (std::find(opts.begin(), opts.end(), "memory") != opts.end() && !out.v1_memory) out.v1_memory = m;
        }
    }
    return out;
}

std::string cgroup_relative_dir(const CgroupMount &m, std::string_view path) {
    std::string_view root = m.root;
    while (root.size() > 1 && root.back() == '/') root.remove_suffix(1);
    std::string_view rel;
    if (root == "/")
        rel = path;
    else if (path.starts_with(root) && (path.size() == root.size() || path[root.size()] == '/'))
        rel = path.substr(root.size());
    while (!rel.empty() && rel.back() == '/') rel.remove_suffix(1);
    return std::string(rel);
}

MemoryRoom probe_memory_room(const std::string &root) {
    MemoryRoom out;
    if (auto c = read_file(root + "/proc/meminfo")) out.mem_available = parse_mem_available(*c);

    auto cg = read_file(root + "/proc/self/cgroup");
    if (!cg) return out;
    CgroupMembership member = parse_proc_cgroup(*cg);
    CgroupMounts mounts;
    if (auto mi = read_file(root + "/proc/self/mountinfo")) {
        mounts = parse_mountinfo(*mi);
    } else {
        // The usual places, for a /proc without mountinfo.
        mounts.v2 = CgroupMount{"/", "/sys/fs/cgroup"};
        mounts.v1_memory = CgroupMount{"/", "/sys/fs/cgroup/memory"};
    }
    // Both are looked at: on a hybrid system the cgroup2 mount may have no
    // memory controller (no memory.max files), the v1 one does.
    if (member.v2_path && mounts.v2) probe_hierarchy(root, *mounts.v2, *member.v2_path, kV2Files, out);
    if (member.v1_memory_path && mounts.v1_memory)
        probe_hierarchy(root, *mounts.v1_memory, *member.v1_memory_path, kV1Files, out);
    return out;
}

}  // namespace qimg
