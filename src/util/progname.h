// The program name that starts qemu-img's messages ("<argv0>: ..."), as
// QEMU's error_get_progname(): set once by main, read by the few places
// below the CLI that print qemu-img's messages themselves (qcow2 check
// reports, which QEMU prints to stderr as it goes).
#pragma once

#include <string>

namespace qimg {

const std::string &program_name();  // "qemu-img" until set
void set_program_name(std::string name);

}  // namespace qimg
