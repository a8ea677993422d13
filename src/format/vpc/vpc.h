// The vpc (VHD) driver's entry points shared between its files.
#pragma once

#include "block/driver.h"

namespace qimg::vpc {

Result<void> vpc_create(CreateRequest &req);
std::vector<CreateOption> vpc_create_options();

}  // namespace qimg::vpc
