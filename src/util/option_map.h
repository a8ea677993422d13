// Helpers over OptionMap (util/json_filename.h) for drivers that consume
// their options: what a driver takes out is its own, what is left over the
// opener refuses ("Block protocol 'x' doesn't support the option 'y'").
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "util/json_filename.h"

namespace qimg {

// Takes `key` out of `opts`: its value, or nullopt when it is absent.
inline std::optional<std::string> take_option(OptionMap &opts, const std::string &key) {
    auto it = opts.find(key);
    if (it == opts.end()) return std::nullopt;
    std::string v = std::move(it->second);
    opts.erase(it);
    return v;
}

}  // namespace qimg
