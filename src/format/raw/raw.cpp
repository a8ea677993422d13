// The raw format: guest data is the file's bytes, optionally a window
// [offset, offset+size) of it. The smallest format driver, and the template
// a new format starts from: a node class, an open function that validates
// its options, a create function, and one QIMG_REGISTER_DRIVER line.
//
// Concurrency: raw holds no mutable state after open; requests go straight
// to the protocol child, which is thread-safe.
#include <algorithm>
#include <limits>

#include "block/driver.h"
#include "block/open.h"
#include "block/status.h"
#include "util/size.h"

namespace qimg {
namespace {

class RawNode final : public BlockNode {
public:
    RawNode(NodePtr file, uint64_t offset, uint64_t size, bool has_size)
        : offset_(offset), size_(size), has_size_(has_size) {
        file_ = std::move(file);
    }

    std::string_view driver_name() const override { return "raw"; }

    uint64_t length() const override {
        if (has_size_) return size_;
        uint64_t f = file_->length();
        return f > offset_ ? f - offset_ : 0;
    }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        return file_->read(offset_ + off, buf, len);
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        return file_->write(offset_ + off, buf, len);
    }

    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        QIMG_TRY(check_range(off, len));
        return file_->write_zeroes(offset_ + off, len, flags);
    }

    Result<void> discard(uint64_t off, uint64_t len) override {
        QIMG_TRY(check_range(off, len));
        return file_->discard(offset_ + off, len);
    }

    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override {
        if (has_size_ || offset_ != 0)
            return make_error(ENOTSUP, "Cannot resize a raw image with an offset or size option");
        return file_->truncate(new_size, prealloc, exact);
    }

    // Raw passes the question through: the file's holes are the image's zeroes.
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        QIMG_ASSIGN(BlockStatus s, node_status(*file_, offset_ + off, len));
        if (s.bytes == 0) {  // file shorter than the window: zeroes
            s.flags = kStatusZero | kStatusOffsetValid;
            s.bytes = len;
        }
        s.flags &= ~kStatusEof;
        s.flags |= kStatusOffsetValid;
        s.host_offset = offset_ + off;
        s.host_node = file_.get();
        return s;
    }

    uint32_t request_alignment() const override { return file_->request_alignment(); }

private:
    Result<void> check_range(uint64_t off, uint64_t len) const {
        uint64_t size = length();
        if (off > size || len > size - off) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }

    uint64_t offset_, size_;
    bool has_size_;
};

Result<uint64_t> take_size_option(OptionMap &opts, const char *key, bool &present) {
    present = false;
    auto it = opts.find(key);
    if (it == opts.end()) return uint64_t{0};
    present = true;
    auto v = parse_size(it->second);
    if (!v) return make_error(EINVAL, std::string("Parameter '") + key + "' expects a non-negative number below 2^64\n"
                                      "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                                      "and exabytes, respectively.");
    opts.erase(it);
    return *v;
}

Result<NodePtr> raw_open(OpenRequest &req) {
    req.options.erase("x-probed");
    bool has_offset = false, has_size = false;
    QIMG_ASSIGN(uint64_t offset, take_size_option(req.options, "offset", has_offset));
    QIMG_ASSIGN(uint64_t size, take_size_option(req.options, "size", has_size));
    uint64_t flen = req.file->length();
    if (offset > flen)
        return make_error(EINVAL, "The sum of offset (" + std::to_string(offset) + ") and size (" +
                                      std::to_string(has_size ? size : 0) + ") has to be smaller or equal to the "
                                      "actual size of the containing file (" + std::to_string(flen) + ")");
    if (has_size) {
        if (size % 512 != 0) return make_error(EINVAL, "Specified size is not multiple of 512");
        if (size > std::numeric_limits<uint64_t>::max() - offset || offset + size > flen)
            return make_error(EINVAL, "The sum of offset (" + std::to_string(offset) + ") and size (" +
                                          std::to_string(size) + ") has to be smaller or equal to the actual "
                                          "size of the containing file (" + std::to_string(flen) + ")");
    }
    return NodePtr(std::make_shared<RawNode>(req.file, offset, size, has_size));
}

Result<void> raw_create(CreateRequest &req) {
    QIMG_ASSIGN(Prealloc p, parse_prealloc(req.get("preallocation", "off")));
    return req.opener->create_protocol(req.filename, req.size, p);
}

const Driver *make_raw_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "raw";
        d.probe = [](std::span<const uint8_t>, const std::string &) { return 1; };
        d.open = raw_open;
        d.create = raw_create;
        d.create_options = {{"size", CreateOption::Type::Size, "Virtual disk size", ""}};
        d.formatting_order = {"size", "preallocation"};
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_raw_driver);

}  // namespace qimg
