// Target creation for convert and dd: qemu-img's bdrv_create() path (no
// "Formatting ..." line), split in the two steps qemu-img interleaves with
// its other checks: validating -o/-B/-F against the format and protocol
// option lists, then creating. A stand-in until cli/create_opts lands;
// convert and dd only call these three functions.
#pragma once

#include <optional>
#include <string>

#include "block/driver.h"
#include "block/open.h"

namespace qimg::cli {

struct TargetPlan {
    const Driver *format = nullptr;
    std::string filename;
    std::map<std::string, std::string> options;  // validated -o values
};

// Finds the format and checks creation options. Messages as qemu-img:
// "Unknown file format 'x'" (or `unknown_fmt_msg` when given, dd's wording),
// "Format driver 'x' does not support image creation", "Invalid parameter 'k'",
// "Backing file not supported for file format 'x'", ...
Result<TargetPlan> plan_target(const std::string &fmt, const std::string &filename, const std::string &options,
                               uint64_t size, const std::string &backing, const std::string &backing_fmt,
                               const char *unknown_fmt_msg = nullptr);

// Creates the image. Errors are the driver's own message.
Result<void> create_target(BlockOpener &opener, const TargetPlan &plan);

// `-o help` for the target format (and its protocol when a filename is
// known), as qemu-img's print_block_option_help(). Returns the exit code.
int print_target_option_help(const std::string &fmt, const std::string *filename);

}  // namespace qimg::cli
