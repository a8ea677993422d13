// qemu-img convert. (Not implemented yet: placeholder so the command is recognised.)
#include "cli/commands.h"
#include "cli/common.h"

namespace qimg::cli {

int cmd_convert(int, char **) {
    error_report("convert: not implemented yet");
    return 1;
}

}  // namespace qimg::cli
