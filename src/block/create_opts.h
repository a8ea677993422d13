// Creation options (`-o name=value,...`) as qemu-img handles them for
// create, convert, amend and measure: the option list a format and its
// protocol accept (QEMU's qemu_opts_append), typed parsing and validation
// with QemuOpts' messages, `-o help` output, and the values printed on the
// "Formatting '<file>', fmt=<fmt> ..." line.
//
// Typical use (qemu-img create):
//   CreateOpts opts(merge_create_options(fmt_drv->create_options, &proto_drv->create_options));
//   if (auto r = opts.parse(optstr); !r) ...report r.error().message...
//   opts.set_number("size", n);
//   printf("Formatting '%s', fmt=%s %s\n", name, fmt, opts.print().c_str());
//   CreateRequest req; req.options = opts.values();
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "block/driver.h"

namespace qimg {

// qemu_opts_append(format, protocol): the format's options in order, then the
// protocol's options whose names are not present yet. `protocol` may be null.
std::vector<CreateOption> merge_create_options(const std::vector<CreateOption> &format,
                                               const std::vector<CreateOption> *protocol);

// qemu_opts_print_help(list, false): one line per option, "  name=<type>"
// padded to 24 columns then " - help", sorted by the whole line; for an empty
// list "No options available.\n". Ends in '\n'.
std::string option_help_text(const std::vector<CreateOption> &list);

// One value set on a CreateOpts, as QemuOpt keeps it.
struct OptValue {
    std::string name;
    std::string str;          // the text as given (or decimal for set_number)
    CreateOption::Type type = CreateOption::Type::String;
    uint64_t number = 0;      // Size / Number
    bool boolean = false;     // Bool
};

// A QemuOpts instance over a fixed option list. Options may be set several
// times; the last setting wins (qemu_opt_find). Options not in the list are
// refused with "Invalid parameter '<name>'".
class CreateOpts {
public:
    explicit CreateOpts(std::vector<CreateOption> list) : list_(std::move(list)) {}

    // qemu_opts_do_parse(): "a=b,c=d" (",," escapes a comma, "flag" = on,
    // "noflag" = off, "id=..." ignored). Values are validated by type:
    //   bool:   "Parameter '<n>' expects 'on' or 'off'"
    //   size:   "Parameter '<n>' expects a non-negative number below 2^64" +
    //           QEMU's hint lines, or "Value '<v>' is out of range for parameter '<n>'"
    //   number: "Parameter '<n>' expects a number" / "Value '<v>' is too large ..."
    // Stops at the first error; settings before it stay (as in QEMU).
    Result<void> parse(std::string_view optstr);
    // qemu_opt_set(): one value, validated like parse().
    Result<void> set(std::string_view name, std::string_view value);
    // qemu_opt_set_number(): no validation; the name must be in the list
    // (otherwise "Invalid parameter").
    Result<void> set_number(std::string_view name, uint64_t value);

    bool has(std::string_view name) const { return find(name) != nullptr; }
    // The last value set for `name`, or nullptr.
    const OptValue *find(std::string_view name) const;
    // Its string (qemu_opt_get), or nullopt.
    std::optional<std::string> get(std::string_view name) const;
    // The parsed Size/Number value of `name`, or `dflt` when not set
    // (qemu_opt_get_size / qemu_opt_get_number).
    uint64_t get_number(std::string_view name, uint64_t dflt) const;

    // qemu_opts_print(opts, " "): each option of the list in list order that
    // is set or has a default, as name=value; strings with ',' doubled,
    // sizes/numbers set by the user as signed decimal, the rest as given.
    // Printed after "Formatting '<f>', fmt=<fmt> " by qemu-img create.
    std::string print() const;
    // The set values by name, normalised for drivers (CreateRequest::options,
    // MeasureRequest::options): sizes and numbers in decimal, booleans
    // "on"/"off", strings as given.
    std::map<std::string, std::string> values() const;

    const std::vector<CreateOption> &list() const { return list_; }

private:
    const CreateOption *desc(std::string_view name) const;

    std::vector<CreateOption> list_;
    std::vector<OptValue> values_;
};

}  // namespace qimg
