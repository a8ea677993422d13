// See progname.h.
#include "util/progname.h"

#include <cstdio>

namespace qimg {
namespace {
std::string &name_storage() {
    static std::string name = "qemu-img";
    return name;
}
}  // namespace

const std::string &program_name() { return name_storage(); }
void set_program_name(std::string name) { name_storage() = std::move(name); }

void report_error(std::string_view msg) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %.*s\n", program_name().c_str(), static_cast<int>(msg.size()), msg.data());
}

void report_warning(std::string_view msg) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: warning: %.*s\n", program_name().c_str(), static_cast<int>(msg.size()), msg.data());
}

}  // namespace qimg
