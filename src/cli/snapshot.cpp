// qemu-img snapshot: list (-l), create (-c), apply (-a) and delete (-d)
// internal snapshots through BlockNode's snapshot operations. Formats
// without snapshots answer with the BlockNode defaults, worded as qemu-img.
#include <getopt.h>
#include <sys/time.h>

#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "util/json_filename.h"

namespace qimg::cli {
namespace {

enum { kOptObject = 256, kOptImageOpts };
enum class Action { None, List, Create, Apply, Delete };

// snapshot takes no -f: the format was probed unless the options name a driver.
bool format_probed(const std::string &filename, bool image_opts) {
    Result<OptionMap> opts = image_opts ? parse_image_opts(filename)
                             : is_json_filename(filename) ? parse_json_filename(filename)
                                                          : Result<OptionMap>(OptionMap{});
    return !opts || !opts->count("driver");
}

// QEMU reopens a format whose file child took over the snapshot request
// (bdrv_snapshot_goto's fallback); raw's open prints its probing warning a
// second time then. The wording is that of block/open.cpp.
void warn_probed_raw_again(const std::string &display) {
    std::fprintf(stderr,
                 "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                 "         Automatically detecting the format is dangerous for raw images, write "
                 "operations on block 0 will be restricted.\n"
                 "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                 display.c_str());
}

void list_snapshots(BlockNode &node) {
    auto sns = node.snapshot_list();
    if (!sns || sns->empty()) return;
    std::printf("Snapshot list:\n%s\n", snapshot_table_header().c_str());
    for (const SnapshotInfo &sn : *sns) std::printf("%s\n", snapshot_table_row(sn).c_str());
}

}  // namespace

int cmd_snapshot(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    Action action = Action::None;
    std::string name;
    bool quiet = false, image_opts = false, force_share = false;
    auto set_action = [&](Action a, const char *arg) {
        if (action != Action::None) error_exit("Cannot mix '-l', '-a', '-c', '-d'");
        action = a;
        if (arg) name = arg;
    };
    int c;
    while ((c = getopt_long(argc, argv, ":la:c:d:hqU", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'l':
            set_action(Action::List, nullptr);
            break;
        case 'a':
            set_action(Action::Apply, optarg);
            break;
        case 'c':
            set_action(Action::Create, optarg);
            break;
        case 'd':
            set_action(Action::Delete, optarg);
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            force_share = true;
            break;
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        }
    }
    if (optind != argc - 1) error_exit("Expecting one image file name");
    std::string filename = argv[optind];

    BlockOpener opener;
    ImageOpenArgs a;
    a.image_opts = image_opts;
    a.writable = action != Action::List;
    a.force_share = force_share;
    a.quiet = quiet;
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
            if (r.error().code == ENOTSUP && node->driver_name() == "raw" && format_probed(filename, image_opts))
                warn_probed_raw_again(node->filename());
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
