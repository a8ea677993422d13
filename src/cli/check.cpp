// qemu-img check. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_check(int, char **) {
    error_report("check: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
