// Client libraries loaded when a driver first needs them (dlopen), not when
// qimg starts. QEMU builds the same drivers as modules for the same reason.
// librbd brings Ceph's ~30 libraries and their static initialisers into
// every process that links it: 0.5 s per start under ASan+LSan on the CI
// machine (a 64-library qimg took 1.2 s to print its version), and time
// and memory in every qimg run that never names an rbd image.
//
// A driver keeps a table of the functions it calls, typed from the
// library's own header (decltype(&::fn)), and binds it once:
//
//     X-list of names -> struct { decltype(&::rbd_open) rbd_open; ... }
//     static Result<void> loaded = [] { open_shared_library(...);
//                                        bind_symbol(h, "rbd_open", t.rbd_open); ... }();
//
// Handles are never closed: the libraries stay for the process's life, as
// when linked.
#pragma once

#include "util/result.h"

namespace qimg {

// dlopen(soname, RTLD_NOW | RTLD_LOCAL); the error names the library and
// says why (dlerror), e.g. "Could not load librbd.so.1: ... No such file".
Result<void *> open_shared_library(const char *soname);

// dlsym; the error names the symbol and the library.
Result<void *> shared_library_symbol(void *handle, const char *soname, const char *name);

template <class Fn>
Result<void> bind_symbol(void *handle, const char *soname, const char *name, Fn &fn) {
    QIMG_ASSIGN(void *p, shared_library_symbol(handle, soname, name));
    fn = reinterpret_cast<Fn>(p);
    return ok();
}

}  // namespace qimg
