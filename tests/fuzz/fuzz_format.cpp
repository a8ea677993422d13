// libFuzzer target template, compiled once per format (CMake defines
// QIMG_FUZZ_FORMAT, e.g. "qcow2", for each driver registered with FUZZ; the
// target is fuzz_<format>). The input is written to a temp file and opened as
// an image of that format through the normal opener (no backing chain, as
// `qemu-img info`/`check` open a hostile image); then the guest content
// (bounded) is read, block status and format info are queried, the image is
// checked when the format can be, and snapshots/bitmaps are listed.
// Any error is fine; a crash, hang, huge allocation or sanitizer report is a
// bug.
#include <cstdint>
#include <string>

#include "block/driver.h"
#include "block/open.h"
#include "fuzz_file.h"
#include "fuzz_node.h"

#ifndef QIMG_FUZZ_FORMAT
#error "QIMG_FUZZ_FORMAT names the format this target opens (set by CMake)"
#endif

namespace {

qimg::Result<qimg::NodePtr> open_as_format(qimg::BlockOpener &opener, const std::string &path, bool for_check) {
    qimg::OpenOptions o;
    o.format = QIMG_FUZZ_FORMAT;
    o.flags.no_backing = true;
    o.flags.check = for_check;  // as `qemu-img check` opens: no repair on open
    return opener.open_image(path, o);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string path = qimg::fuzz::input_file("fuzz_" QIMG_FUZZ_FORMAT, data, size);
    if (path.empty()) return 0;
    {
        qimg::BlockOpener opener;
        auto node = open_as_format(opener, path, false);
        if (node) qimg::fuzz::exercise(**node);
    }
    const qimg::Driver *d = qimg::find_driver(QIMG_FUZZ_FORMAT);
    if (d && d->supports_check) {
        qimg::BlockOpener opener;
        if (auto node = open_as_format(opener, path, true)) (void)(*node)->check(qimg::CheckRepair::None);
    }
    return 0;
}
