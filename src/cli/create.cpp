// qemu-img create. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_create(int, char **) {
    error_report("create: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
