// qemu-img bitmap. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_bitmap(int, char **) {
    error_report("bitmap: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
