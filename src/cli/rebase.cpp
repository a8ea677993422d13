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
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "engine/rebase.h"
#include "util/progress.h"

namespace qimg::cli {

int cmd_rebase(int argc, char **argv) {
    SharedOptions so;
    std::optional<std::string> base_arg, base_fmt_arg;
    bool unsafe = false, compress = false;
    if (int rc = parse_options(argc, argv, so,
                               kOptFormat | kOptProgress | kOptCache | kOptSrcCache | kOptQuiet | kOptForceShare |
                                   kOptObject | kOptImageOpts,
                               {value('F', nullptr, base_fmt_arg), value('b', nullptr, base_arg), flag('u', nullptr, unsafe),
                                // qemu-img 8.2's rebase -c: merged clusters are written compressed.
                                flag('c', "compress", compress)}))
        return rc;
    std::string filename = one_filename(argc, argv);
    const bool have_base = base_arg.has_value(), have_base_fmt = base_fmt_arg.has_value();
    const std::string base = base_arg.value_or(""), base_fmt = base_fmt_arg.value_or("");
    if (!unsafe && !have_base) error_exit("Must specify backing file (-b) or use unsafe mode (-u)");

    progress::init(so.progress, 2.f);
    progress::print(0.f, 100);
    if (auto e = cache_mode_error(so.cache, false)) return fail_progress(*e);
    if (auto e = cache_mode_error(so.src_cache, true)) return fail_progress(*e);

    // Unsafe mode ignores the old backing file, so that a moved or renamed
    // one can be named anew.
    BlockOpener opener;
    ImageOpenArgs a = so.open_args(so.cache, true);
    a.force_share = false;  // -U is for the new backing file only
    a.no_backing = unsafe;
    NodePtr node = open_image(opener, filename, a);
    if (!node) {
        progress::end();
        return 1;
    }
    if (have_base_fmt && !find_driver(base_fmt)) return fail_progress("Invalid format name: '" + base_fmt + "'");
    // As qemu-img 8.2 words it.
    if (compress && unsafe) return fail_progress("Compression can't be used with -u option");
    if (compress && node->compressed_cluster_size() == 0)
        return fail_progress("Compression not supported for this file format");

    // Through a filter (throttle, copy-on-read) the image is the node
    // below it (QEMU's bdrv_skip_filters). qimg also writes the preserved
    // data there directly, where QEMU writes it through the filter (only a
    // throttle's timing differs).
    BlockNode &image = *skip_filters(node.get());
    if (!unsafe) {
        BlockNode *old_backing = image.backing();
        BlockNode *new_backing = nullptr, *prefix = nullptr;
        NodePtr new_owned;
        BlockOpener new_opener;
        if (!base.empty()) {
            // bdrv_get_full_backing_filename_from_filename(): a relative
            // name cannot be resolved against a json: name (a throttle node's).
            if (node->filename().starts_with("json:") && base[0] != '/' && !protocol_prefix(base))
                return fail_progress("Could not resolve backing filename: Cannot use relative backing file names for '" +
                                     node->filename() + "'");
            std::string real = combine_backing_path(node->filename(), base);
            // Rebasing onto an image further down the chain needs to look
            // only at what changed above it.
            prefix = find_backing_image(image, real_path(real));
            if (prefix) {
                new_backing = prefix;
            } else {
                OpenOptions o;
                o.format = base_fmt;
                o.flags.force_share = so.force_share;
                auto nb = new_opener.open_image(real, o);
                if (!nb)
                    return fail_progress("Could not open new backing file '" + base + "': " + nb.error().message);
                new_owned = *nb;
                new_backing = new_owned.get();
            }
        }
        engine::RebaseOptions ro;
        ro.compress = compress;
        ro.write_behind = default_write_behind();
        ro.on_progress = [](float step) { progress::print(step, 100); };
        if (auto p = engine::rebase_preserve(image, old_backing, new_backing, prefix, ro); !p)
            return fail_progress(p.error().message);
        // The preserved data must be durable before the header stops
        // pointing at the old backing file.
        if (auto f = node->flush(); !f)
            return fail_progress("Error while writing to COW image: " + std::string(std::strerror(f.error().code)));
    }

    // bdrv_change_backing_file(): a format needs a file, and a new name
    // needs its format.
    Result<void> r;
    bool named = have_base && !base.empty();
    if (named && !have_base_fmt)
        r = make_error(EINVAL, "Invalid argument");
    else
        r = image.change_backing_file(named ? base : std::string(), named ? base_fmt : std::string());
    if (!r) {
        std::string shown = have_base ? base : std::string("(null)");
        if (r.error().code == ENOSPC)
            return fail_progress("Could not change the backing file to '" + shown + "': No space left in the file header");
        if (r.error().code == EINVAL && have_base && !have_base_fmt)
            return fail_progress("Could not change the backing file to '" + shown + "': backing format must be specified");
        return fail_progress("Could not change the backing file to '" + shown + "': " + std::strerror(r.error().code));
    }
    progress::print(100.f, 0);
    progress::end();
    return 0;
}

}  // namespace qimg::cli
