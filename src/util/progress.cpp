// Progress meter (see progress.h).
#include "util/progress.h"

#include <pthread.h>
#include <signal.h>

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
