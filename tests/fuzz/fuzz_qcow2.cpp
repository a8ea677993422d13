// libFuzzer target for the qcow2 open + read path: the input is written to a
// temp file and opened as qcow2 (no backing chain); then the whole guest
// content (bounded) is read and block status and format info are queried.
// Any error is fine; a crash, hang or sanitizer report is a bug.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "block/open.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string path = qimg::fuzz::input_file("fuzz_qcow2", data, size);
    if (path.empty()) return 0;

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
