// Image creation, one path for qemu-img create, convert and dd: QEMU's
// bdrv_img_create() (create) and the bdrv_create() of img_convert/img_dd.
// plan_image() finds the format and protocol drivers and validates the
// options in qemu-img's order and words; create_image() makes the image.
// Callers interleave their own checks between the two, as qemu-img does.
#pragma once

#include <cerrno>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "block/driver.h"
#include "block/open.h"

namespace qimg {

// A creation error: the message and QEMU's hint text (Error::hint), which
// qemu-img create prints verbatim after it (it may lack a newline).
using CreateError = Error;
template <class T>
using CreateResult = Result<T>;

// What to create.
struct ImageSpec {
    std::string format;
    std::string filename;
    std::optional<std::string> options;         // -o, accumulated
    std::optional<uint64_t> size;               // the size argument
    std::optional<std::string> backing_file;    // -b (convert: -B)
    std::optional<std::string> backing_format;  // -F
    // qemu-img create (bdrv_img_create): the size may come from -o or the
    // backing file (not both from -o and the argument), a backing file is
    // checked and, unless `no_backing_open` (-u), opened for its size and to
    // require its format. Otherwise (convert, dd) `size` is the source's and
    // overrides -o size.
    bool img_create = false;
    bool no_backing_open = false;
    // The message for an unknown format (dd says only "Unknown file format").
    std::optional<std::string> unknown_format_message;
};

// A validated image, ready to create.
struct ImagePlan {
    const Driver *format = nullptr;
    std::string filename;
    uint64_t size = 0;
    // The values for the driver (CreateRequest::options), by name.
    std::map<std::string, std::string> options;
    // The options as qemu-img create prints them after "Formatting '<file>',
    // fmt=<fmt> " (qemu_opts_print).
    std::string formatting;
    bool img_create = false;         // planned for qemu-img create
    bool has_cluster_size = false;   // a cluster_size (set or default) for the EFBIG hint
};

CreateResult<ImagePlan> plan_image(const ImageSpec &spec);

// bdrv_create(): "Driver 'x' does not support image creation", or the
// driver's error; for a plan of qemu-img create an EFBIG is "The image size
// is too large for file format 'x'".
CreateResult<void> create_image(BlockOpener &opener, const ImagePlan &plan, bool quiet);

// QEMU's bdrv_co_create_opts_simple, the create() of protocols that cannot
// make a new file (host_device, host_cdrom; NBD exports later): "creating"
// opens what exists with `drv`, grows it if it can (a device cannot:
// "Cannot grow device files"), checks that it holds `req.size` bytes and
// zeroes its first sector so that no old image header survives. Only
// preallocation=off is accepted.
Result<void> create_by_opening(const Driver &drv, CreateRequest &req);
// The creation options of such a protocol (QEMU's bdrv_create_opts_simple).
std::vector<CreateOption> create_by_opening_options();

}  // namespace qimg
