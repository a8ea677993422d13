// The registry of driver-provided object types (see object_types.h).
#include "block/object_types.h"

#include <map>

namespace qimg {
namespace {

std::map<std::string, const ObjectType *, std::less<>> &registry() {
    static std::map<std::string, const ObjectType *, std::less<>> r;
    return r;
}

}  // namespace

void register_object_type(const ObjectType *t) { registry()[t->name] = t; }

const ObjectType *find_object_type(std::string_view name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second;
}

}  // namespace qimg
