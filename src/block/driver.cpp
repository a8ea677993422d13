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

const Driver *driver_of(const BlockNode &node) { return find_driver(node.driver_name()); }

std::optional<std::string> protocol_prefix(std::string_view filename) {
    size_t p = filename.find_first_of(":/");
    if (p == std::string_view::npos || filename[p] != ':') return std::nullopt;
    return std::string(filename.substr(0, p));
}

Result<const Driver *> find_protocol_driver(std::string_view filename, bool allow_prefix) {
    std::optional<std::string> prefix = allow_prefix ? protocol_prefix(filename) : std::nullopt;
    if (!prefix) {
        // QEMU's find_hdev_driver: a device path is its device driver's; on
        // equal scores the later-registered wins, as QEMU's list is newest
        // first (host_cdrom over host_device for a real CD-ROM drive).
        const Driver *best = nullptr;
        int best_score = 0;
        for (const Driver *d : registry()) {
            if (!d->probe_device) continue;
            if (int score = d->probe_device(std::string(filename)); score >= best_score && score > 0) {
                best_score = score;
                best = d;
            }
        }
        if (best) return best;
    }
    if (!prefix || *prefix == "file") {
        if (const Driver *d = find_driver("file")) return d;
        return make_error(EINVAL, "Unknown protocol 'file'");
    }
    for (const Driver *d : all_drivers()) {
        if (!d->is_protocol) continue;
        if (std::find(d->protocol_prefixes.begin(), d->protocol_prefixes.end(), *prefix) != d->protocol_prefixes.end())
            return d;
    }
    // QEMU copies the prefix into a 128-byte buffer for its message.
    if (prefix->size() > 127) prefix->resize(127);
    return make_error(EINVAL, "Unknown protocol '" + *prefix + "'");
}

}  // namespace qimg
