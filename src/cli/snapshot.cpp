// qemu-img snapshot: list (-l), create (-c), apply (-a) and delete (-d)
// internal snapshots through BlockNode's snapshot operations. Formats
// without snapshots answer with the BlockNode defaults, worded as qemu-img.
#include <sys/time.h>

#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"

namespace qimg::cli {
namespace {

enum class Action { None, List, Create, Apply, Delete };

void list_snapshots(BlockNode &node) {
    auto sns = node.snapshot_list();
    if (!sns || sns->empty()) return;
    std::printf("Snapshot list:\n%s\n", snapshot_table_header().c_str());
    for (const SnapshotInfo &sn : *sns) std::printf("%s\n", snapshot_table_row(sn).c_str());
}

}  // namespace

int cmd_snapshot(int argc, char **argv) {
    SharedOptions so;
    Action action = Action::None;
    std::string name;
    auto set_action = [&](Action a) {
        return [&, a](const char *arg) {
            if (action != Action::None) error_exit("Cannot mix '-l', '-a', '-c', '-d'");
            action = a;
            if (arg) name = arg;
            return true;
        };
    };
    if (int rc = parse_options(argc, argv, so, kOptQuiet | kOptForceShare | kOptObject | kOptImageOpts,
                               {{'l', nullptr, false, set_action(Action::List)},
                                {'a', nullptr, true, set_action(Action::Apply)},
                                {'c', nullptr, true, set_action(Action::Create)},
                                {'d', nullptr, true, set_action(Action::Delete)}}))
        return rc;
    std::string filename = one_filename(argc, argv);

    BlockOpener opener;
    ImageOpenArgs a = so.open_args("writeback");
    a.writable = action != Action::List;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;

    switch (action) {
    case Action::None:
        break;
    case Action::List:
        list_snapshots(*node);
        break;
    case Action::Create: {
        SnapshotInfo sn;
        sn.name = name.substr(0, 255);  // QEMUSnapshotInfo.name is char[256]
        sn.icount = 0;                  // qemu-img zeroes the whole QEMUSnapshotInfo
        struct timeval tv;
        gettimeofday(&tv, nullptr);
        sn.date_sec = static_cast<uint32_t>(tv.tv_sec);
        sn.date_nsec = static_cast<uint32_t>(tv.tv_usec) * 1000;
        auto r = node->snapshot_create(sn);
        if (!r) {
            error_reportf("Could not create snapshot '{}': {} ({})", name, -r.error().code,
                          std::strerror(r.error().code));
            return 1;
        }
        break;
    }
    case Action::Apply: {
        auto r = node->snapshot_goto(name);
        if (!r) {
            error_reportf("Could not apply snapshot '{}': {}", name, r.error().message);
            return 1;
        }
        break;
    }
    case Action::Delete: {
        auto sns = node->snapshot_list();
        const SnapshotInfo *found = nullptr;
        if (sns)
            for (const SnapshotInfo &sn : *sns)
                if (sn.name == name) {
                    found = &sn;
                    break;
                }
        if (!found) {
            error_reportf("Could not delete snapshot '{}': snapshot not found", name);
            return 1;
        }
        auto r = node->snapshot_delete(found->id, found->name);
        if (!r) {
            error_reportf("Could not delete snapshot '{}': {}", name, r.error().message);
            return 1;
        }
        break;
    }
    }
    return 0;
}

}  // namespace qimg::cli
