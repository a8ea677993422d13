// Image creation (see create.h): bdrv_img_create()'s checks in its order,
// on the creation options of block/create_opts.h.
#include "block/create.h"

#include "block/create_opts.h"

#include <algorithm>

namespace qimg {
namespace {

constexpr uint64_t kNoSize = UINT64_MAX;  // img_size "not given", as QEMU's -1

Unexpected fail(std::string message, std::string hint = {}) {
    return Err(CreateError{EINVAL, std::move(message), std::move(hint)});
}

// Opens the backing file (read-only, shared) to learn its format and size.
CreateResult<void> probe_backing(const ImageSpec &spec, CreateOpts &opts, const std::string &backing_file,
                                 const std::optional<std::string> &backing_fmt, uint64_t &size) {
    BlockOpener opener;
    OpenOptions o;
    o.format = backing_fmt.value_or("");
    o.flags.force_share = true;
    o.warn_probed_raw = false;
    auto bs = opener.open_image(combine_backing_path(spec.filename, backing_file), o);
    if (!bs) return fail(bs.error().message, "Could not open backing image.\n");
    if (!backing_fmt)
        return fail("Backing file specified without backing format",
                    "Detected format of " + std::string((*bs)->driver_name()) + ".");
    if (size == kNoSize) {
        size = (*bs)->length();
        (void)opts.set_number("size", size);
    }
    return {};
}

// bdrv_img_create()'s size and backing file rules, after the options.
CreateResult<uint64_t> img_create_size(const ImageSpec &spec, CreateOpts &opts) {
    const uint64_t img_size = spec.size.value_or(kNoSize);
    if (!opts.has("size")) {
        (void)opts.set_number("size", img_size);
    } else if (spec.size) {
        return fail("The image size must be specified only once");
    }
    return img_size;
}

CreateResult<void> check_backing(const ImageSpec &spec, CreateOpts &opts, uint64_t &size) {
    std::optional<std::string> backing_file = opts.get("backing_file");
    if (backing_file) {
        if (*backing_file == spec.filename)
            return fail("Error: Trying to create an image with the same filename as the backing file");
        if (backing_file->empty()) return fail("Expected backing file name, got empty string");
    }
    std::optional<std::string> backing_fmt = opts.get("backing_fmt");
    // The size must be given unless a backing file that may be opened gives it.
    if (backing_file && !spec.no_backing_open) return probe_backing(spec, opts, *backing_file, backing_fmt, size);
    if (backing_file && !backing_fmt) return fail("Backing file specified without backing format");
    return {};
}

}  // namespace

CreateResult<ImagePlan> plan_image(const ImageSpec &spec) {
    const Driver *drv = find_driver(spec.format);
    if (!drv) return fail(spec.unknown_format_message.value_or("Unknown file format '" + spec.format + "'"));
    auto proto = find_protocol_driver(spec.filename);
    if (!proto) return fail(proto.error().message);
    if (!drv->can_create()) return fail("Format driver '" + drv->name + "' does not support image creation");
    if (!(*proto)->can_create())
        return fail("Protocol driver '" + (*proto)->name + "' does not support image creation");

    CreateOpts opts(merge_create_options(drv->create_options, &(*proto)->create_options));
    if (spec.options) {
        if (auto r = opts.parse(*spec.options); !r) return fail(r.error().message);
    }
    uint64_t size = spec.size.value_or(kNoSize);
    if (spec.img_create) {
        auto s = img_create_size(spec, opts);
        if (!s) return Err(s.error());
    } else {
        (void)opts.set_number("size", size);
    }
    if (spec.backing_file && !opts.set("backing_file", *spec.backing_file))
        return fail("Backing file not supported for file format '" + spec.format + "'");
    if (spec.backing_format && !opts.set("backing_fmt", *spec.backing_format))
        return fail("Backing file format not supported for file format '" + spec.format + "'");

    if (spec.img_create) {
        size = opts.get_number("size", size);
        if (auto b = check_backing(spec, opts, size); !b) return Err(b.error());
        if (size == kNoSize) return fail("Image creation needs a size parameter");
    }
    ImagePlan plan;
    plan.format = drv;
    plan.filename = spec.filename;
    plan.size = size;
    plan.options = opts.values();
    plan.options["size"] = std::to_string(size);
    plan.formatting = opts.print();
    plan.img_create = spec.img_create;
    plan.has_cluster_size = opts.get_number("cluster_size", 0) != 0;
    return plan;
}

CreateResult<void> create_image(BlockOpener &opener, const ImagePlan &plan, bool quiet) {
    const Driver *drv = plan.format;
    if (!drv->create) return fail("Driver '" + drv->name + "' does not support image creation");
    CreateRequest req;
    req.filename = plan.filename;
    req.size = plan.size;
    req.options = plan.options;
    req.options.erase("size");
    req.opener = &opener;
    req.quiet = quiet;
    auto r = drv->create(req);
    if (r) return {};
    if (plan.img_create && r.error().code == EFBIG) {
        std::string hint = plan.has_cluster_size ? " (try using a larger cluster size)" : "";
        return fail("The image size is too large for file format '" + drv->name + "'" + hint);
    }
    return Err(CreateError{r.error().code, r.error().message, {}});
}

Result<void> create_by_opening(const Driver &drv, CreateRequest &req) {
    QIMG_ASSIGN(Prealloc prealloc, parse_prealloc(req.get("preallocation", "off")));
    if (prealloc != Prealloc::Off)
        return make_error(ENOTSUP, "Unsupported preallocation mode '" + std::string(prealloc_name(prealloc)) + "'");
    BlockOpener local;
    BlockOpener &opener = req.opener ? *req.opener : local;
    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    auto opened = opener.open_protocol(req.filename, OptionMap{{"driver", drv.name}}, flags);
    if (!opened)
        return make_error(EINVAL, "Protocol driver '" + drv.name +
                                      "' does not support image creation, and opening the image failed: " +
                                      opened.error().message);
    BlockNode &node = **opened;
    // Grow if it must (not exact: a larger device is fine); "cannot" is
    // only an error when what exists is too small.
    Result<void> grown = node.truncate(req.size, Prealloc::Off, false);
    if (!grown && grown.error().code != ENOTSUP) return grown;
    if (node.length() < req.size) return grown ? make_error(ENOTSUP, "Image is too small") : grown;
    if (uint64_t first = std::min<uint64_t>(node.length(), 512); first > 0) {
        if (auto z = node.write_zeroes(0, first, kZeroMayUnmap); !z)
            return errno_error(z.error().code, "Failed to clear the new image's first sector");
    }
    return node.flush();
}

std::vector<CreateOption> create_by_opening_options() {
    return {
        {"size", CreateOption::Type::Size, "Virtual disk size", ""},
        {"preallocation", CreateOption::Type::String, "Preallocation mode (allowed values: off)", ""},
    };
}

}  // namespace qimg
