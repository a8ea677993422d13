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

// The ranges allocated between `top` and `base` (what commit copies), in
// order, at most `chunk` bytes each.
struct Extent {
    uint64_t off, len;
    bool zero;
};
Result<std::vector<Extent>> commit_extents(BlockNode &top, BlockNode &base, uint64_t chunk) {
    std::vector<Extent> out;
    uint64_t size = top.length();
    for (uint64_t off = 0; off < size;) {
        QIMG_ASSIGN(ChainStatus s, chain_status(top, &base, off, std::min(chunk, size - off)));
        if (s.bytes == 0) break;
        if (s.flags & kStatusAllocated) out.push_back({off, s.bytes, (s.flags & kStatusZero) != 0});
        off += s.bytes;
    }
    return out;
}

// Copies every range allocated between `top` and `base` into `base`.
// Progress counts the bytes to copy, as QEMU's commit (mirror) job does, so
// an image with little data goes from 0% to 100% at once.
Result<void> commit_data(BlockNode &top, BlockNode &base) {
    uint64_t size = top.length();
    if (base.length() < size) QIMG_TRY(base.truncate(size, Prealloc::Off, false));
    constexpr uint64_t kChunk = 2 << 20;
    QIMG_ASSIGN(std::vector<Extent> extents, commit_extents(top, base, kChunk));
    uint64_t total = 0, done = 0;
    for (const Extent &e : extents) total += e.len;
    std::vector<uint8_t> buf(kChunk);
    for (const Extent &e : extents) {
        if (e.zero) {
            // QEMU's active commit is a mirror job with unmap on: zeroes
            // may deallocate the base's clusters / punch holes.
            QIMG_TRY(base.write_zeroes(e.off, e.len, kZeroMayUnmap));
        } else {
            QIMG_TRY(top.read(e.off, buf.data(), e.len));
            QIMG_TRY(base.write(e.off, buf.data(), e.len));
        }
        done += e.len;
        progress::print(static_cast<float>(done) * 100.f / static_cast<float>(total), 0);
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
    auto r = commit_data(*node, *base_node);
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
