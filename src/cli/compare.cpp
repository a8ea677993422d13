// qemu-img compare: options, opening both images, and engine/compare.h.
// Exit codes: 0 identical, 1 different, 2 open/usage errors, 3 status
// failures, 4 read failures, as qemu-img.
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "engine/compare.h"
#include "util/keyval.h"
#include "util/progress.h"

namespace qimg::cli {

int cmd_compare(int argc, char **argv) {
    SharedOptions so;
    so.object_fail_status = 2;  // compare exits 2 on a bad --object, unlike the other commands
    std::string fmt2;
    bool strict = false;
    if (int rc = parse_options(argc, argv, so,
                               kOptFormat | kOptSrcCache | kOptProgress | kOptQuiet | kOptForceShare | kOptObject |
                                   kOptImageOpts,
                               {value('F', nullptr, fmt2), flag('s', nullptr, strict)}))
        return rc;
    if (optind != argc - 2) error_exit("Expecting two image file names");
    std::string filename1 = argv[optind], filename2 = argv[optind + 1];

    const bool quiet = so.quiet;
    progress::init(so.progress, 2.0f);
    int rc = [&] {
        if (!valid_cache_mode(so.src_cache, true)) return 2;
        BlockOpener opener;
        ImageOpenArgs oa = so.open_args(so.src_cache);
        NodePtr a = open_image(opener, filename1, oa);
        if (!a) return 2;
        oa.format = fmt2;
        NodePtr b = open_image(opener, filename2, oa);
        if (!b) return 2;
        engine::CompareOptions o;
        o.strict = strict;
        o.name1 = filename1;
        o.name2 = filename2;
        o.out = [quiet](const std::string &s) { qprintf(quiet, s); };
        o.err = [](const std::string &s) { error_report(s); };
        o.on_progress = [](float delta) { progress::print(delta, 100); };
        return engine::compare_images(*a, *b, o);
    }();
    progress::end();
    return rc;
}

}  // namespace qimg::cli
