// The comparison behind `qemu-img compare`: walks both images by allocation
// status (chain_status), reads only where at least one side has data, and
// reports the first difference at 512-byte sector granularity, as qemu-img.
#pragma once

#include <functional>
#include <string>

#include "block/node.h"

namespace qimg::engine {

struct CompareOptions {
    bool strict = false;  // -s: sizes and block status must match too
    std::string name1, name2;  // for error messages
    // stdout text ("Images are identical.\n", "Content mismatch at offset N!\n" ...)
    std::function<void(const std::string &)> out;
    // error_report() text
    std::function<void(const std::string &)> err;
    // qemu_progress_print(delta, 100) arguments
    std::function<void(float)> on_progress;
};

// Returns qemu-img compare's exit code: 0 identical, 1 different,
// 3 block status failure, 4 read failure (2 is the CLI's, for open errors).
int compare_images(BlockNode &a, BlockNode &b, const CompareOptions &o);

}  // namespace qimg::engine
