// qemu-img create: img_create's arguments and messages. The creation itself
// (bdrv_img_create's checks, the backing file, the driver's create()) is
// block/create.h's, shared with convert and dd; this file prints the
// "Formatting ..." line between planning and creating, as QEMU does.
#include <cstdint>
#include <cstdio>

#include "block/create.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "util/keyval.h"

namespace qimg::cli {

int cmd_create(int argc, char **argv) {
    SharedOptions so;
    ImageSpec spec;
    spec.img_create = true;
    if (int rc = parse_options(argc, argv, so, kOptFormat | kOptCreateOptions | kOptQuiet | kOptObject,
                               {value('F', nullptr, spec.backing_format), value('b', nullptr, spec.backing_file),
                                flag('u', nullptr, spec.no_backing_open)}))
        return rc;
    spec.format = so.format.value_or("raw");
    spec.options = so.options;

    const char *filename = optind < argc ? argv[optind] : nullptr;
    if (so.options && has_help_option(*so.options)) return print_create_option_help(filename, spec.format);
    if (!filename) error_exit("Expecting image file name");
    spec.filename = filename;
    optind++;

    if (optind < argc) {
        int64_t n;
        if (!parse_number("image size", argv[optind++], n)) return 1;
        spec.size = static_cast<uint64_t>(n);
    }
    if (optind != argc) error_exitf("Unexpected argument: {}", argv[optind]);

    // bdrv_img_create() prints "Formatting ..." between its checks and the
    // driver's create().
    auto create = [&so, &spec]() -> CreateResult<void> {
        CreateResult<ImagePlan> plan = plan_image(spec);
        if (!plan) return Err(plan.error());
        if (!so.quiet) {
            std::printf("Formatting '%s', fmt=%s %s\n", plan->filename.c_str(), spec.format.c_str(),
                        plan->formatting.c_str());
            std::fflush(stdout);
        }
        BlockOpener opener;
        return create_image(opener, *plan, so.quiet);
    };
    CreateResult<void> r = create();
    if (!r) {
        std::fflush(stdout);
        std::fprintf(stderr, "%s: %s: %s\n%s", g_argv0.c_str(), spec.filename.c_str(), r.error().message.c_str(),
                     r.error().hint.c_str());
        return 1;
    }
    return 0;
}

}  // namespace qimg::cli
