// qemu-img map. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_map(int, char **) {
    error_report("map: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
