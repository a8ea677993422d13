// qemu-img create: argument handling (img_create) and the generic part of
// image creation that QEMU keeps in bdrv_img_create(): option validation,
// backing file checks and size, the "Formatting ..." line, then the format
// driver's create().
#include <getopt.h>

#include <cstdint>
#include <cstdio>
#include <optional>

#include "block/open.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/create_opts.h"
#include "util/keyval.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

constexpr uint64_t kNoSize = UINT64_MAX;  // img_size "not given", as QEMU's -1

// An error of bdrv_img_create: the message, and QEMU's optional hint text
// printed verbatim after it (it may lack a final newline).
struct CreateError {
    std::string message;
    std::string hint;
};

struct CreateArgs {
    std::string filename, fmt = "raw";
    std::optional<std::string> base_filename, base_fmt;
    std::optional<std::string> options;
    uint64_t img_size = kNoSize;
    bool no_backing = false;
    bool quiet = false;
};

// Opens the backing file (read-only, shared) to learn its format and size.
std::optional<CreateError> probe_backing(const CreateArgs &a, CreateOpts &opts, const std::string &backing_file,
                                         const std::optional<std::string> &backing_fmt, uint64_t &size) {
    BlockOpener opener;
    OpenOptions o;
    o.format = backing_fmt.value_or("");
    o.flags.force_share = true;
    o.warn_probed_raw = false;
    std::string full = combine_backing_path(a.filename, backing_file);
    auto bs = opener.open_image(full, o);
    if (!bs) return CreateError{bs.error().message, "Could not open backing image.\n"};
    if (!backing_fmt)
        return CreateError{"Backing file specified without backing format",
                           "Detected format of " + std::string((*bs)->driver_name()) + "."};
    if (size == kNoSize) {
        size = (*bs)->length();
        (void)opts.set_number("size", size);
    }
    return std::nullopt;
}

// bdrv_img_create().
std::optional<CreateError> img_create(const CreateArgs &a) {
    const Driver *drv = find_driver(a.fmt);
    if (!drv) return CreateError{"Unknown file format '" + a.fmt + "'", {}};
    auto proto = find_protocol_driver(a.filename);
    if (!proto) return CreateError{proto.error().message, {}};
    if (drv->create_options.empty())
        return CreateError{"Format driver '" + drv->name + "' does not support image creation", {}};
    if ((*proto)->create_options.empty())
        return CreateError{"Protocol driver '" + (*proto)->name + "' does not support image creation", {}};

    CreateOpts opts(merge_create_options(drv->create_options, &(*proto)->create_options));
    if (a.options) {
        if (auto r = opts.parse(*a.options); !r) return CreateError{r.error().message, {}};
    }
    if (!opts.has("size")) {
        (void)opts.set_number("size", a.img_size);
    } else if (a.img_size != kNoSize) {
        return CreateError{"The image size must be specified only once", {}};
    }
    if (a.base_filename && !opts.set("backing_file", *a.base_filename))
        return CreateError{"Backing file not supported for file format '" + a.fmt + "'", {}};
    if (a.base_fmt && !opts.set("backing_fmt", *a.base_fmt))
        return CreateError{"Backing file format not supported for file format '" + a.fmt + "'", {}};

    std::optional<std::string> backing_file = opts.get("backing_file");
    if (backing_file) {
        if (*backing_file == a.filename)
            return CreateError{"Error: Trying to create an image with the same filename as the backing file", {}};
        if (backing_file->empty()) return CreateError{"Expected backing file name, got empty string", {}};
    }
    std::optional<std::string> backing_fmt = opts.get("backing_fmt");

    // The size must be given unless a backing file that may be opened gives it.
    uint64_t size = opts.get_number("size", a.img_size);
    if (backing_file && !a.no_backing) {
        if (auto e = probe_backing(a, opts, *backing_file, backing_fmt, size)) return e;
    } else if (backing_file && !backing_fmt) {
        return CreateError{"Backing file specified without backing format", {}};
    }
    if (size == kNoSize) return CreateError{"Image creation needs a size parameter", {}};

    if (!a.quiet) {
        std::printf("Formatting '%s', fmt=%s %s\n", a.filename.c_str(), a.fmt.c_str(), opts.print().c_str());
        std::fflush(stdout);
    }
    if (!drv->create) return CreateError{"Driver '" + drv->name + "' does not support image creation", {}};

    BlockOpener opener;
    CreateRequest req;
    req.filename = a.filename;
    req.size = size;
    req.options = opts.values();
    req.opener = &opener;
    req.quiet = a.quiet;
    auto r = drv->create(req);
    if (!r) {
        if (r.error().code == EFBIG) {
            std::string hint = opts.get_number("cluster_size", 0) ? " (try using a larger cluster size)" : "";
            return CreateError{"The image size is too large for file format '" + a.fmt + "'" + hint, {}};
        }
        return CreateError{r.error().message, {}};
    }
    return std::nullopt;
}

}  // namespace

int cmd_create(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, 'O' + 256},
        {nullptr, 0, nullptr, 0},
    };
    CreateArgs a;
    int c;
    while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'F':
            a.base_fmt = optarg;
            break;
        case 'b':
            a.base_filename = optarg;
            break;
        case 'f':
            a.fmt = optarg;
            break;
        case 'o': {
            auto acc = accumulate_options(a.options.value_or(""), optarg);
            if (!acc) {
                error_report(acc.error().message);
                return 1;
            }
            a.options = *acc;
            break;
        }
        case 'q':
            a.quiet = true;
            break;
        case 'u':
            a.no_backing = true;
            break;
        case 'O' + 256:
            process_object_option(optarg);
            break;
        }
    }

    const char *filename = optind < argc ? argv[optind] : nullptr;
    if (a.options && has_help_option(*a.options)) return print_create_option_help(filename, a.fmt);
    if (!filename) error_exit("Expecting image file name");
    a.filename = filename;
    optind++;

    if (optind < argc) {
        auto n = cvtnum("image size", argv[optind++], g_argv0);
        if (!n) {
            error_report(n.error().message);
            return 1;
        }
        a.img_size = static_cast<uint64_t>(*n);
    }
    if (optind != argc) error_exitf("Unexpected argument: {}", argv[optind]);

    if (auto e = img_create(a)) {
        std::fflush(stdout);
        std::fprintf(stderr, "%s: %s: %s\n%s", g_argv0.c_str(), a.filename.c_str(), e->message.c_str(),
                     e->hint.c_str());
        return 1;
    }
    return 0;
}

}  // namespace qimg::cli
