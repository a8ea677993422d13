// qemu-img commit. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_commit(int, char **) {
    error_report("commit: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
