// qemu-img's progress meter (QEMU util/qemu-progress.c semantics): with -p,
// "    (P/100%)\r" lines on stdout whenever progress moved by more than the
// minimum step; without -p, SIGUSR1 makes the next update print
// "    (P/100%)\n" on stderr. Percentages are single-precision floats, as in
// QEMU, so the printed values match digit for digit.
#pragma once

#include <mutex>

namespace qimg::progress {

// enabled: -p given. min_skip: percent between two prints (convert 1.0,
// compare 2.0). Without -p this installs the SIGUSR1 handler.
void init(bool enabled, float min_skip);
// Reports progress. max == 0: `delta` is the absolute percentage done;
// otherwise `delta` percent of a sub-task worth `max` percent is added.
// Call from one thread only (the engine reports from its dispatcher).
void print(float delta, int max);
// Ends the meter (a newline with -p).
void end();

}  // namespace qimg::progress

namespace qimg::progress {

// qimg-only machine-readable progress (convert --progress-fd/--progress-file):
// one JSON object per line,
//   {"phase":"copy","bytes_done":N,"bytes_total":N,"rate":BYTES_PER_S}
// at most every 100 ms while copying, then a last line with phase "done"
// (or "error"). bytes_* count what the copy has to transfer (data, not holes),
// so bytes_done/bytes_total is the fraction -p shows. Thread-safe.
class JsonStream {
public:
    // Takes ownership of fd (closed on destruction) unless `borrow`.
    JsonStream(int fd, bool borrow) : fd_(fd), borrow_(borrow) {}
    ~JsonStream();
    JsonStream(const JsonStream &) = delete;
    JsonStream &operator=(const JsonStream &) = delete;
    // Reports progress; lines are rate-limited unless `force`.
    void update(const char *phase, unsigned long long done, unsigned long long total, bool force = false);
    void finish(bool ok);

private:
    int fd_;
    bool borrow_;
    unsigned long long last_done_ = 0, last_total_ = 0;
    long long start_ns_ = -1, last_ns_ = -1;
    std::mutex mu_;
};

}  // namespace qimg::progress
