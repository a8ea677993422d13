// Fault injection for crash-safety testing (see fault.h): the event counter
// and the FaultNode filter the opener inserts above protocol nodes.
//
// Concurrency: the event counter is one atomic; the node keeps no state.
#include "filter/fault/fault.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "block/filter.h"
#include "block/open.h"

namespace qimg::fault {
namespace {

struct Config {
    bool active = false;
    uint64_t after = 0;  // 0: never fail
    bool kill = true;
    int log_fd = -1;
};

const Config &config() {
    static const Config c = [] {
        Config c;
        if (const char *a = std::getenv("QIMG_FAULT_AFTER"); a && *a) c.after = std::strtoull(a, nullptr, 10);
        if (const char *m = std::getenv("QIMG_FAULT_MODE"); m && std::strcmp(m, "error") == 0) c.kill = false;
        if (const char *l = std::getenv("QIMG_FAULT_LOG"); l && *l)
            c.log_fd = ::open(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        c.active = c.after != 0 || c.log_fd >= 0;
        return c;
    }();
    return c;
}

std::atomic<uint64_t> g_events{0};

// The events are the calls that change what the child stores, counted where
// the file protocol used to count them: not for calls it refuses before
// touching anything (read-only nodes, empty zero writes, flushes that
// cache=unsafe drops).
class FaultNode final : public FilterNode {
public:
    FaultNode(NodePtr child, bool no_flush) : FilterNode(std::move(child)), no_flush_(no_flush) {}

    std::string_view driver_name() const override { return file_->driver_name(); }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        if (!file_->read_only()) QIMG_TRY(before_change("write", off, len));
        return FilterNode::write(off, buf, len);
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        if (!file_->read_only() && len != 0) QIMG_TRY(before_change("write_zeroes", off, len));
        return FilterNode::write_zeroes(off, len, flags);
    }
    Result<void> discard(uint64_t off, uint64_t len) override {
        if (!file_->read_only()) QIMG_TRY(before_change("discard", off, len));
        return FilterNode::discard(off, len);
    }
    Result<void> flush() override {
        if (!no_flush_) QIMG_TRY(before_change("flush", 0, 0));
        return FilterNode::flush();
    }
    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override {
        if (!file_->read_only()) QIMG_TRY(before_change("truncate", new_size, 0));
        return FilterNode::truncate(new_size, prealloc, exact);
    }
    // The destination side of an offloaded copy. The filter cannot tell
    // whether the child will refuse the offload (O_DIRECT, another kind of
    // source), so such a refused try, which falls back to writes, counts
    // one event more than the writes.
    Result<void> copy_range_to(BlockNode &src, uint64_t src_off, uint64_t off, uint64_t len) override {
        if (!file_->read_only()) QIMG_TRY(before_change("copy_range", off, len));
        return FilterNode::copy_range_to(src, src_off, off, len);
    }

private:
    bool no_flush_;
};

NodePtr wrap(NodePtr node, const OpenFlags &flags) {
    return std::make_shared<FaultNode>(std::move(node), flags.cache.no_flush);
}

// Registered before main() runs, only when the environment asks for faults.
const bool g_registered = [] {
    if (config().active) set_protocol_filter(&wrap);
    return true;
}();

}  // namespace

Result<void> before_change(const char *what, uint64_t off, uint64_t len) {
    const Config &c = config();
    if (!c.active) return ok();
    const uint64_t n = ++g_events;
    if (c.log_fd >= 0) {
        char line[96];
        int k = std::snprintf(line, sizeof line, "%" PRIu64 " %s %" PRIu64 " %" PRIu64 "\n", n, what, off, len);
        if (k > 0) (void)!::write(c.log_fd, line, size_t(k));
    }
    if (n != c.after) return ok();
    if (c.kill) {
        ::kill(::getpid(), SIGKILL);
        ::_exit(137);  // not reached
    }
    return make_error(EIO, std::string(what) + ": Input/output error (injected)");
}

}  // namespace qimg::fault
