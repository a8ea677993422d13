// qemu-img info. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_info(int, char **) {
    error_report("info: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
