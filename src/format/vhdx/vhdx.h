// What vhdx.cpp's driver record takes from create.cpp.
#pragma once

#include <vector>

#include "block/driver.h"

namespace qimg::vhdx {

Result<void> vhdx_create(CreateRequest &req);
std::vector<CreateOption> vhdx_create_options();

}  // namespace qimg::vhdx
