// Progress meter (see progress.h).
#include "util/progress.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include <cstdio>
#include <cstring>

namespace qimg::progress {
namespace {

struct State {
    float current = 0;
    float last_print = 0;
    float min_skip = 0;
    bool enabled = false;
};

State g_state;
volatile sig_atomic_t g_print_pending = 0;

void on_sigusr1(int) { g_print_pending = 1; }

void emit() {
    if (g_state.enabled) {
        std::printf("    (%3.2f/100%%)\r", static_cast<double>(g_state.current));
        std::fflush(stdout);
    } else if (g_print_pending) {
        std::fprintf(stderr, "    (%3.2f/100%%)\n", static_cast<double>(g_state.current));
        g_print_pending = 0;
    }
}

}  // namespace

void init(bool enabled, float min_skip) {
    g_state = State{};
    g_state.min_skip = min_skip;
    g_state.enabled = enabled;
    if (!enabled) {
        struct sigaction action;
        std::memset(&action, 0, sizeof(action));
        sigfillset(&action.sa_mask);
        action.sa_handler = on_sigusr1;
        sigaction(SIGUSR1, &action, nullptr);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    }
}

void print(float delta, int max) {
    float current = max == 0 ? delta : g_state.current + delta / 100 * max;
    if (current > 100) current = 100;
    g_state.current = current;
    if (current > g_state.last_print + g_state.min_skip || current < g_state.last_print - g_state.min_skip ||
        current == 100 || current == 0) {
        g_state.last_print = g_state.current;
        emit();
    }
}

void end() {
    if (g_state.enabled) std::printf("\n");
}

}  // namespace qimg::progress

// --- JsonStream --------------------------------------------------------------

namespace qimg::progress {
namespace {

long long now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void write_all(int fd, const std::string &s) {
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = ::write(fd, s.data() + off, s.size() - off);
        if (n <= 0) return;  // a closed reader must not fail the convert
        off += static_cast<size_t>(n);
    }
}

}  // namespace

JsonStream::~JsonStream() {
    if (!borrow_ && fd_ >= 0) ::close(fd_);
}

void JsonStream::update(const char *phase, unsigned long long done, unsigned long long total, bool force) {
    std::lock_guard lk(mu_);
    long long t = now_ns();
    if (start_ns_ < 0) start_ns_ = t;
    last_done_ = done;
    last_total_ = total;
    if (!force && last_ns_ >= 0 && t - last_ns_ < 100'000'000) return;
    last_ns_ = t;
    double secs = static_cast<double>(t - start_ns_) / 1e9;
    unsigned long long rate = secs > 0 ? static_cast<unsigned long long>(static_cast<double>(done) / secs) : 0;
    write_all(fd_, "{\"phase\":\"" + std::string(phase) + "\",\"bytes_done\":" + std::to_string(done) +
                       ",\"bytes_total\":" + std::to_string(total) + ",\"rate\":" + std::to_string(rate) + "}\n");
}

void JsonStream::finish(bool ok) { update(ok ? "done" : "error", last_done_, last_total_, true); }

}  // namespace qimg::progress
