// QEMU's JSON dialect, both ways: the parser behind json: filenames and
// --object '{...}' (qobject/json-lexer.c, json-streamer.c, json-parser.c:
// single-quoted strings, its error messages, integer/double rules) and the
// writer behind every `--output=json` of qemu-img (qobject/json-writer.c and
// QDict's hash-bucket member order).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace qimg {

// qobject_from_json(). Objects keep member insertion order (which is what
// QDict order derives from). Integers that fit int64 become number_integer,
// else (non-negative) number_unsigned, else a double (possibly inf), exactly
// as QEMU's QNum. Strings are QEMU's "modified UTF-8": "\u0000" is stored as
// the bytes C0 80. Parsing stops at an embedded NUL, as in QEMU.
// Errors (code EINVAL), e.g. "JSON parse error, premature EOI", "Expecting a
// JSON value", "Expecting at most one JSON value", "JSON parse error, stray
// '01'", "JSON parse error, duplicate key", "JSON parse error, invalid keyword
// 'tru'", "JSON nesting depth limit exceeded".
Result<nlohmann::ordered_json> parse_qemu_json(std::string_view text);

// QDict's bucket for `key` (tdb_hash % 512). Members of a QDict are iterated
// by ascending bucket, the most recently inserted first within a bucket.
unsigned qdict_bucket(std::string_view key);
// The keys of `obj` (an object) in the order QEMU iterates the equivalent
// QDict built by inserting them in `obj`'s order.
std::vector<std::string> qdict_order(const nlohmann::ordered_json &obj);

// qobject_to_json_pretty(): byte-for-byte qemu-img's JSON output, without a
// trailing newline (qemu-img prints "%s\n"). Pretty: 4-space indent, "key":
// value, an empty object/array printed as "{" newline indent "}"; compact:
// ", " and ": " separators (QEMU's single-line form, as in json: filenames).
// Strings are escaped like QEMU: \" \\ \b \f \n \r \t, other controls and
// every non-ASCII code point as \uXXXX (uppercase hex, surrogate pairs beyond
// the BMP), invalid UTF-8 as \uFFFD, '/' not escaped. Doubles use "%.17g".
// With `qdict_order` (the default) object members are emitted in QDict order,
// which is what qemu-img does for every object it prints; pass false to keep
// `j`'s own order.
std::string to_qemu_json(const nlohmann::ordered_json &j, bool pretty = true, bool qdict_order = true);

}  // namespace qimg
