// Image comparison (see compare.h), following qemu-img's img_compare().
#include "engine/compare.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "block/status.h"
#include "engine/copy.h"

namespace qimg::engine {
namespace {

constexpr uint64_t kBufSize = 2 << 20;  // qemu-img's IO_BUF_SIZE
constexpr uint32_t kStatusMask = kStatusData | kStatusZero | kStatusOffsetValid | kStatusAllocated | kStatusEof;

// First non-zero sector (its offset within buf), or -1.
int64_t find_nonzero(const uint8_t *buf, uint64_t n) {
    uint64_t end = n / kSectorSize * kSectorSize, i = 0;
    for (; i < end; i += kSectorSize)
        if (!buffer_is_zero(buf + i, kSectorSize)) return static_cast<int64_t>(i);
    if (i < n && !buffer_is_zero(buf + i, n - end)) return static_cast<int64_t>(i);
    return -1;
}

class Comparer {
public:
    Comparer(BlockNode &a, BlockNode &b, const CompareOptions &o) : a_(a), b_(b), o_(o), buf1_(kBufSize), buf2_(kBufSize) {}

    int run() {
        uint64_t size1 = sector_length(a_), size2 = sector_length(b_);
        uint64_t total = std::min(size1, size2);
        uint64_t base = std::max(size1, size2);
        if (o_.on_progress) o_.on_progress(0);  // qemu_progress_print(0, 100)
        if (o_.strict && size1 != size2) {
            o_.out("Strict mode: Image size mismatch!\n");
            return 1;
        }
        uint64_t offset = 0;
        while (offset < total) {
            auto s1 = chain_status(a_, nullptr, offset, size1 - offset);
            if (!s1) return status_failed(o_.name1);
            auto s2 = chain_status(b_, nullptr, offset, size2 - offset);
            if (!s2) return status_failed(o_.name2);
            bool alloc1 = s1->flags & kStatusAllocated, alloc2 = s2->flags & kStatusAllocated;
            uint64_t chunk = std::min(s1->bytes, s2->bytes);
            if (o_.strict && strict_flags(*s1, offset, size1) != strict_flags(*s2, offset, size2)) {
                o_.out("Strict mode: Offset " + std::to_string(offset) + " block status mismatch!\n");
                return 1;
            }
            if ((s1->flags & kStatusZero) && (s2->flags & kStatusZero)) {
                // both read as zeroes
            } else if (alloc1 == alloc2) {
                if (alloc1) {
                    chunk = std::min(chunk, kBufSize);
                    if (int rc = read(a_, offset, chunk, buf1_.data(), o_.name1)) return rc;
                    if (int rc = read(b_, offset, chunk, buf2_.data(), o_.name2)) return rc;
                    uint64_t pnum;
                    bool differ = compare_buffers(buf1_.data(), buf2_.data(), chunk, pnum);
                    if (differ || pnum != chunk) {
                        o_.out("Content mismatch at offset " + std::to_string(offset + (differ ? 0 : pnum)) + "!\n");
                        return 1;
                    }
                }
            } else {
                chunk = std::min(chunk, kBufSize);
                if (int rc = alloc1 ? check_empty(a_, offset, chunk, o_.name1) : check_empty(b_, offset, chunk, o_.name2))
                    return rc;
            }
            offset += chunk;
            progress(chunk, base);
        }
        if (size1 != size2) {
            o_.out("Warning: Image size mismatch!\n");
            BlockNode &over = size1 > size2 ? a_ : b_;
            const std::string &name = size1 > size2 ? o_.name1 : o_.name2;
            while (offset < base) {
                auto s = chain_status(over, nullptr, offset, base - offset);
                if (!s) return status_failed(name);
                uint64_t chunk = s->bytes;
                if ((s->flags & kStatusAllocated) && !(s->flags & kStatusZero)) {
                    chunk = std::min(chunk, kBufSize);
                    if (int rc = check_empty(over, offset, chunk, name)) return rc;
                }
                offset += chunk;
                progress(chunk, base);
            }
        }
        o_.out("Images are identical.\n");
        return 0;
    }

private:
    // The status word qemu-img compares in strict mode. QEMU's end of file
    // is the sector-rounded size, not the byte length the node reports.
    static uint32_t strict_flags(const ChainStatus &s, uint64_t offset, uint64_t size) {
        uint32_t f = s.flags & kStatusMask & ~kStatusEof;
        if (offset + s.bytes >= size) f |= kStatusEof;
        return f;
    }

    void progress(uint64_t chunk, uint64_t base) {
        if (o_.on_progress) o_.on_progress((static_cast<float>(chunk) / static_cast<float>(base)) * 100);
    }

    int status_failed(const std::string &name) {
        o_.err("Sector allocation test failed for " + name);
        return 3;
    }

    int read(BlockNode &n, uint64_t off, uint64_t len, uint8_t *buf, const std::string &name) {
        auto r = read_padded(n, off, buf, len);
        if (!r) {
            o_.err("Error while reading offset " + std::to_string(off) + " of " + name + ": " +
                   std::strerror(r.error().code));
            return 4;
        }
        return 0;
    }

    int check_empty(BlockNode &n, uint64_t off, uint64_t len, const std::string &name) {
        if (int rc = read(n, off, len, buf1_.data(), name)) return rc;
        int64_t idx = find_nonzero(buf1_.data(), len);
        if (idx >= 0) {
            o_.out("Content mismatch at offset " + std::to_string(off + static_cast<uint64_t>(idx)) + "!\n");
            return 1;
        }
        return 0;
    }

    // qemu-img's compare_buffers(): whether the first sector differs, and
    // how far (whole sectors) that answer holds.
    static bool compare_buffers(const uint8_t *b1, const uint8_t *b2, uint64_t bytes, uint64_t &pnum) {
        uint64_t i = std::min(bytes, kSectorSize);
        bool res = std::memcmp(b1, b2, i) != 0;
        while (i < bytes) {
            uint64_t len = std::min(bytes - i, kSectorSize);
            if ((std::memcmp(b1 + i, b2 + i, len) != 0) != res) break;
            i += len;
        }
        pnum = i;
        return res;
    }

    BlockNode &a_, &b_;
    const CompareOptions &o_;
    std::vector<uint8_t> buf1_, buf2_;
};

}  // namespace

int compare_images(BlockNode &a, BlockNode &b, const CompareOptions &o) { return Comparer(a, b, o).run(); }

}  // namespace qimg::engine
