// Size parsing and formatting; see size.h. The number scanning deliberately
// goes through strtoull/strtod like QEMU does, so whitespace, '+' and
// rounding behave identically.
#include "util/size.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace qimg {

namespace {

// cutils.c suffix_mul(): 0 when `c` is not a size suffix.
uint64_t suffix_multiplier(char c) {
    switch (std::toupper(static_cast<unsigned char>(c))) {
    case 'B': return 1;
    case 'K': return 1ULL << 10;
    case 'M': return 1ULL << 20;
    case 'G': return 1ULL << 30;
    case 'T': return 1ULL << 40;
    case 'P': return 1ULL << 50;
    case 'E': return 1ULL << 60;
    }
    return 0;
}

// qemu_strtou64() on a NUL-terminated buffer: 0, -EINVAL (nothing parsed)
// or -ERANGE (with *end past the digits, as strtoull leaves it).
int strtou64(const char *nptr, const char **end, int base, uint64_t *out) {
    char *ep = nullptr;
    errno = 0;
    *out = std::strtoull(nptr, &ep, base);
    int err = errno;
    *end = ep;
    if (err == 0 && ep == nptr) return -EINVAL;
    if (err == ERANGE) {
        *out = UINT64_MAX;
        return -ERANGE;
    }
    return err ? -err : 0;
}

Error size_error(int code, std::string_view s) {
    return make_error(code, fmt::format("Invalid size '{}'", s));
}

}  // namespace

Result<uint64_t> parse_size(std::string_view s, char default_suffix, std::string *warning) {
    const uint64_t default_mul = suffix_multiplier(default_suffix);
    if (default_mul == 0) return make_error(EINVAL, fmt::format("Invalid default size suffix '{}'", default_suffix));

    const std::string buf(s);
    const char *nptr = buf.c_str();
    const char *str_end = nptr + buf.size();  // an embedded NUL is never "the end"
    const char *endptr = nptr;
    uint64_t val = 0;
    uint64_t valf = 0;  // fraction as 0.64 fixed point
    bool hex = false;

    int ret = strtou64(nptr, &endptr, 10, &val);
    if (ret == -ERANGE) return size_error(endptr == str_end ? ERANGE : EINVAL, s);
    if (ret) return size_error(EINVAL, s);
    if (std::memchr(nptr, '-', endptr - nptr)) return size_error(EINVAL, s);

    if (val == 0 && (*endptr == 'x' || *endptr == 'X')) {
        ret = strtou64(nptr, &endptr, 16, &val);
        if (ret == -ERANGE) return size_error(endptr == str_end ? ERANGE : EINVAL, s);
        if (ret || *endptr == '.') return size_error(EINVAL, s);
        hex = true;
    } else if (*endptr == '.') {
        // A fraction: even "1." and "1.k" are valid; exponents are not.
        const char *f = endptr;
        char *ep = nullptr;
        errno = 0;
        double fraction = std::strtod(f, &ep);
        const int err = errno;
        if (ep == f) {
            endptr = f + 1;  // QEMU skips the lone '.'
        } else if (err == ERANGE) {
            // QEMU skips one more character here (past the NUL when there is
            // none, which is undefined behaviour there); refuse instead.
            if (ep >= str_end) return size_error(EINVAL, s);
            endptr = ep + 1;
        } else if (!std::isfinite(fraction)) {
            return size_error(EINVAL, s);
        } else if (std::memchr(f, 'e', ep - f) || std::memchr(f, 'E', ep - f)) {
            return size_error(EINVAL, s);
        } else {
            endptr = ep;
            // QEMU computes (uint64_t)(fraction * 2^64); a fraction that
            // rounds to 1.0 converts to 0 on x86-64, which we reproduce
            // instead of invoking undefined behaviour.
            const double scaled = fraction * 0x1p64;
            valf = scaled >= 0x1p64 ? 0 : static_cast<uint64_t>(scaled);
        }
    }

    uint64_t mul = endptr < str_end ? suffix_multiplier(*endptr) : 0;
    if (mul) {
        if (hex && warning) *warning = fmt::format("Using a multiplier suffix on hex numbers is deprecated: {}", s);
        ++endptr;
    } else {
        mul = default_mul;
    }

    if (mul == 1) {
        if (valf != 0) return size_error(EINVAL, s);  // a fraction needs a scale
    } else {
        // Exact 64.64 x 64.0 fixed-point product, rounding 0.5 up.
        const unsigned __int128 whole = static_cast<unsigned __int128>(val) * mul;
        const unsigned __int128 frac = static_cast<unsigned __int128>(valf) * mul;
        const unsigned __int128 total =
            whole + (frac >> 64) + (static_cast<uint64_t>(frac) >> 63);
        if (total >> 64) return size_error(endptr == str_end ? ERANGE : EINVAL, s);
        val = static_cast<uint64_t>(total);
    }

    if (endptr != str_end) return size_error(EINVAL, s);
    return val;
}

Result<int64_t> cvtnum_full(std::string_view name, std::string_view value, int64_t min, int64_t max,
                            std::string_view prog, std::string *warning) {
    auto r = parse_size(value, 'B', warning);
    if (!r && r.error().code != ERANGE) {
        return make_error(EINVAL, fmt::format("Invalid {} specified. You may use k, M, G, T, P or E suffixes for\n"
                                              "{}: kilobytes, megabytes, gigabytes, terabytes, petabytes and "
                                              "exabytes.",
                                              name, prog));
    }
    // QEMU compares the unsigned result with the signed bounds after
    // converting them to uint64_t; for min >= 0 that is the plain comparison.
    if (!r || *r > static_cast<uint64_t>(max) || *r < static_cast<uint64_t>(min)) {
        return make_error(ERANGE, fmt::format("Invalid {} specified. Must be between {} and {}.", name, min, max));
    }
    return static_cast<int64_t>(*r);
}

Result<int64_t> cvtnum(std::string_view name, std::string_view value, std::string_view prog,
                       std::string *warning) {
    return cvtnum_full(name, value, 0, INT64_MAX, prog, warning);
}

std::string size_to_str(uint64_t value) {
    static const char *const kPrefixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int exp2 = 0;
    // frexp's exponent minus one is floor(log2(value * 1024 / 1000)), which
    // switches to the next unit once the integer part would reach 1000.
    std::frexp(static_cast<double>(value) / (1000.0 / 1024.0), &exp2);
    const int shift = (exp2 - 1) / 10 * 10;
    const double scaled = static_cast<double>(value) / static_cast<double>(1ULL << shift);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%0.3g %sB", scaled, kPrefixes[shift / 10]);
    return buf;
}

}  // namespace qimg
