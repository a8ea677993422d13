// Format-neutral helpers for unit tests (tests/lib, on the include path as
// "lib/..."): temp directories, running the real qemu-img/qemu-io, building
// images of any format with them, opening images through the block layer,
// and deterministic patterns. Format-specific builders live next to their
// tests (tests/unit/qcow2_test_util.h).
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "block/open.h"

namespace qimg::test {

inline bool have_qemu() { return access("/usr/bin/qemu-img", X_OK) == 0 && access("/usr/bin/qemu-io", X_OK) == 0; }

// Runs a shell command; returns its exit status and stdout+stderr.
inline int sh(const std::string &cmd, std::string *out = nullptr) {
    std::string full = cmd + " 2>&1";
    FILE *p = popen(full.c_str(), "r");
    if (!p) return -1;
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) s.append(buf, n);
    int rc = pclose(p);
    if (out) *out = s;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A fresh directory under /tmp, removed with everything in it.
struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/qimg-unit-XXXXXX";
        path = mkdtemp(t);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    std::string operator/(const std::string &n) const { return path + "/" + n; }
    std::string file(const std::string &n) const { return path + "/" + n; }
};

inline std::vector<uint8_t> read_file(const std::string &p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
inline void write_file(const std::string &p, const std::vector<uint8_t> &d) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char *>(d.data()), std::streamsize(d.size()));
}

// Shell quoting for paths and qemu-io commands.
inline std::string quote(const std::string &s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// Image builders through the real tools: `qemu-img create -f fmt [-o opts]
// path size`, then each qemu-io command ("write -P 0x11 0 64k"). Returns
// qemu's output on failure, "" on success.
inline std::string qemu_create(const std::string &fmt, const std::string &path, const std::string &size,
                               const std::string &opts = "") {
    std::string out;
    std::string cmd = "qemu-img create -q -f " + fmt + (opts.empty() ? "" : " -o " + quote(opts)) + " " +
                      quote(path) + " " + size;
    return sh(cmd, &out) == 0 ? std::string() : cmd + ": " + out;
}
inline std::string qemu_io(const std::string &fmt, const std::string &path, const std::vector<std::string> &cmds) {
    std::string cmd = "qemu-io -f " + fmt;
    for (const auto &c : cmds) cmd += " -c " + quote(c);
    cmd += " " + quote(path);
    std::string out;
    if (sh(cmd, &out) != 0) return cmd + ": " + out;
    // qemu-io reports failed commands on stdout and still exits 0.
    if (out.find("failed") != std::string::npos || out.find("Pattern verification") != std::string::npos)
        return cmd + ": " + out;
    return {};
}

// Opens `name` as format `fmt` ("" probes) through the block layer.
inline Result<NodePtr> open_as(BlockOpener &op, const std::string &name, const std::string &fmt, bool rw = false) {
    OpenOptions o;
    o.format = fmt;
    o.flags.read_write = rw;
    return op.open_image(name, o);
}

// Reads the whole guest content of `node`.
inline std::vector<uint8_t> read_all(BlockNode &node) {
    std::vector<uint8_t> v(node.length());
    auto r = node.read(0, v.data(), v.size());
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return v;
}

// A deterministic pattern that differs at every offset of a unit and between
// seeds, so a misplaced or shifted block shows.
inline std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
    return v;
}

}  // namespace qimg::test
