#include "util/shared_library.h"

#include <dlfcn.h>

#include <cerrno>
#include <string>

namespace qimg {

Result<void *> open_shared_library(const char *soname) {
    if (void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL)) return h;
    const char *why = dlerror();
    return make_error(ENOTSUP, std::string("Could not load ") + soname + ": " + (why ? why : "unknown error"));
}

Result<void *> shared_library_symbol(void *handle, const char *soname, const char *name) {
    dlerror();
    void *p = dlsym(handle, name);
    if (p) return p;
    const char *why = dlerror();
    return make_error(ENOTSUP, std::string("Could not find ") + name + " in " + soname + ": " +
                                   (why ? why : "null symbol"));
}

}  // namespace qimg
