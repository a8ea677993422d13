// The in-memory refcount table of `check` (QEMU's "imrt"): one expected
// refcount per host cluster of the image file. Stored in pages that exist
// only once a refcount in them is non-zero, so that a hostile image whose
// metadata points gigabytes past its data (which a repair then grows the
// file to, as QEMU does) costs memory for the clusters in use, not for the
// whole range, and walks skip untouched pages at once.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace qimg::qcow2 {

class RefcountArray {
public:
    static constexpr unsigned kPageBits = 9;  // entries per page: 512 (4 KiB)
    static constexpr uint64_t kPageEntries = uint64_t(1) << kPageBits;

    uint64_t size() const { return size_; }

    uint64_t get(uint64_t i) const {
        const Page *p = page(i);
        return p ? (*p)[i & (kPageEntries - 1)] : 0;
    }

    // `i` must be below size().
    void set(uint64_t i, uint64_t v) {
        std::unique_ptr<Page> &p = pages_[i >> kPageBits];
        if (!p) {
            if (v == 0) return;
            p = std::make_unique<Page>();
            p->fill(0);
        }
        (*p)[i & (kPageEntries - 1)] = v;
    }

    // Grows or shrinks to `n` entries; new entries are 0.
    void resize(uint64_t n) {
        pages_.resize((n + kPageEntries - 1) >> kPageBits);
        if (n < size_ && (n & (kPageEntries - 1)) && pages_.back()) {
            Page &last = *pages_.back();
            std::fill(last.begin() + long(n & (kPageEntries - 1)), last.end(), 0);
        }
        size_ = n;
    }

    // `n` entries, all 0.
    void assign(uint64_t n) {
        pages_.clear();
        size_ = 0;
        resize(n);
    }

    // The first index >= i with a non-zero refcount, or size() if none.
    uint64_t next_nonzero(uint64_t i) const {
        while (i < size_) {
            const Page *p = page(i);
            if (!p) {
                i = ((i >> kPageBits) + 1) << kPageBits;
                continue;
            }
            uint64_t end = std::min(size_, ((i >> kPageBits) + 1) << kPageBits);
            for (; i < end; i++)
                if ((*p)[i & (kPageEntries - 1)]) return i;
        }
        return size_;
    }

    // True if the page holding entry `i` was never written: every entry of
    // that page is 0 (lets walks skip a whole page at once).
    bool page_absent(uint64_t i) const { return i < size_ && !page(i); }

private:
    // Refcounts are at most 64 bits wide; pages are allocated only where
    // used, so the entry width matters little and one width keeps it simple.
    using Page = std::array<uint64_t, kPageEntries>;
    const Page *page(uint64_t i) const {
        uint64_t k = i >> kPageBits;
        return k < pages_.size() ? pages_[k].get() : nullptr;
    }

    std::vector<std::unique_ptr<Page>> pages_;
    uint64_t size_ = 0;
};

}  // namespace qimg::qcow2
