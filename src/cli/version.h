// Version banner. The first line keeps qemu-img's shape ("qemu-img version
// X.Y.Z ...") because tools parse it to learn which features they may use;
// qimg implements qemu-img 7.2's command line.
#pragma once

#include <string>

namespace qimg::cli {

inline constexpr const char *kQemuCompatVersion = "7.2.0";
inline constexpr const char *kQimgVersion = "0.1.0";

inline std::string version_text() {
    return std::string("qemu-img version ") + kQemuCompatVersion + " (qimg " + kQimgVersion + ")\n" +
           "Copyright (c) 2026 the qimg developers; command line compatible with QEMU's qemu-img\n";
}

}  // namespace qimg::cli
