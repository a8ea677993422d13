// libFuzzer target: the LUKS1 header parser (crypto/luks_header.h) on
// arbitrary bytes. Seeds (tests/fuzz/corpus/fuzz_luks_header): the 592
// header bytes of qcow2 images made by `qemu-img create -o
// encrypt.format=luks` (xts-plain64 and cbc-essiv:sha256), uuid and
// iteration counts pinned by tests/interop/tools/qcow2-luks.
#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/luks_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::span<const uint8_t> in(data, size);
    (void)qimg::crypto::is_luks_header(in);
    if (auto h = qimg::crypto::parse_luks_header(in)) {
        (void)qimg::crypto::luks_info_json(*h);
        (void)h->key_material_sectors(h->key_slots[0].stripes);
    }
    return 0;
}
