// qemu-img compare: options, opening both images, and engine/compare.h.
// Exit codes: 0 identical, 1 different, 2 open/usage errors, 3 status
// failures, 4 read failures, as qemu-img.
#include <getopt.h>

#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "engine/compare.h"
#include "util/keyval.h"
#include "util/progress.h"

namespace qimg::cli {

int cmd_compare(int argc, char **argv) {
    enum { kOptObject = 256, kOptImageOpts };
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt1, fmt2, cache = "writeback";
    bool progress = false, quiet = false, strict = false, image_opts = false, force_share = false;
    int c;
    while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f': fmt1 = optarg; break;
        case 'F': fmt2 = optarg; break;
        case 'T': cache = optarg; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 's': strict = true; break;
        case 'U': force_share = true; break;
        case kOptObject:
            // compare exits 2 on a bad --object, unlike the other commands.
            process_object_option(optarg, 2);
            break;
        case kOptImageOpts: image_opts = true; break;
        }
    }
    if (quiet) progress = false;
    if (optind != argc - 2) error_exit("Expecting two image file names");
    std::string filename1 = argv[optind], filename2 = argv[optind + 1];

    progress::init(progress, 2.0f);
    int rc = [&] {
        if (!parse_cache_mode(cache)) {
            error_reportf("Invalid source cache option: {}", cache);
            return 2;
        }
        BlockOpener opener;
        ImageOpenArgs oa;
        oa.image_opts = image_opts;
        oa.force_share = force_share;
        oa.cache = cache;
        oa.quiet = quiet;
        oa.format = fmt1;
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
