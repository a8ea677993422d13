// qemu-img rebase. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_rebase(int, char **) {
    error_report("rebase: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
