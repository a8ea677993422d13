// qemu-img dd. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_dd(int, char **) {
    error_report("dd: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
