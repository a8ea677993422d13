// qemu-img resize. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_resize(int, char **) {
    error_report("resize: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
