// libFuzzer target for VMDK seSparse extents (ESXi snapshot deltas), which
// the per-format fuzz_vmdk target cannot reach: an seSparse extent opens
// only through a descriptor naming it. The input is the extent file; a
// fixed descriptor beside it (createType="seSparse", one SESPARSE extent
// line, no parent) names it, and the descriptor is opened read-only as
// `qemu-img info`/`convert` open an image, then read, block-status queried
// and `check`ed. The extent's size comes from its own header, so the
// descriptor's sector count does not constrain the input.
// Seeds: tests/fuzz/corpus/fuzz_vmdk_sesparse (tests/fuzz/make_sesparse_seeds.sh,
// from tests/interop/tools/make-sesparse).
// Any error is fine; a crash, hang, huge allocation or sanitizer report is a
// bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "block/open.h"
#include "fuzz_node.h"

namespace {

constexpr char kDescriptor[] =
    "# Disk DescriptorFile\n"
    "version=1\n"
    "CID=12345678\n"
    "parentCID=ffffffff\n"
    "createType=\"seSparse\"\n"
    "\n"
    "# Extent description\n"
    "RW 65536 SESPARSE \"d-sesparse.vmdk\"\n"
    "\n"
    "ddb.virtualHWVersion = \"14\"\n";

bool write_file(const std::string &path, const void *data, size_t size) {
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    bool ok = std::fwrite(data, 1, size, f) == size;
    return std::fclose(f) == 0 && ok;
}

// The process's scratch directory with the descriptor in it ("" if none).
const std::string &scratch_dir() {
    static const std::string dir = [] {
        std::string t = "/tmp/fuzz_vmdk_sesparse_XXXXXX";
        if (!mkdtemp(t.data())) return std::string();
        if (!write_file(t + "/d.vmdk", kDescriptor, sizeof kDescriptor - 1)) return std::string();
        return t;
    }();
    return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string &dir = scratch_dir();
    if (dir.empty() || !write_file(dir + "/d-sesparse.vmdk", data, size)) return 0;
    qimg::OpenOptions o;
    o.format = "vmdk";
    o.flags.no_backing = true;
    {
        qimg::BlockOpener opener;
        if (auto node = opener.open_image(dir + "/d.vmdk", o)) qimg::fuzz::exercise(**node);
    }
    o.flags.check = true;
    qimg::BlockOpener opener;
    if (auto node = opener.open_image(dir + "/d.vmdk", o)) (void)(*node)->check(qimg::CheckRepair::None);
    return 0;
}
