// Opening images by name: json:/--image-opts parsing, protocol selection,
// format probing, backing chains. The only entry point the CLI and engine use.
#pragma once

#include <string>

#include "block/driver.h"

namespace qimg {

struct OpenOptions {
    std::string format;        // -f; empty: probe
    OpenFlags flags;
    bool image_opts = false;   // `filename` is an --image-opts string
    OptionMap extra;           // extra options merged over the parsed ones
    // Print qemu's warning when a probed raw image is opened for writing.
    bool warn_probed_raw = true;
};

// Opens nodes and their children. One instance per command; it also resolves
// relative backing file names and refuses loops in backing chains.
class BlockOpener {
public:
    // Opens an image (format node over its protocol node, with its backing
    // chain unless flags.no_backing). Errors are worded like QEMU's inner
    // errors; the CLI prepends "Could not open '<name>': ".
    Result<NodePtr> open_image(const std::string &filename, const OpenOptions &opts);
    // Opens a backing file for `child` (name as recorded, format may be empty).
    // `overrides` are the child's "backing.*" options, prefix stripped
    // (QEMU's bdrv_open_backing_file): with "file.filename" they name the
    // backing file instead of `name`; "driver" overrides `format`.
    Result<NodePtr> open_backing(BlockNode &child, const std::string &name, const std::string &format,
                                 const OpenFlags &flags, const OptionMap &overrides = {});
    // Opens only the protocol node for a filename (e.g. for create), taking
    // the permissions of a root opened with `flags` (or, when flags.perms is
    // set, those of a format node's data child).
    Result<NodePtr> open_protocol(const std::string &filename, const OptionMap &opts, const OpenFlags &flags);
    // Creates the protocol-level file (create/truncate it to `size`).
    Result<void> create_protocol(const std::string &filename, uint64_t size, Prealloc prealloc);
    // The same with all of a creation request's options (the protocol's own
    // -o options such as preallocation, nocow, extent_size_hint), as a format
    // without a container (raw) passes them on. req.opener is set to this.
    Result<void> create_protocol(CreateRequest &req);

    int depth_limit = 64;   // deeper chains are refused as loops/abuse
private:
    // open_protocol without taking permissions.
    Result<NodePtr> open_protocol_node(const std::string &filename, const OptionMap &opts, const OpenFlags &flags);
    Result<NodePtr> open_options(OptionMap opts, const std::string &display_name, const OpenOptions &o, int depth);
    int depth_ = 0;
    std::vector<std::string> chain_names_;  // for loop detection
};

// Combines a backing file name recorded in `image` with the image's directory,
// as QEMU's path_combine does (absolute names and protocol URIs are kept).
std::string combine_backing_path(const std::string &image, const std::string &backing);

// A file name given as a string (command line, image header) with its
// "file:" protocol prefix removed, as QEMU's file driver parses it
// (bdrv_parse_filename_strip_prefix): "file:/a:b" is "/a:b", and a rest that
// would itself look prefixed gets "./" ("file:a:b" is "./a:b"). Other names
// are returned unchanged.
std::string strip_file_prefix(const std::string &name);

// QEMU's warning when probing guessed raw for an image opened read-write
// (raw_open), on stderr; `display` is the image's name.
void warn_probed_raw(const std::string &display);

// QEMU's bdrv_find_backing_image(): the layer below `top` that `name`
// designates, by the name recorded in the layer above it or by the file it
// resolves to (symlinks and "./" resolved); nullptr if none.
BlockNode *find_backing_image(BlockNode &top, const std::string &name);

// realpath(3) of `p`, or `p` itself when it cannot be resolved.
std::string real_path(const std::string &p);

}  // namespace qimg
