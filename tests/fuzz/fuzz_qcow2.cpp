// libFuzzer target for the qcow2 open + read path: the input is written to a
// temp file and opened as qcow2 (no backing chain); then the whole guest
// content (bounded) is read and block status and format info are queried.
// Any error is fine; a crash, hang or sanitizer report is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "block/open.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static std::string path = [] {
        char t[] = "/tmp/fuzz_qcow2_XXXXXX";
        int fd = mkstemp(t);
        if (fd >= 0) close(fd);
        return std::string(t);
    }();
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) return 0;
    std::fwrite(data, 1, size, f);
    std::fclose(f);

    qimg::BlockOpener opener;
    qimg::OpenOptions o;
    o.format = "qcow2";
    o.flags.no_backing = true;
    auto node = opener.open_image(path, o);
    if (!node) return 0;
    qimg::BlockNode &n = **node;
    (void)n.specific_info();
    const uint64_t len = std::min<uint64_t>(n.length(), 4u << 20);
    std::vector<uint8_t> buf(64 * 1024);
    for (uint64_t off = 0; off < len; off += buf.size()) {
        size_t chunk = size_t(std::min<uint64_t>(buf.size(), len - off));
        (void)n.read(off, buf.data(), chunk);
        (void)n.block_status(off, chunk);
    }
    return 0;
}
