// Bounds-checked access to on-disk structures held in memory: typed
// little/big-endian fields at named offsets (a Field names its offset, width
// and byte order once), read through a ByteReader or written through a
// ByteWriter that never goes past its span. A field out of range reads as
// zero (writes nothing) and makes the reader/writer fail for good, so a
// parser reads all its fields and checks once (as LLVM's DataExtractor
// with an error cursor). The raw accessors are in endian.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "util/endian.h"

namespace qimg {

enum class Endian { Little, Big };

// A field of type T at byte `offset` of its structure.
template <class T, Endian E>
struct Field {
    size_t offset;
    static constexpr size_t size = sizeof(T);
    // The same field of a structure that starts at `base` (a field of a
    // record inside a larger buffer).
    constexpr Field at(size_t base) const { return Field{base + offset}; }
};
using U8 = Field<uint8_t, Endian::Big>;
using Be16 = Field<uint16_t, Endian::Big>;
using Be32 = Field<uint32_t, Endian::Big>;
using Be64 = Field<uint64_t, Endian::Big>;
using Le16 = Field<uint16_t, Endian::Little>;
using Le32 = Field<uint32_t, Endian::Little>;
using Le64 = Field<uint64_t, Endian::Little>;

namespace bytes_detail {
template <class T, Endian E>
T load(const uint8_t *p) {
    if constexpr (sizeof(T) == 1) return *p;
    else if constexpr (E == Endian::Big && sizeof(T) == 2) return be16(p);
    else if constexpr (E == Endian::Big && sizeof(T) == 4) return be32(p);
    else if constexpr (E == Endian::Big) return be64(p);
    else if constexpr (sizeof(T) == 2) return le16(p);
    else if constexpr (sizeof(T) == 4) return le32(p);
    else return le64(p);
}
template <class T, Endian E>
void store(uint8_t *p, T v) {
    if constexpr (sizeof(T) == 1) *p = v;
    else if constexpr (E == Endian::Big && sizeof(T) == 2) put_be16(p, v);
    else if constexpr (E == Endian::Big && sizeof(T) == 4) put_be32(p, v);
    else if constexpr (E == Endian::Big) put_be64(p, v);
    else if constexpr (sizeof(T) == 2) put_le16(p, v);
    else if constexpr (sizeof(T) == 4) put_le32(p, v);
    else put_le64(p, v);
}
}  // namespace bytes_detail

class ByteReader {
public:
    explicit ByteReader(std::span<const uint8_t> b) : b_(b) {}

    size_t size() const { return b_.size(); }
    // Whether [off, off + len) lies inside the span (does not fail the reader).
    bool has(size_t off, size_t len) const { return off <= b_.size() && len <= b_.size() - off; }
    template <class T, Endian E>
    bool has(Field<T, E> f) const {
        return has(f.offset, sizeof(T));
    }
    // False once any access went out of range.
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }

    template <class T, Endian E>
    T get(Field<T, E> f) {
        if (!check(f.offset, sizeof(T))) return T{};
        return bytes_detail::load<T, E>(b_.data() + f.offset);
    }
    uint8_t u8(size_t off) { return get(U8{off}); }
    uint16_t be16(size_t off) { return get(Be16{off}); }
    uint32_t be32(size_t off) { return get(Be32{off}); }
    uint64_t be64(size_t off) { return get(Be64{off}); }
    uint16_t le16(size_t off) { return get(Le16{off}); }
    uint32_t le32(size_t off) { return get(Le32{off}); }
    uint64_t le64(size_t off) { return get(Le64{off}); }

    // The bytes [off, off + len); empty (and failed) past the end.
    std::span<const uint8_t> bytes(size_t off, size_t len) {
        if (!check(off, len)) return {};
        return b_.subspan(off, len);
    }
    // At most `max_len` bytes from `off`, up to the first NUL (a fixed-size
    // name field as C strings are stored on disk).
    std::string cstring(size_t off, size_t max_len) {
        std::span<const uint8_t> s = bytes(off, max_len);
        const char *p = reinterpret_cast<const char *>(s.data());
        return std::string(p, s.empty() ? 0 : strnlen(p, s.size()));
    }

private:
    bool check(size_t off, size_t len) {
        if (has(off, len)) return true;
        ok_ = false;
        return false;
    }
    std::span<const uint8_t> b_;
    bool ok_ = true;
};

class ByteWriter {
public:
    explicit ByteWriter(std::span<uint8_t> b) : b_(b) {}

    size_t size() const { return b_.size(); }
    bool has(size_t off, size_t len) const { return off <= b_.size() && len <= b_.size() - off; }
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }

    template <class T, Endian E>
    void put(Field<T, E> f, std::type_identity_t<T> v) {
        if (check(f.offset, sizeof(T))) bytes_detail::store<T, E>(b_.data() + f.offset, v);
    }
    void bytes(size_t off, const void *data, size_t len) {
        if (len && check(off, len)) std::memcpy(b_.data() + off, data, len);
    }

private:
    bool check(size_t off, size_t len) {
        if (has(off, len)) return true;
        ok_ = false;
        return false;
    }
    std::span<uint8_t> b_;
    bool ok_ = true;
};

}  // namespace qimg
