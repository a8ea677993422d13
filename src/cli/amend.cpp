// qemu-img amend. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_amend(int, char **) {
    error_report("amend: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
