// Image options given as text: "json:{...}" pseudo-filenames and
// --image-opts strings, both turned into QEMU's flattened option dictionary
// ("driver", "file.driver", "file.filename", "backing.file.filename" ...).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace qimg {

// Flat, dotted keys like QEMU's qdict_flatten()ed QDict.
using OptionMap = std::map<std::string, std::string>;

// `s` starts with "json:".
bool is_json_filename(std::string_view s);

// block.c parse_json_filename(): `s` includes the "json:" prefix. The text is
// parsed by parse_qemu_json() (QEMU's dialect: single quotes allowed, its
// messages) and must be an object, which is flattened as qdict_flatten() does:
// non-empty nested objects/arrays become "a.b" / "a.0" keys, and a nested
// value wins over an explicit dotted key of the same name
// ({"file":{"filename":"a"},"file.filename":"b"} gives file.filename=a).
// Values become strings: strings verbatim, integers in decimal, doubles as
// "%.17g", true/false as "on"/"off" (what QemuOpts makes of them), empty
// objects/arrays as "{}" / "[]" (QEMU keeps them, and they are then rejected
// as unsupported options), null is dropped.
// Errors: "Could not parse the JSON options: <parser message>" or "Invalid
// JSON object given"; the caller prepends "Could not open '<name>': ".
Result<OptionMap> parse_json_filename(std::string_view s);
// The same, keeping the typed (unflattened) JSON.
Result<nlohmann::ordered_json> parse_json_filename_tree(std::string_view s);
// qdict_flatten() of a parsed object into strings, as described above.
OptionMap flatten_json_options(const nlohmann::ordered_json &obj);
// The same with each value as given (a number stays a number), for names
// rebuilt from the options (QEMU's json: filenames of opened nodes).
std::map<std::string, nlohmann::ordered_json> flatten_json_typed(const nlohmann::ordered_json &obj);

// --image-opts: qemu-img parses it with qemu_opts_parse_noisily() against an
// option list accepting anything, implied key "file": "a.img" means
// file=a.img, ",," escapes a comma, a later key replaces an earlier one, bare
// "foo"/"nofoo" give foo=on/off with a deprecation warning (appended to
// *warnings, see parse_opts()), and "help" is just help=on. The first id=
// must be an identifier ("Parameter 'id' expects an identifier" + hint); it
// is kept as key "id". A "json:" prefix gets no special treatment, as in
// qemu-img.
Result<OptionMap> parse_image_opts(std::string_view s, std::vector<std::string> *warnings = nullptr);

// qdict_extract_subqdict(): moves every "<prefix>.<rest>" entry of `opts` into
// the result as "<rest>". `prefix` is given without the dot ("file").
OptionMap extract_prefix(OptionMap &opts, std::string_view prefix);

}  // namespace qimg
