// libFuzzer target for the qcow2 metadata walkers that the open+read target
// does not reach: the snapshot table and bitmap directory listings, `check`
// (every L1/L2/refcount table, snapshot L1s, bitmap tables) and `check -r
// all` (the refcount rebuild and table rewrites) on a hostile image. The
// input is written to a temp file; the repair changes that copy only.
// Any error is fine; a crash, hang, huge allocation or sanitizer report is
// a bug. Check messages go to stderr as in qemu-img (run with
// -close_fd_mask=2 to silence them).
#include <cstdint>
#include <cstdio>
#include <string>

#include "block/open.h"
#include "fuzz_file.h"

namespace {

// Opens the qcow2 image at `path` as `qemu-img check` does (no backing chain).
qimg::Result<qimg::NodePtr> open_for_check(qimg::BlockOpener &opener, const std::string &path, bool read_write) {
    qimg::OpenOptions o;
    o.format = "qcow2";
    o.flags.no_backing = true;
    o.flags.check = true;
    o.flags.read_write = read_write;
    return opener.open_image(path, o);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string path = qimg::fuzz::input_file("fuzz_qcow2_check", data, size);
    if (path.empty()) return 0;

    {
        qimg::BlockOpener opener;
        auto node = open_for_check(opener, path, false);
        if (!node) return 0;
        (void)(*node)->snapshot_list();
        (void)(*node)->bitmap_list();
        (void)(*node)->check(qimg::CheckRepair::None);
    }
    {
        // What `qemu-img check -r all` does, then a second check of the result.
        qimg::BlockOpener opener;
        auto node = open_for_check(opener, path, true);
        if (!node) return 0;
        if ((*node)->check(qimg::CheckRepair::All)) (void)(*node)->check(qimg::CheckRepair::None);
        (void)(*node)->flush();
    }
    return 0;
}
