// qemu-img compare. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_compare(int, char **) {
    error_report("compare: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
