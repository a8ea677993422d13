// qemu-img commit: writes the data an image holds above its base (by
// default its immediate backing file, or -b BASE further down the chain)
// into the base, then empties the image unless -d/-b. The copy is the
// engine's (engine/commit.h).
#include <cstring>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "engine/commit.h"
#include "util/progress.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

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
    SharedOptions so;
    std::string base;
    bool have_base = false, drop = false;
    int64_t rate_limit = 0;  // -r: bytes per second, as QEMU's commit job speed
    auto set_base = [&](const char *arg) {
        base = arg;
        have_base = true;
        drop = true;  // -b implies -d
        return true;
    };
    if (int rc = parse_options(argc, argv, so, kOptFormat | kOptCache | kOptProgress | kOptQuiet | kOptObject | kOptImageOpts,
                               {action_arg('b', nullptr, set_base), flag('d', nullptr, drop), number('r', nullptr, "rate limit", rate_limit)}))
        return rc;
    std::string filename = one_filename(argc, argv);
    if (!valid_cache_mode(so.cache, false)) return 1;

    BlockOpener opener;
    NodePtr node = open_image(opener, filename, so.open_args(so.cache, true));
    if (!node) return 1;

    progress::init(so.progress, 1.f);
    progress::print(0.f, 100);
    BlockNode *base_node = nullptr;
    if (have_base) {
        base_node = find_backing_image(*skip_filters(node.get()), base);
        if (!base_node) return fail_progress(fmt::format("Did not find '{}' in the backing chain of '{}'", base, filename));
    } else {
        // A filter on top (copy-on-read) is read through: its base is its
        // child's backing file (QEMU's bdrv_backing_chain_next).
        base_node = backing_chain_next(node.get());
        if (!base_node) return fail_progress("Image does not have a backing file");
    }
    // The base is written: like QEMU's commit job, which reopens it
    // read-write, open the chain again with that level read-write (and its
    // write permission and lock). A failure there is the reopen's, reported
    // without the open's "Could not open ...: " prefixes.
    if (base_node->read_only()) {
        int level = 0;
        for (BlockNode *p = node.get(); p && p != base_node; p = backing_chain_next(p)) ++level;
        node.reset();
        BlockOpener rw_opener;
        OpenOptions o;
        o.format = so.format.value_or("");
        o.image_opts = so.image_opts;
        o.flags.read_write = true;
        o.flags.rw_backing_level = level;
        o.flags.cache = *parse_cache_mode(so.cache);
        o.warn_probed_raw = false;  // already printed by the first open
        auto reopened = rw_opener.open_image(filename, o);
        if (!reopened) return fail_progress(strip_open_prefixes(reopened.error().message));
        node = *reopened;
        base_node = node.get();
        for (int i = 0; i < level && base_node; ++i) base_node = backing_chain_next(base_node);
        if (!base_node) return fail_progress("Image does not have a backing file");
        opener = std::move(rw_opener);
    }
    engine::CommitOptions co;
    co.rate_limit = static_cast<uint64_t>(rate_limit);
    co.write_behind = default_write_behind();
    co.on_progress = [](float p) { progress::print(p, 0); };
    auto r = engine::commit_image(*node, *base_node, co);
    // Everything commit_image does is QEMU's commit job (growing the base
    // too), whose failure qemu-img reports by its errno alone
    // (common_block_job_cb).
    if (!r) return fail_progress(std::string("Block job failed: ") + std::strerror(r.error().code ? r.error().code : EIO));
    // Without -d the committed image is emptied; a format that cannot
    // (ENOTSUP) keeps its data, which QEMU accepts silently too.
    if (!drop) {
        auto e = node->make_empty();
        // QEMU's bdrv_make_empty words a driver's failure by its errno.
        if (!e && e.error().code != ENOTSUP)
            return fail_progress("Failed to empty " + node->filename() + ": " + std::strerror(e.error().code));
    }
    progress::print(100.f, 0);
    progress::end();
    qprintf(so.quiet, "Image committed.\n");
    return 0;
}

}  // namespace qimg::cli
