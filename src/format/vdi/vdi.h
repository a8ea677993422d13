// The vdi driver's entry points shared between its files.
#pragma once

#include "block/driver.h"

namespace qimg::vdi {

Result<void> vdi_create(CreateRequest &req);
std::vector<CreateOption> vdi_create_options();

}  // namespace qimg::vdi
