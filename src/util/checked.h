// Checked arithmetic for sizes and offsets read from disk: the result, or
// nothing when it does not fit the type. Any field of an untrusted image
// that is added, multiplied or aligned before use goes through these.
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>
#include <type_traits>

namespace qimg {

template <std::unsigned_integral T>
constexpr std::optional<T> checked_add(T a, std::type_identity_t<T> b) {
    T r;
    if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
    return r;
}

template <std::unsigned_integral T>
constexpr std::optional<T> checked_mul(T a, std::type_identity_t<T> b) {
    T r;
    if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
    return r;
}

// `v` rounded up to a multiple of `align` (any non-zero value); nothing if
// that overflows or `align` is 0.
template <std::unsigned_integral T>
constexpr std::optional<T> checked_align_up(T v, std::type_identity_t<T> align) {
    if (align == 0) return std::nullopt;
    T rem = v % align;
    if (rem == 0) return v;
    return checked_add<T>(v, T(align - rem));
}

// ceil(a / b) without the overflow of (a + b - 1) / b; b must be non-zero.
template <std::unsigned_integral T>
constexpr T div_round_up(T a, std::type_identity_t<T> b) {
    return T(a / b + (a % b != 0));
}

// Whether [offset, offset + len) ends at or below `limit` (no wrap-around).
constexpr bool range_fits(uint64_t offset, uint64_t len, uint64_t limit) {
    return offset <= limit && len <= limit - offset;
}

}  // namespace qimg
