// User-creatable object types that drivers bring (QEMU's TYPE_USER_CREATABLE
// classes outside crypto, e.g. filter/throttle's throttle-group): the CLI
// hands each parsed `--object` to the type's create function, which sets the
// properties, lets the CLI reserve the id, and completes the object, in that
// order, as QEMU's user_creatable_add_type() does. Secrets stay in
// crypto/secret.h; a type nobody registers only reserves its id.
//
// Concurrency: types register from static initialisers; objects are created
// while the command line is parsed, before any image is opened.
#pragma once

#include <functional>
#include <string>

#include "util/keyval.h"
#include "util/result.h"

namespace qimg {

struct ObjectType {
    std::string name;  // qom-type
    // Sets the properties of `spec` (their errors come first), then calls
    // `add_id` (object_property_try_add_child: a duplicate id fails there),
    // then completes the object and makes it visible to drivers.
    std::function<Result<void>(const ObjectSpec &spec, const std::function<Result<void>()> &add_id)> create;
};

void register_object_type(const ObjectType *t);
const ObjectType *find_object_type(std::string_view name);

struct ObjectTypeRegistrar {
    explicit ObjectTypeRegistrar(const ObjectType *t) { register_object_type(t); }
};

}  // namespace qimg
