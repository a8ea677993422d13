// Fault injection for crash-safety testing (docs/crash-testing.md): every
// call that changes a host file (write, write_zeroes, discard, truncate,
// flush) is one numbered event of the process. Environment:
//   QIMG_FAULT_LOG=PATH     append one line per event to PATH ("3 write 0 65536")
//   QIMG_FAULT_AFTER=N      event N (1-based) does not happen: the process is
//                           killed with SIGKILL just before it ...
//   QIMG_FAULT_MODE=error   ... or, instead, only that call fails with EIO
//                           ("Input/output error") and the process goes on.
// Unset, the hook costs one relaxed atomic load per call.
#pragma once

#include <cstdint>

#include "util/result.h"

namespace qimg::fault {

// Called by the file protocol before it changes a file; an error means
// "fail this call" (error mode). In kill mode it does not return.
Result<void> before_change(const char *what, uint64_t off, uint64_t len);

}  // namespace qimg::fault
