// Helpers shared by the qcow2 unit tests: the format-neutral ones of
// tests/lib/test_util.h, with qcow2 as the default format.
#pragma once

#include "lib/test_util.h"

namespace qimg::test {

inline Result<NodePtr> open_image(BlockOpener &op, const std::string &name, bool rw = false,
                                  const std::string &fmt = "qcow2") {
    return open_as(op, name, fmt, rw);
}

}  // namespace qimg::test
