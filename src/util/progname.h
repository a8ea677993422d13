// The program name that starts qemu-img's messages ("<argv0>: ..."), as
// QEMU's error_get_progname(): set once by main, read by the few places
// below the CLI that print qemu-img's messages themselves (qcow2 check
// reports, which QEMU prints to stderr as it goes).
#pragma once

#include <string>
#include <string_view>

namespace qimg {

const std::string &program_name();  // "qemu-img" until set
void set_program_name(std::string name);
// "<program>: <msg>\n" on stderr at once: QEMU's error_report() from a layer
// whose caller passes no error object, which then sees only an errno.
void report_error(std::string_view msg);

// "<program>: warning: <msg>" on stderr, stdout flushed first (QEMU's
// warn_report), for warnings that arise below the CLI (creation options).
void report_warning(std::string_view msg);

}  // namespace qimg
