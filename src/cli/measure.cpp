// qemu-img measure. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_measure(int, char **) {
    error_report("measure: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
