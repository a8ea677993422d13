// CRC-32C (see crc32c.h).
#include "util/crc32c.h"

#include <algorithm>
#include <array>
#ifdef QIMG_HAVE_ISAL
#include <isa-l/crc.h>
#endif

namespace qimg {
namespace {

constexpr uint32_t kPolyReflected = 0x82F63B78;  // 0x1EDC6F41 bit-reversed

constexpr std::array<uint32_t, 256> make_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPolyReflected : c >> 1;
        t[i] = c;
    }
    return t;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

}  // namespace

uint32_t crc32c_portable(std::span<const uint8_t> data, uint32_t crc) {
    crc = ~crc;
    for (uint8_t b : data) crc = kTable[(crc ^ b) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc) {
#ifdef QIMG_HAVE_ISAL
    // crc32_iscsi works on the register: no inversion in or out; its
    // length is an int.
    crc = ~crc;
    while (!data.empty()) {
        const size_t n = std::min<size_t>(data.size(), size_t{1} << 30);
        crc = crc32_iscsi(const_cast<uint8_t *>(data.data()), int(n), crc);
        data = data.subspan(n);
    }
    return ~crc;
#else
    return crc32c_portable(data, crc);
#endif
}

}  // namespace qimg
