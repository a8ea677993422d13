// qemu-img bench. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_bench(int, char **) {
    error_report("bench: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
