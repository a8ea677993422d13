// Padding and splitting of requests to a node's declared limits (limits.h).
#include "block/limits.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace qimg {
namespace {

uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// The largest piece a request may be: max_transfer (kept aligned), or a
// bounded default so that padding buffers stay small.
uint64_t piece(const IoLimits &lim, uint64_t max) {
    uint64_t a = std::max<uint64_t>(lim.align, 1);
    uint64_t m = max ? max : (lim.max_transfer ? lim.max_transfer : uint64_t{1} << 30);
    return std::max(a, align_down(m, a));
}

// Aligned calls in pieces: [off, off+len) with off and len aligned.
template <class Fn>
Result<void> in_pieces(uint64_t off, uint64_t len, uint64_t max, Fn fn) {
    while (len > 0) {
        uint64_t n = std::min(len, max);
        QIMG_TRY(fn(off, n));
        off += n;
        len -= n;
    }
    return ok();
}

}  // namespace

Result<void> limited_read(const IoLimits &lim, uint64_t off, void *buf, size_t len, const LimitedRead &read) {
    const uint64_t a = std::max<uint64_t>(lim.align, 1);
    auto *out = static_cast<uint8_t *>(buf);
    const uint64_t start = align_down(off, a), end = align_up(off + len, a);
    if (start == off && end == off + len)
        return in_pieces(off, len, piece(lim, 0), [&](uint64_t o, uint64_t n) { return read(o, out + (o - off), n); });
    // Unaligned: read the covering blocks into a bounce buffer, a piece at a time.
    std::vector<uint8_t> bounce;
    return in_pieces(start, end - start, piece(lim, 0), [&](uint64_t o, uint64_t n) -> Result<void> {
        bounce.resize(n);
        QIMG_TRY(read(o, bounce.data(), n));
        uint64_t from = std::max(o, off), to = std::min(o + n, off + len);
        if (from < to) std::memcpy(out + (from - off), bounce.data() + (from - o), to - from);
        return ok();
    });
}

Result<void> limited_write(const IoLimits &lim, uint64_t off, const void *buf, size_t len, const LimitedRead &read,
                           const LimitedWrite &write, std::mutex &rmw) {
    const uint64_t a = std::max<uint64_t>(lim.align, 1);
    const auto *in = static_cast<const uint8_t *>(buf);
    const uint64_t start = align_down(off, a), end = align_up(off + len, a);
    if (start == off && end == off + len)
        return in_pieces(off, len, piece(lim, 0), [&](uint64_t o, uint64_t n) { return write(o, in + (o - off), n); });
    std::lock_guard lock(rmw);
    std::vector<uint8_t> bounce;
    return in_pieces(start, end - start, piece(lim, 0), [&](uint64_t o, uint64_t n) -> Result<void> {
        bounce.resize(n);
        uint64_t from = std::max(o, off), to = std::min(o + n, off + len);
        // Only the edge blocks need their old content.
        if (from != o || to != o + n) QIMG_TRY(read(o, bounce.data(), n));
        std::memcpy(bounce.data() + (from - o), in + (from - off), to - from);
        return write(o, bounce.data(), n);
    });
}

Result<void> limited_write_zeroes(const IoLimits &lim, uint64_t off, uint64_t len, const LimitedRead &read,
                                  const LimitedWrite &write, const LimitedRange &zero, std::mutex &rmw) {
    const uint64_t a = std::max<uint64_t>(lim.align, 1);
    uint64_t head_end = std::min(off + len, align_up(off, a));
    uint64_t tail_start = std::max(head_end, align_down(off + len, a));
    std::vector<uint8_t> zeroes;
    auto edge = [&](uint64_t o, uint64_t n) -> Result<void> {
        if (n == 0) return ok();
        zeroes.assign(n, 0);
        return limited_write(lim, o, zeroes.data(), n, read, write, rmw);
    };
    QIMG_TRY(edge(off, head_end - off));
    QIMG_TRY(in_pieces(head_end, tail_start - head_end, piece(lim, lim.max_write_zeroes), zero));
    return edge(tail_start, off + len - tail_start);
}

Result<void> limited_discard(const IoLimits &lim, uint64_t off, uint64_t len, const LimitedRange &discard) {
    const uint64_t a = std::max<uint64_t>(lim.align, 1);
    uint64_t start = align_up(off, a), end = align_down(off + len, a);
    if (end <= start) return ok();  // a hint: nothing whole to drop
    return in_pieces(start, end - start, piece(lim, lim.max_discard), discard);
}

}  // namespace qimg
