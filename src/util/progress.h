// qemu-img's progress meter (QEMU util/qemu-progress.c semantics): with -p,
// "    (P/100%)\r" lines on stdout whenever progress moved by more than the
// minimum step; without -p, SIGUSR1 makes the next update print
// "    (P/100%)\n" on stderr. Percentages are single-precision floats, as in
// QEMU, so the printed values match digit for digit.
#pragma once

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
