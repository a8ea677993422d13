// Option strings of the command line: QemuOpts lists ("-o a=b,c=d",
// --image-opts, -l snapshot.name=x), qemu-img's accumulation of repeated -o,
// typed option values with QEMU's messages, and --object (QEMU's keyval
// syntax or JSON) including the members of secret objects.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace qimg {

using OptList = std::vector<std::pair<std::string, std::string>>;

// QemuOpts syntax (util/qemu-option.c opts_do_parse): elements separated by
// ',', "key=value" where ",," in a value stands for one ','. An element
// without '=' is a flag: "foo" gives foo=on, "nofoo" gives foo=off (so a bare
// "size" becomes size=on and fails later as a size). When `implied_key` is
// non-empty, a first element without '=' is the value of that key instead
// (",," unescaped, no flag handling). Keys are not validated here (QEMU
// validates them against the option list: "-o =1" yields key "" and later
// "Invalid parameter ''"); "id" elements are kept, in order, like the others.
// Nothing after an embedded NUL is seen (QEMU works on C strings). The parse
// itself never fails in QEMU; the Result is kept for uniformity.
// If `flag_warnings` is given, flags are reported as deprecated the way
// qemu_opts_parse_noisily() does (--image-opts, -l): each entry is the text
// after "<prog>: warning: ", a second line included, e.g.
// "short-form boolean option 'foo' deprecated\nPlease use foo=on instead".
Result<OptList> parse_opts(std::string_view s, std::string_view implied_key = {},
                           std::vector<std::string> *flag_warnings = nullptr);

// One element of a QemuOpts string as parse_opts() splits it, for callers
// that check the elements in order and stop at the first bad one, as QEMU's
// opts_do_parse() does (so warnings after that element are never printed).
struct OptItem {
    std::string name, value;
    bool is_help = false;      // a bare "help" or "?"
    std::string flag_warning;  // a short-form flag: parse_opts()'s warning text
};
std::vector<OptItem> parse_opt_items(std::string_view s);

// util/id.c id_wellformed(): letters, digits, '-', '.', '_', starting with a
// letter (QemuOpts "id=", --object ids).
bool id_wellformed(std::string_view id);

// "help" or "?" (include/qemu/help_option.h).
bool is_help_option(std::string_view s);
// has_help_option(): some flag element (no '=') of the list is "help" or "?";
// "help=x", "nohelp" do not count. qemu-img create/convert/amend print the
// format's option help when this holds for the accumulated -o string.
bool has_help_option(std::string_view opts);

// qemu-img.c is_valid_option_list(): non-empty, not starting with ',', not
// ending in an odd number of ','.
bool is_valid_option_list(std::string_view s);
// qemu-img.c accumulate_options(): repeated -o options are joined with ','.
// `prev` empty means "no -o seen yet". Fails with "Invalid option list: <next>"
// when `next` is not is_valid_option_list().
Result<std::string> accumulate_options(std::string prev, std::string_view next);

// QemuOpts typed values, QEMU's messages.
// bool: on/yes/true/y and off/no/false/n (qapi_bool_parse), else
// "Parameter '<name>' expects 'on' or 'off'".
Result<bool> parse_bool_opt(std::string_view name, std::string_view value);
// size: parse_size(); ERANGE: "Value '<v>' is out of range for parameter
// '<name>'"; else "Parameter '<name>' expects a non-negative number below 2^64"
// followed by QEMU's two hint lines (printed unprefixed by QEMU).
Result<uint64_t> parse_size_opt(std::string_view name, std::string_view value, std::string *warning = nullptr);
// number: strtoull base 0 over the whole string (so "0x10", "020" octal, and
// "-1" = 2^64-1 are accepted, as in QEMU); "Value '<v>' is too large for
// parameter '<name>'" or "Parameter '<name>' expects a number".
Result<uint64_t> parse_number_opt(std::string_view name, std::string_view value);

// QEMU's keyval_parse() (util/keyval.c), the syntax of --object: dotted keys
// build nested objects, numeric fragments build arrays, a bare "help"/"?"
// element sets *help. Leaves are strings. `implied_key` names a first element
// without '='. Errors in QEMU's wording ("Expected '=' after parameter 'x'",
// "Invalid parameter 'x'", "Parameters 'a.*' used inconsistently",
// "Parameter 'a.0' missing", "Parameter 'x' is too long", ...).
Result<nlohmann::ordered_json> keyval_parse(std::string_view s, std::string_view implied_key, bool *help);

// An --object argument.
struct ObjectSpec {
    std::string qom_type, id;
    // Properties other than qom-type and id, flattened with '.' separators;
    // JSON scalars stringified (bools "on"/"off", numbers in decimal).
    std::map<std::string, std::string> props;
    // "help" was requested; print object_help(*this) and exit 0, as qemu-img.
    bool help = false;
};

// --object parsing and validation as qemu-img 7.2 does it when the option is
// seen: keyval syntax with implied key "qom-type", or JSON when the argument
// starts with '{'. Checks, in QEMU's order and wording: qom-type present and a
// known ObjectType ("Parameter 'qom-type' does not accept value 'x'"), id
// present, for "secret" the member types and format enum and unexpected
// members, the id syntax, types not built into qemu-img ("invalid object
// type: iothread"), "Property 'secret.loaded' is not writable", and a
// secret's data/file presence. Members of other object types are not
// validated. Loading a secret (reading its file, decoding base64, keyid=)
// is SecretStore::add()'s job (util/secret.h), which the CLI calls right away
// to report those errors at the same point as QEMU.
Result<ObjectSpec> parse_object(std::string_view arg);
// The help text qemu-img prints for "--object help" (the type list) or
// "--object secret,help"; other types fall back to the type list. Ends in
// '\n'.
std::string object_help(const ObjectSpec &spec);

}  // namespace qimg
