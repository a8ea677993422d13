// UUID parsing, formatting and generation (see uuid.h).
#include "util/uuid.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>

namespace qimg {
namespace {

constexpr size_t kTextLength = 36;
constexpr bool is_dash_position(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Reverses the byte order of the three leading fields (4, 2 and 2 bytes):
// the swap is its own inverse.
std::array<uint8_t, 16> swap_guid_fields(std::array<uint8_t, 16> b) {
    std::reverse(b.begin(), b.begin() + 4);
    std::reverse(b.begin() + 4, b.begin() + 6);
    std::reverse(b.begin() + 6, b.begin() + 8);
    return b;
}

}  // namespace

bool Uuid::is_nil() const {
    return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

std::optional<Uuid> Uuid::parse(std::string_view text) {
    if (text.size() != kTextLength) return std::nullopt;
    Uuid u;
    size_t out = 0;
    for (size_t i = 0; i < kTextLength; i += 2) {
        if (is_dash_position(i)) {
            if (text[i] != '-') return std::nullopt;
            i--;  // the next pair starts right after the dash
            continue;
        }
        int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        u.bytes[out++] = uint8_t(hi << 4 | lo);
    }
    return u;
}

std::string Uuid::to_string() const {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s;
    s.reserve(kTextLength);
    for (size_t i = 0; i < bytes.size(); i++) {
        if (is_dash_position(s.size())) s += '-';
        s += kDigits[bytes[i] >> 4];
        s += kDigits[bytes[i] & 15];
    }
    return s;
}

Result<Uuid> Uuid::generate() {
    Uuid u;
    size_t got = 0;
    while (got < u.bytes.size()) {
        ssize_t n = getrandom(u.bytes.data() + got, u.bytes.size() - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error(errno, "Could not generate a UUID");
        }
        got += size_t(n);
    }
    u.bytes[6] = uint8_t((u.bytes[6] & 0x0f) | 0x40);  // version 4
    u.bytes[8] = uint8_t((u.bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
    return u;
}

Uuid Uuid::from_guid_le(std::span<const uint8_t, 16> stored) {
    std::array<uint8_t, 16> b;
    std::copy(stored.begin(), stored.end(), b.begin());
    return Uuid{swap_guid_fields(b)};
}

std::array<uint8_t, 16> Uuid::to_guid_le() const { return swap_guid_fields(bytes); }

}  // namespace qimg
