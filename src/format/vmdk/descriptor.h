// The VMDK text descriptor (VMware Virtual Disk Format 1.1, "The Descriptor
// File"; libyal's "VMWare Virtual Disk Format (VMDK)", section 4): parsing
// it the way qemu-img 7.2 does, and writing the one qemu-img writes.
//
// qemu-img reads a descriptor loosely: CID, parentCID, createType and
// parentFileNameHint are found by substring search anywhere in the text,
// and extent lines are scanned with a fixed pattern, lines that do not match
// being skipped. The functions here reproduce exactly that, so that the same
// descriptor opens (or fails) the same way, but with every length bounded.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace qimg::vmdk {

// Largest descriptor text read (qemu-img: 1 MiB - 1), and the part the CID
// and parent hint are searched in (20 sectors).
inline constexpr size_t kMaxDescriptor = (1u << 20) - 1;
inline constexpr size_t kCidWindow = 20 * 512;

// The text up to its first NUL byte (the text qemu's string functions see).
std::string_view c_text(std::span<const uint8_t> b);

// The value of `key="value"` at the first occurrence of `key` (no check of
// what follows the key beyond skipping two characters), if it is closed by a
// quote and shorter than `max_len`.
std::optional<std::string> quoted_value(std::string_view desc, std::string_view key, size_t max_len);

// The CID (parent == false) or parentCID after the first occurrence of
// "CID" / "parentCID" (and one separator character), read as hexadecimal.
std::optional<uint32_t> read_cid(std::string_view desc, bool parent);

// parentFileNameHint="..." (empty: none). An error when the name is not
// closed by a quote or longer than a path can be.
Result<std::string> parent_hint(std::string_view desc);

// One extent line the reader uses: `RW <sectors> <TYPE> "<file>" [offset]`.
struct ExtentLine {
    std::string type;          // FLAT, SPARSE, VMFS, VMFSSPARSE, SESPARSE
    std::string file;          // as recorded
    uint64_t sectors = 0;
    uint64_t flat_offset = 0;  // FLAT: sectors into the file; VMFS: 0
};

// The extents in order. Lines of other access modes or types (RDONLY,
// NOACCESS, ZERO) are skipped as qemu-img 7.2 skips them; a FLAT line without
// an offset or a sparse line with one is "Invalid extent line: ...".
Result<std::vector<ExtentLine>> parse_extents(std::string_view desc);

// qemu-img's probe of a text descriptor: comment and blank lines, then a
// "version=1|2|3" line.
bool probe_descriptor(std::span<const uint8_t> head);

}  // namespace qimg::vmdk
