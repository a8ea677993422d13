// qemu-img commit: writes the data an image holds above its base (by
// default its immediate backing file, or -b BASE further down the chain)
// into the base, then empties the image unless -d/-b. The copy is the
// engine's (engine/commit.h).
#include <getopt.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "engine/commit.h"
#include "util/progress.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

enum { kOptObject = 256, kOptImageOpts };

// The innermost reason of an open error: "Could not open 'x': Could not
// open backing file: Failed to get ..." -> "Failed to get ...".
std::string strip_open_prefixes(std::string msg) {
    for (;;) {
        if (msg.rfind("Could not open backing file: ", 0) == 0) {
            msg.erase(0, 29);
        } else if (msg.rfind("Could not open '", 0) == 0) {
            size_t end = msg.find("': ");
            if (end == std::string::npos) return msg;
            msg.erase(0, end + 3);
        } else {
            return msg;
        }
    }
}

}  // namespace

int cmd_commit(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt, cache = "writeback", base;
    bool have_base = false, progress = false, quiet = false, drop = false, image_opts = false;
    uint64_t rate_limit = 0;  // -r: bytes per second, as QEMU's commit job speed
    int c;
    while ((c = getopt_long(argc, argv, ":f:ht:b:dpqr:", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
            break;
        case 't':
            cache = optarg;
            break;
        case 'b':
            base = optarg;
            have_base = true;
            drop = true;  // -b implies -d
            break;
        case 'd':
            drop = true;
            break;
        case 'p':
            progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'r': {
            auto v = cvtnum("rate limit", optarg, g_argv0);
            if (!v) {
                error_report(v.error().message);
                return 1;
            }
            rate_limit = *v;
            break;
        }
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        }
    }
    if (quiet) progress = false;
    if (optind != argc - 1) error_exit("Expecting one image file name");
    std::string filename = argv[optind];
    if (!parse_cache_mode(cache)) {
        error_reportf("Invalid cache option: {}", cache);
        return 1;
    }

    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt;
    a.image_opts = image_opts;
    a.writable = true;
    a.cache = cache;
    a.quiet = quiet;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;

    progress::init(progress, 1.f);
    progress::print(0.f, 100);
    auto fail = [](const std::string &msg) {
        progress::end();
        error_report(msg);
        return 1;
    };
    BlockNode *base_node = nullptr;
    if (have_base) {
        base_node = find_backing_image(*node, base);
        if (!base_node) return fail(fmt::format("Did not find '{}' in the backing chain of '{}'", base, filename));
    } else {
        base_node = node->backing();
        if (!base_node) return fail("Image does not have a backing file");
    }
    // The base is written: like QEMU's commit job, which reopens it
    // read-write, open the chain again with that level read-write (and its
    // write permission and lock). A failure there is the reopen's, reported
    // without the open's "Could not open ...: " prefixes.
    if (base_node->read_only()) {
        int level = 0;
        for (BlockNode *p = node.get(); p != base_node; p = p->backing()) ++level;
        node.reset();
        BlockOpener rw_opener;
        OpenOptions o;
        o.format = a.format;
        o.image_opts = a.image_opts;
        o.flags.read_write = true;
        o.flags.rw_backing_level = level;
        o.flags.cache = *parse_cache_mode(cache);
        o.warn_probed_raw = false;  // already printed by the first open
        auto reopened = rw_opener.open_image(filename, o);
        if (!reopened) return fail(strip_open_prefixes(reopened.error().message));
        node = *reopened;
        base_node = node.get();
        for (int i = 0; i < level && base_node; ++i) base_node = base_node->backing();
        if (!base_node) return fail("Image does not have a backing file");
        opener = std::move(rw_opener);
    }
    engine::CommitOptions co;
    co.rate_limit = rate_limit;
    co.write_behind = default_write_behind();
    co.on_progress = [](float p) { progress::print(p, 0); };
    auto r = engine::commit_image(*node, *base_node, co);
    if (!r) return fail(r.error().message);
    // Without -d the committed image is emptied; a format that cannot
    // (ENOTSUP) keeps its data, which QEMU accepts silently too.
    if (!drop) {
        auto e = node->make_empty();
        if (!e && e.error().code != ENOTSUP) return fail(e.error().message);
    }
    progress::print(100.f, 0);
    progress::end();
    qprintf(quiet, "Image committed.\n");
    return 0;
}

}  // namespace qimg::cli
