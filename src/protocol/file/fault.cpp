// Fault injection for crash-safety testing (see fault.h).
#include "protocol/file/fault.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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
