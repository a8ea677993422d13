// qemu-img rebase: changes an image's backing file. In safe mode the data
// the image reads through its old backing chain is preserved: ranges that
// differ between old and new backing are copied into the image first.
// With -u only the name in the header changes. The comparing and copying is
// the engine's (engine/rebase.h).
//
// Crash safety: the preserved data is written and flushed before the header
// names the new backing file (qemu-img 7.2 does not flush in between, so the
// header change may reach the disk first), and the header change itself is
// the qcow2 driver's torn-write-safe rewrite. A kill at any point leaves the
// old backing file with all the data it needs, or the new one.
#include <getopt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "engine/rebase.h"
#include "util/progress.h"

namespace qimg::cli {
namespace {

enum { kOptObject = 256, kOptImageOpts };

}  // namespace

int cmd_rebase(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {"compress", no_argument, nullptr, 'c'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt, cache = "writeback", src_cache = "writeback", base_fmt, base;
    bool have_base = false, have_base_fmt = false, unsafe = false, progress = false, quiet = false;
    bool image_opts = false, force_share = false, compress = false;
    int c;
    while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qUc", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
            break;
        case 'F':
            base_fmt = optarg;
            have_base_fmt = true;
            break;
        case 'b':
            base = optarg;
            have_base = true;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'p':
            progress = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'T':
            src_cache = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        case 'U':
            force_share = true;
            break;
        case 'c':
            // qemu-img 8.2's rebase -c: merged clusters are written compressed.
            compress = true;
            break;
        }
    }
    if (quiet) progress = false;
    if (optind != argc - 1) error_exit("Expecting one image file name");
    if (!unsafe && !have_base) error_exit("Must specify backing file (-b) or use unsafe mode (-u)");
    std::string filename = argv[optind];

    progress::init(progress, 2.f);
    progress::print(0.f, 100);
    auto fail = [](const std::string &msg) {
        progress::end();
        error_report(msg);
        return 1;
    };
    if (!parse_cache_mode(cache)) return fail("Invalid cache option: " + cache);
    if (!parse_cache_mode(src_cache)) return fail("Invalid source cache option: " + src_cache);

    // Unsafe mode ignores the old backing file, so that a moved or renamed
    // one can be named anew.
    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt;
    a.image_opts = image_opts;
    a.writable = true;
    a.no_backing = unsafe;
    a.cache = cache;
    a.quiet = quiet;
    NodePtr node = open_image(opener, filename, a);
    if (!node) {
        progress::end();
        return 1;
    }
    if (have_base_fmt && !find_driver(base_fmt)) return fail("Invalid format name: '" + base_fmt + "'");
    // As qemu-img 8.2 words it.
    if (compress && unsafe) return fail("Compression can't be used with -u option");
    if (compress && node->compressed_cluster_size() == 0)
        return fail("Compression not supported for this file format");

    if (!unsafe) {
        BlockNode *old_backing = node->backing();
        BlockNode *new_backing = nullptr, *prefix = nullptr;
        NodePtr new_owned;
        BlockOpener new_opener;
        if (!base.empty()) {
            std::string real = combine_backing_path(node->filename(), base);
            // Rebasing onto an image further down the chain needs to look
            // only at what changed above it.
            prefix = find_backing_image(*node, real_path(real));
            if (prefix) {
                new_backing = prefix;
            } else {
                OpenOptions o;
                o.format = base_fmt;
                o.flags.force_share = force_share;
                auto nb = new_opener.open_image(real, o);
                if (!nb)
                    return fail("Could not open new backing file '" + base + "': " + nb.error().message);
                new_owned = *nb;
                new_backing = new_owned.get();
            }
        }
        engine::RebaseOptions ro;
        ro.compress = compress;
        ro.write_behind = default_write_behind();
        ro.on_progress = [](float step) { progress::print(step, 100); };
        if (auto p = engine::rebase_preserve(*node, old_backing, new_backing, prefix, ro); !p)
            return fail(p.error().message);
        // The preserved data must be durable before the header stops
        // pointing at the old backing file.
        if (auto f = node->flush(); !f)
            return fail("Error while writing to COW image: " + std::string(std::strerror(f.error().code)));
    }

    // bdrv_change_backing_file(): a format needs a file, and a new name
    // needs its format.
    Result<void> r;
    bool named = have_base && !base.empty();
    if (named && !have_base_fmt)
        r = make_error(EINVAL, "Invalid argument");
    else
        r = node->change_backing_file(named ? base : std::string(), named ? base_fmt : std::string());
    if (!r) {
        std::string shown = have_base ? base : std::string("(null)");
        if (r.error().code == ENOSPC)
            return fail("Could not change the backing file to '" + shown + "': No space left in the file header");
        if (r.error().code == EINVAL && have_base && !have_base_fmt)
            return fail("Could not change the backing file to '" + shown + "': backing format must be specified");
        return fail("Could not change the backing file to '" + shown + "': " + std::strerror(r.error().code));
    }
    progress::print(100.f, 0);
    progress::end();
    return 0;
}

}  // namespace qimg::cli
