// The qcow driver's entry points shared between its files.
#pragma once

#include "block/driver.h"

namespace qimg::qcow {

Result<void> qcow_create(CreateRequest &req);
std::vector<CreateOption> qcow_create_options();

}  // namespace qimg::qcow
