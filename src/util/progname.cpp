// See progname.h.
#include "util/progname.h"

namespace qimg {
namespace {
std::string &name_storage() {
    static std::string name = "qemu-img";
    return name;
}
}  // namespace

const std::string &program_name() { return name_storage(); }
void set_program_name(std::string name) { name_storage() = std::move(name); }

}  // namespace qimg
