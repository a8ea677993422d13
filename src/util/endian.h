// Explicit little/big-endian accessors for on-disk structures. Every format
// driver reads and writes headers through these, never by casting structs.
#pragma once

#include <cstdint>
#include <cstring>

namespace qimg {

inline uint16_t le16(const void *p) { const uint8_t *b = static_cast<const uint8_t *>(p); return uint16_t(b[0] | b[1] << 8); }
inline uint32_t le32(const void *p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t le64(const void *p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
inline uint16_t be16(const void *p) { const uint8_t *b = static_cast<const uint8_t *>(p); return uint16_t(b[0] << 8 | b[1]); }
inline uint32_t be32(const void *p) { uint32_t v; std::memcpy(&v, p, 4); return __builtin_bswap32(v); }
inline uint64_t be64(const void *p) { uint64_t v; std::memcpy(&v, p, 8); return __builtin_bswap64(v); }

inline void put_le16(void *p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void put_le32(void *p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void put_le64(void *p, uint64_t v) { std::memcpy(p, &v, 8); }
inline void put_be16(void *p, uint16_t v) { v = __builtin_bswap16(v); std::memcpy(p, &v, 2); }
inline void put_be32(void *p, uint32_t v) { v = __builtin_bswap32(v); std::memcpy(p, &v, 4); }
inline void put_be64(void *p, uint64_t v) { v = __builtin_bswap64(v); std::memcpy(p, &v, 8); }

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "le accessors assume a little-endian host");

}  // namespace qimg
