// The qed driver's entry points shared between its files.
#pragma once

#include "block/driver.h"

namespace qimg::qed {

Result<void> qed_create(CreateRequest &req);
std::vector<CreateOption> qed_create_options();

}  // namespace qimg::qed
