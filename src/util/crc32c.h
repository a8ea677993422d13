// CRC-32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected), as the
// vhdx headers, region tables and log entries carry it. ISA-L's
// crc32_iscsi when built with it (QIMG_HAVE_ISAL), else a table-driven
// implementation here (one 1 KiB table, byte at a time: metadata checksums
// cover kilobytes, so speed does not justify another dependency).
#pragma once

#include <cstdint>
#include <span>

namespace qimg {

// The CRC of `data`. Chains: crc32c(b, crc32c(a)) == crc32c(a then b).
// crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

// The table implementation, whatever the build uses (for tests).
uint32_t crc32c_portable(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace qimg
