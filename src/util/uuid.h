// UUIDs as image formats store them: the 16 bytes in RFC 4122 order (vpc,
// vmdk, qcow2 bitmaps…) or in Microsoft's GUID layout with the first three
// fields little-endian (vhdx, vdi); the canonical text form; random version
// 4 UUIDs for new images. Written here rather than taken from libuuid: the
// parsing and formatting are a few lines, and generation needs only
// getrandom(2), so no dependency is added.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "util/result.h"

namespace qimg {

struct Uuid {
    std::array<uint8_t, 16> bytes{};  // RFC 4122 byte order

    bool is_nil() const;
    auto operator<=>(const Uuid &) const = default;

    // "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", hex digits in either case;
    // nothing for any other form.
    static std::optional<Uuid> parse(std::string_view text);
    // The canonical form, lowercase.
    std::string to_string() const;
    // A random (version 4, RFC 4122 variant) UUID; an error if the kernel
    // has no randomness to give.
    static Result<Uuid> generate();

    // The GUID layout: time_low, time_mid and time_hi little-endian.
    static Uuid from_guid_le(std::span<const uint8_t, 16> stored);
    std::array<uint8_t, 16> to_guid_le() const;
};

}  // namespace qimg
