// Byte-size strings: QEMU's qemu_strtosz() ("1.5G", "0x10", "512"), qemu-img's
// cvtnum() wrappers with their exact messages, and size_to_str() for the
// human-readable sizes in `qemu-img info` ("1.5 KiB", "977 KiB", "16 EiB").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace qimg {

// qemu_strtosz() semantics (util/cutils.c do_strtosz, QEMU 7.2):
//  - decimal integer, optionally followed by one suffix b/B k/K m/M g/G t/T p/P
//    e/E (powers of 1024); without a suffix `default_suffix` applies;
//  - a decimal fraction ("1.5G", "1.k", "1.") needs a scale other than bytes
//    and is rounded to the nearest byte; exponents ("1e3", "1.5e3k") are
//    rejected;
//  - "0x..." hexadecimal without a fraction; a suffix on hex is accepted but
//    deprecated: then `*warning` (if given) receives QEMU's warning text
//    "Using a multiplier suffix on hex numbers is deprecated: <s>";
//  - leading whitespace and '+' are accepted (strtoull), any '-' is not;
//  - the whole string must be consumed.
// Errors: code EINVAL for syntax, ERANGE for values above 2^64-1. The message
// is a generic "Invalid size '<s>'"; callers pick QEMU's wording (cvtnum,
// parse_size_opt). Quirk kept from QEMU: an out-of-range integer part followed
// by more characters ("99999999999999999999999k") is EINVAL, not ERANGE.
Result<uint64_t> parse_size(std::string_view s, char default_suffix = 'B', std::string *warning = nullptr);

// qemu-img.c cvtnum_full(): parse_size() then a range check, with qemu-img's
// messages. The EINVAL message spans two lines because QEMU prints it with two
// error_report() calls; the second line therefore carries its own program
// prefix, `prog` + ": " (the CLI passes its argv[0] basename; the CLI adds
// the prefix of the first line itself, as for every error).
Result<int64_t> cvtnum_full(std::string_view name, std::string_view value, int64_t min, int64_t max,
                            std::string_view prog = "qemu-img", std::string *warning = nullptr);
// cvtnum_full(name, value, 0, INT64_MAX): e.g. the `qemu-img create` size,
// with name "image size".
Result<int64_t> cvtnum(std::string_view name, std::string_view value, std::string_view prog = "qemu-img",
                       std::string *warning = nullptr);

// QEMU's size_to_str(): "%0.3g <IEC prefix>B" with the unit switching up once
// the integer part would reach 1000 (so 1023488 gives "1e+03 KiB", as QEMU).
std::string size_to_str(uint64_t value);

}  // namespace qimg
