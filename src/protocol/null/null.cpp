// null-co and null-aio: QEMU's null protocol drivers, which qemu-img's tests
// and benchmarks use as an endless source or sink ("null-co://", or
// --image-opts/json: with size, read-zeroes, latency-ns). Writes and flushes
// succeed and keep nothing; reads return zeroes. Both names are the same
// driver here (QEMU's differ only in their coroutine/AIO plumbing).
//
// QEMU leaves a read buffer as it was unless read-zeroes=on; qimg always
// fills it with zeroes, so that no uninitialised memory can reach an output.
// What the option still changes is what block status says, as in QEMU:
// without it the content is unknown (map: not present, not zero), with it
// every byte reads as zero.
//
// Concurrency: the node is immutable after open.
#include <chrono>
#include <cstring>
#include <thread>

#include "block/driver.h"
#include "util/keyval.h"

namespace qimg {
namespace {

constexpr uint64_t kDefaultSize = uint64_t{1} << 30;  // QEMU's default

class NullNode : public BlockNode {
public:
    NullNode(std::string driver, uint64_t size, bool read_zeroes, uint64_t latency_ns)
        : driver_(std::move(driver)), size_(size), read_zeroes_(read_zeroes), latency_ns_(latency_ns) {}

    std::string_view driver_name() const override { return driver_; }
    uint64_t length() const override { return size_; }
    Result<void> read(uint64_t, void *buf, size_t len) override {
        delay();
        std::memset(buf, 0, len);
        return ok();
    }
    Result<void> write(uint64_t, const void *, size_t) override {
        delay();
        return ok();
    }
    Result<void> write_zeroes(uint64_t, uint64_t, unsigned) override { return ok(); }
    Result<void> flush() override {
        delay();
        return ok();
    }
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        BlockStatus s;
        // Unknown content is not mapped anywhere (QEMU's map prints no offset).
        s.flags = read_zeroes_ ? (kStatusZero | kStatusOffsetValid) : 0u;
        s.bytes = len;
        s.host_offset = off;
        s.host_node = this;
        return s;
    }
    bool unallocated_reads_zero() const override { return false; }
    bool layout_follows_write_order() const override { return false; }  // nothing is kept
    Result<uint64_t> allocated_size() override { return uint64_t{0}; }
    bool has_driver_info() const override { return false; }

private:
    void delay() const {
        if (latency_ns_) std::this_thread::sleep_for(std::chrono::nanoseconds(latency_ns_));
    }
    std::string driver_;
    uint64_t size_;
    bool read_zeroes_;
    uint64_t latency_ns_;
};

Result<NodePtr> null_open(OpenRequest &req, const std::string &driver) {
    OptionMap &o = req.options;
    if (auto it = o.find("filename"); it != o.end()) {
        if (!it->second.empty() && it->second != driver + "://")
            return make_error(EINVAL, "The only allowed filename for this driver is '" + driver + "://'");
        o.erase(it);
    }
    uint64_t size = kDefaultSize, latency = 0;
    bool zeroes = false;
    if (auto it = o.find("size"); it != o.end()) {
        QIMG_ASSIGN(size, parse_size_opt("size", it->second));
        o.erase(it);
    }
    if (auto it = o.find("latency-ns"); it != o.end()) {
        // QEMU reads it as a signed number: a leading '-' is "invalid".
        if (!it->second.empty() && it->second[0] == '-') return make_error(EINVAL, "latency-ns is invalid");
        QIMG_ASSIGN(latency, parse_number_opt("latency-ns", it->second));
        o.erase(it);
    }
    if (auto it = o.find("read-zeroes"); it != o.end()) {
        QIMG_ASSIGN(zeroes, parse_bool_opt("read-zeroes", it->second));
        o.erase(it);
    }
    if (size > uint64_t(INT64_MAX)) return make_error(EINVAL, "size is invalid");
    return NodePtr(std::make_shared<NullNode>(driver, size, zeroes, latency));
}

Driver null_driver(const char *name) {
    Driver d;
    d.name = name;
    d.is_protocol = true;
    d.parses_filename = true;  // QEMU's bdrv_parse_filename
    d.protocol_prefixes = {name};
    d.open = [driver = std::string(name)](OpenRequest &req) { return null_open(req, driver); };
    d.strong_options = {"size", "read-zeroes"};
    // QEMU's null_refresh_filename: "null-co://" while only the latency
    // (which does not change what is read) was given.
    d.refresh_filename = [driver = std::string(name)](const nlohmann::ordered_json &full, const std::string &) {
        for (auto it = full.begin(); it != full.end(); ++it)
            if (it.key() != "filename" && it.key() != "driver" && it.key() != "latency-ns") return std::string();
        return driver + "://";
    };
    return d;
}

const Driver *make_null_co_driver() {
    static Driver d = null_driver("null-co");
    return &d;
}
const Driver *make_null_aio_driver() {
    static Driver d = null_driver("null-aio");
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_null_co_driver);
QIMG_REGISTER_DRIVER(make_null_aio_driver);

}  // namespace qimg
