// Fault injection for crash-safety testing (docs/crash-testing.md): a filter
// node that the opener puts above every protocol node (block/open.h,
// set_protocol_filter) when the environment asks for it. Every call that
// changes the storage below (write, write_zeroes, discard, truncate, flush,
// copy_range) is one numbered event of the process, over all nodes.
// Environment:
//   QIMG_FAULT_LOG=PATH     append one line per event to PATH ("3 write 0 65536")
//   QIMG_FAULT_AFTER=N      event N (1-based) does not happen: the process is
//                           killed with SIGKILL just before it ...
//   QIMG_FAULT_MODE=error   ... or, instead, only that call fails with EIO
//                           ("Input/output error") and the process goes on.
// Unset, no filter is inserted: the I/O path does not pass through here.
#pragma once

#include <cstdint>

#include "util/result.h"

namespace qimg::fault {

// One event: an error means "fail this call" (error mode). In kill mode it
// does not return. Exposed for the unit test of the numbering.
Result<void> before_change(const char *what, uint64_t off, uint64_t len);

}  // namespace qimg::fault
