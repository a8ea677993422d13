// The last unit a read-only compressed format decompressed (a cloop block,
// a dmg chunk), kept for the next read: sequential reads smaller than a
// unit (qemu-io's, dd's) would otherwise decompress the same unit again
// and again. Thread-safe; units are decompressed outside the lock by the
// caller and shared read-only, so a reader never waits for another's
// decompression.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace qimg {

class LastUnitCache {
public:
    using Unit = std::shared_ptr<const std::vector<uint8_t>>;

    // The unit stored under `key`, or null.
    Unit find(uint64_t key) {
        std::lock_guard lk(mu_);
        return unit_ && key_ == key ? unit_ : nullptr;
    }

    void store(uint64_t key, Unit unit) {
        std::lock_guard lk(mu_);
        key_ = key;
        unit_ = std::move(unit);
    }

private:
    std::mutex mu_;
    uint64_t key_ = 0;
    Unit unit_;
};

}  // namespace qimg
