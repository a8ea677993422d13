// The driver registry. Drivers register from static initialisers, so the
// table is a function-local static (initialised on first use).
#include "block/driver.h"

#include <algorithm>

namespace qimg {

static std::vector<const Driver *> &registry() {
    static std::vector<const Driver *> drivers;
    return drivers;
}

void register_driver(const Driver *d) { registry().push_back(d); }

const Driver *find_driver(std::string_view name) {
    for (const Driver *d : registry())
        if (d->name == name) return d;
    return nullptr;
}

std::vector<const Driver *> all_drivers() {
    std::vector<const Driver *> v = registry();
    std::sort(v.begin(), v.end(), [](const Driver *a, const Driver *b) { return a->name < b->name; });
    return v;
}

}  // namespace qimg
