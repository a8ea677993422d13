// An in-memory protocol node for unit tests (SQLite's memvfs idea): usable as
// the file child of any format (open a driver over it with OpenRequest::file)
// or on its own as a source or target of the engine. It behaves like a host
// file: reads past the end return zeroes, writes past the end grow it, and
// truncate resizes it; with fixed_size() it behaves like an image instead
// (requests past the end fail). It counts the calls it gets so that tests can
// assert on what a driver or the engine did. Thread-safe (one mutex).
#pragma once

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/node.h"

namespace qimg::test {

class MemNode : public BlockNode {
public:
    explicit MemNode(size_t size = 0, bool fixed_size = false) : data_(size), fixed_(fixed_size) {
        read_only_ = false;
    }
    explicit MemNode(std::vector<uint8_t> data, bool fixed_size = false) : data_(std::move(data)), fixed_(fixed_size) {
        read_only_ = false;
    }

    std::string_view driver_name() const override { return "mem"; }
    uint64_t length() const override {
        std::lock_guard lk(mu_);
        return data_.size();
    }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        std::lock_guard lk(mu_);
        ++reads;
        if (fixed_ && !inside(off, len)) return make_error(EIO, "beyond end");
        auto *out = static_cast<uint8_t *>(buf);
        std::memset(out, 0, len);
        if (off < data_.size()) std::memcpy(out, data_.data() + off, std::min<uint64_t>(len, data_.size() - off));
        return ok();
    }
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        std::lock_guard lk(mu_);
        QIMG_TRY(make_room(off, len));
        std::memcpy(data_.data() + off, buf, len);
        ++writes;
        return ok();
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned) override {
        std::lock_guard lk(mu_);
        QIMG_TRY(make_room(off, len));
        std::memset(data_.data() + off, 0, len);
        ++zero_writes;
        return ok();
    }
    Result<void> discard(uint64_t off, uint64_t len) override {
        std::lock_guard lk(mu_);
        if (off < data_.size()) std::memset(data_.data() + off, 0, std::min<uint64_t>(len, data_.size() - off));
        ++discards;
        return ok();
    }
    Result<void> flush() override {
        std::lock_guard lk(mu_);
        ++flushes;
        return ok();
    }
    Result<void> truncate(uint64_t new_size, Prealloc, bool) override {
        std::lock_guard lk(mu_);
        if (fixed_) return make_error(ENOTSUP, "fixed size");
        data_.resize(new_size);
        return ok();
    }
    // Not a newly created file: it may start with any content, so copies
    // into it must write their zeroes (the default answer, made explicit).
    bool has_zero_init() const override { return false; }

    // A copy of the bytes.
    std::vector<uint8_t> bytes() const {
        std::lock_guard lk(mu_);
        return data_;
    }

    int reads = 0, writes = 0, zero_writes = 0, discards = 0, flushes = 0;
    // The content; tests set it up and inspect it directly while no request
    // runs (subclasses read it under lock()).
    std::vector<uint8_t> data_;

protected:
    std::unique_lock<std::mutex> lock() const { return std::unique_lock(mu_); }

private:
    bool inside(uint64_t off, uint64_t len) const { return off <= data_.size() && len <= data_.size() - off; }
    Result<void> make_room(uint64_t off, uint64_t len) {
        if (inside(off, len)) return ok();
        if (fixed_ || off + len < off || off + len > (uint64_t{1} << 32))
            return make_error(EIO, "beyond end");
        data_.resize(off + len);
        return ok();
    }

    mutable std::mutex mu_;
    bool fixed_;
};

// Opens format `fmt` directly over `mem` (no probing, no backing chain):
// the unit tests' way to build an image in memory and open it.
inline Result<NodePtr> open_format_over(const std::string &fmt, std::shared_ptr<MemNode> mem, bool rw = false) {
    OpenRequest req;
    req.file = std::move(mem);
    req.flags.read_write = rw;
    return find_driver(fmt)->open(req);
}
// The message of opening `img` as `fmt`, or "opened".
inline std::string open_error(const std::string &fmt, std::vector<uint8_t> img) {
    auto r = open_format_over(fmt, std::make_shared<MemNode>(std::move(img)));
    return r ? std::string("opened") : r.error().message;
}

}  // namespace qimg::test
