// Helpers shared by the qcow2 unit tests: temp directories, running the real
// qemu-img/qemu-io, and opening images through the block layer.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
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

struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/qimg-qcow2-test-XXXXXX";
        path = mkdtemp(t);
    }
    ~TempDir() { sh("rm -rf '" + path + "'"); }
    std::string operator/(const std::string &n) const { return path + "/" + n; }
};

inline std::vector<uint8_t> read_file(const std::string &p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
inline void write_file(const std::string &p, const std::vector<uint8_t> &d) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char *>(d.data()), std::streamsize(d.size()));
}

inline Result<NodePtr> open_image(BlockOpener &op, const std::string &name, bool rw = false,
                                  const std::string &fmt = "qcow2") {
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

}  // namespace qimg::test
