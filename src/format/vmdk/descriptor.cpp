// Descriptor parsing as qemu-img 7.2 reads it (see descriptor.h).
#include "format/vmdk/descriptor.h"

#include <climits>
#include <cstring>

namespace qimg::vmdk {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// A cursor over the text with the conversions of a scanf pattern: each
// skips leading white space where scanf does, and fails without moving
// when nothing matches.
struct Scanner {
    std::string_view s;
    size_t i = 0;

    void skip_space() {
        while (i < s.size() && is_space(s[i])) i++;
    }
    // %Ns
    bool word(size_t max, std::string &out) {
        skip_space();
        size_t b = i;
        while (i < s.size() && !is_space(s[i]) && i - b < max) i++;
        out.assign(s.substr(b, i - b));
        return i > b;
    }
    // %ld (base 10, clamped on overflow as strtol)
    bool number(int64_t &out) {
        skip_space();
        size_t j = i;
        bool neg = false;
        if (j < s.size() && (s[j] == '+' || s[j] == '-')) neg = s[j++] == '-';
        size_t digits = j;
        uint64_t v = 0;
        bool overflow = false;
        while (j < s.size() && s[j] >= '0' && s[j] <= '9') {
            unsigned d = unsigned(s[j] - '0');
            if (v > (uint64_t(INT64_MAX) + 1 - d) / 10) overflow = true;
            else v = v * 10 + d;
            j++;
        }
        if (j == digits) return false;
        i = j;
        if (neg) out = overflow || v > uint64_t(INT64_MAX) ? INT64_MIN : -int64_t(v);
        else out = overflow || v > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(v);
        return true;
    }
    bool literal(char c) {
        if (i < s.size() && s[i] == c) {
            i++;
            return true;
        }
        return false;
    }
    // %N[^\n\r"]
    bool name(size_t max, std::string &out) {
        size_t b = i;
        while (i < s.size() && s[i] != '\n' && s[i] != '\r' && s[i] != '"' && i - b < max) i++;
        out.assign(s.substr(b, i - b));
        return i > b;
    }
};

// The fields of `%10s %ld %10s "%511[^\n\r"]" %ld` at the start of `s`, and
// how many were converted.
struct Scanned {
    int matches = 0;
    std::string access, type, file;
    int64_t sectors = 0, offset = -1;
};

Scanned scan_line(std::string_view s) {
    Scanner sc{s};
    Scanned r;
    if (!sc.word(10, r.access)) return r;
    r.matches++;
    if (!sc.number(r.sectors)) return r;
    r.matches++;
    if (!sc.word(10, r.type)) return r;
    r.matches++;
    sc.skip_space();
    if (!sc.literal('"') || !sc.name(511, r.file)) return r;
    r.matches++;
    if (!sc.literal('"')) return r;
    if (!sc.number(r.offset)) return r;
    r.matches++;
    return r;
}

}  // namespace

std::string_view c_text(std::span<const uint8_t> b) {
    const void *nul = std::memchr(b.data(), 0, b.size());
    size_t n = nul ? size_t(static_cast<const uint8_t *>(nul) - b.data()) : b.size();
    return {reinterpret_cast<const char *>(b.data()), n};
}

std::optional<std::string> quoted_value(std::string_view desc, std::string_view key, size_t max_len) {
    size_t at = desc.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    size_t b = at + key.size() + 2;  // past `="`
    if (b >= desc.size()) return std::nullopt;
    size_t e = desc.find('"', b);
    if (e == std::string_view::npos || e - b >= max_len) return std::nullopt;
    return std::string(desc.substr(b, e - b));
}

std::optional<uint32_t> read_cid(std::string_view desc, bool parent) {
    std::string_view key = parent ? "parentCID" : "CID";
    size_t at = desc.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    size_t i = at + key.size() + 1;  // past the separator
    if (i > desc.size()) return std::nullopt;
    // scanf's %x: white space, a sign, an optional 0x, hex digits.
    while (i < desc.size() && is_space(desc[i])) i++;
    bool neg = false;
    if (i < desc.size() && (desc[i] == '+' || desc[i] == '-')) neg = desc[i++] == '-';
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    if (i + 2 < desc.size() && desc[i] == '0' && (desc[i + 1] == 'x' || desc[i + 1] == 'X') && hex(desc[i + 2]) >= 0)
        i += 2;
    size_t b = i;
    uint64_t v = 0;
    bool overflow = false;
    for (; i < desc.size() && hex(desc[i]) >= 0; i++) {
        if (v > (UINT64_MAX >> 4)) overflow = true;
        else v = (v << 4) | unsigned(hex(desc[i]));
    }
    if (i == b) return std::nullopt;
    if (overflow) v = UINT64_MAX;
    uint32_t r = uint32_t(v);  // what %x stores from strtoul's answer
    return neg ? uint32_t(0u - r) : r;
}

Result<std::string> parent_hint(std::string_view desc) {
    static constexpr std::string_view kKey = "parentFileNameHint";
    size_t at = desc.find(kKey);
    if (at == std::string_view::npos) return std::string();
    size_t b = at + kKey.size() + 2;
    size_t e = b <= desc.size() ? desc.find('"', b) : std::string_view::npos;
    if (e == std::string_view::npos || e - b > 4095) return make_error(EINVAL, "Invalid argument");
    return std::string(desc.substr(b, e - b));
}

Result<std::vector<ExtentLine>> parse_extents(std::string_view desc) {
    std::vector<ExtentLine> out;
    size_t p = 0;
    while (p < desc.size()) {
        size_t nl = desc.find('\n', p);
        size_t next = nl == std::string_view::npos ? desc.size() : nl + 1;
        Scanned s = scan_line(desc.substr(p));
        bool take = s.matches >= 4 && s.access == "RW";
        bool invalid = false;
        if (take) {
            if (s.type == "FLAT") invalid = s.matches != 5 || s.offset < 0;
            else if (s.type == "VMFS") invalid = s.matches != 4;
            else invalid = s.matches != 4;
        }
        if (invalid) {
            size_t end = nl == std::string_view::npos ? desc.size() : nl;
            return make_error(EINVAL, "Invalid extent line: " + std::string(desc.substr(p, end - p)));
        }
        if (take && s.sectors > 0 &&
            (s.type == "FLAT" || s.type == "SPARSE" || s.type == "VMFS" || s.type == "VMFSSPARSE" ||
             s.type == "SESPARSE")) {
            ExtentLine e;
            e.type = s.type;
            e.file = s.file;
            e.sectors = uint64_t(s.sectors);
            e.flat_offset = s.type == "FLAT" ? uint64_t(s.offset) : 0;
            out.push_back(std::move(e));
        }
        p = next;
    }
    return out;
}

bool probe_descriptor(std::span<const uint8_t> head) {
    const char *p = reinterpret_cast<const char *>(head.data());
    const char *end = p + head.size();
    while (p < end) {
        if (*p == '#') {  // a comment line
            while (p < end && *p != '\n') p++;
            p++;
            continue;
        }
        if (*p == ' ') {  // a blank line (spaces, maybe a CR)
            while (p < end && *p == ' ') p++;
            if (p < end && *p == '\r') p++;
            if (p == end || *p != '\n') return false;
            p++;
            continue;
        }
        for (std::string_view v : {"version=1", "version=2", "version=3"}) {
            size_t left = size_t(end - p);
            if (left >= v.size() + 1 && std::memcmp(p, v.data(), v.size()) == 0 && p[v.size()] == '\n') return true;
            if (left >= v.size() + 2 && std::memcmp(p, v.data(), v.size()) == 0 && p[v.size()] == '\r' &&
                p[v.size() + 1] == '\n')
                return true;
        }
        return false;
    }
    return false;
}

}  // namespace qimg::vmdk
