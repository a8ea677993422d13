// qemu-img snapshot. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_snapshot(int, char **) {
    error_report("snapshot: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
