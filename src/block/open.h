// Opening images by name: json:/--image-opts parsing, protocol selection,
// format probing, backing chains. The only entry point the CLI and engine use.
#pragma once

#include <optional>
#include <string>

#include "block/driver.h"
#include "block/implicit_open.h"

namespace qimg {

struct OpenOptions {
    std::string format;        // -f; empty: probe
    OpenFlags flags;
    bool image_opts = false;   // `filename` is an --image-opts string
    OptionMap extra;           // extra options merged over the parsed ones
    // Print qemu's warning when a probed raw image is opened for writing.
    bool warn_probed_raw = true;
    // The "file.filename" of the options is a name given as a string (a
    // plain image name, a backing file name an image records): parsed for
    // a protocol prefix and by its protocol, as QEMU's bdrv_open_child with
    // a filename. Otherwise it was given as an option and is taken literally.
    bool file_name_parsed = false;
};

// A child a format driver opens for its node (a qcow2 data file, vmdk
// extents, a luks payload). Backing files are opened by the generic code
// (drivers only record their name: BlockNode::set_backing_names).
struct ChildSpec {
    ChildKind kind = ChildKind::DataFile;
    std::string name;         // option prefix and message name: "data-file", "extents.2"
    // The user's "<name>.*" options (prefix stripped), e.g. from
    // --image-opts: when non-empty they alone say what is opened.
    OptionMap options;
    // The file name the image records (implicit: subject to the
    // implicit-open policy, block/implicit_open.h).
    std::string recorded;
    // Recorded names are relative to the image's directory (vmdk extents,
    // backing files), not to the working directory (a qcow2 data file, as
    // QEMU opens it).
    bool relative_to_image = false;
    // The recorded name is opened even with options, which only add to it
    // (QEMU's bdrv_open_child with a filename: vmdk extents); an option
    // "filename" then conflicts with it.
    bool recorded_with_options = false;
    std::string what = "data file";  // in policy messages
    unsigned role = kRoleData;        // perm.h: what the parent uses it for
};

// Opens nodes and their children. One instance per command; it also resolves
// relative backing file names and refuses loops in backing chains.
class BlockOpener {
public:
    // Opens a child of `parent` (whose own open request carries `flags`),
    // attaches it to `parent` and returns it. What the image names is
    // opened only as the implicit-open policy allows.
    Result<NodePtr> open_child(BlockNode &parent, const OpenFlags &flags, const ChildSpec &spec);
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
    Result<NodePtr> open_protocol(const std::string &filename, const OptionMap &opts, const OpenFlags &flags,
                                  unsigned role = kRoleData);
    // Opens the one child of a filter driver (blkdebug's "image"): named by
    // `filename` (a string, parsed for a protocol prefix) or by `opts` (any
    // driver, a format too, with its backing chain as QEMU opens it). No
    // permissions are taken: the filter passes its own on to it
    // (FilterNode::set_perm).
    Result<NodePtr> open_filtered(const std::string &filename, const OptionMap &opts, const OpenFlags &flags) {
        return open_protocol_node(filename, opts, flags, true);
    }
    // Creates the protocol-level file (create/truncate it to `size`).
    Result<void> create_protocol(const std::string &filename, uint64_t size, Prealloc prealloc);
    // The same with all of a creation request's options (the protocol's own
    // -o options such as preallocation, nocow, extent_size_hint), as a format
    // without a container (raw) passes them on. req.opener is set to this.
    Result<void> create_protocol(CreateRequest &req);

    int depth_limit = 64;   // deeper chains are refused as loops/abuse
    // What images may make this opener open (default: the process's
    // policy, block/implicit_open.h).
    Result<ImplicitOpen> implicit_open = implicit_open_policy();
private:
    // The implicit-open check for `recorded` (resolved to `resolved`),
    // named by `parent`.
    Result<void> check_implicit(const BlockNode &parent, const std::string &recorded, const std::string &resolved,
                                const std::string &what) const;
    Result<void> open_recorded_backing(BlockNode &node, OpenRequest &req);
    // open_protocol without taking permissions.
    // With `with_backing`, a format opened there gets its backing chain (a
    // filter's child); otherwise it is opened alone.
    Result<NodePtr> open_protocol_node(const std::string &filename, const OptionMap &opts, const OpenFlags &flags,
                                       bool with_backing = false);
    Result<NodePtr> open_options(OptionMap opts, const std::string &display_name, const OpenOptions &o, int depth);
    int depth_ = 0;
    std::vector<std::string> chain_names_;  // for loop detection
};

// A filter the opener puts above every protocol node it opens (a node with
// no children of its own: file, null-co, ...), whatever asked for it (an
// image, its backing files and data files, a blkdebug's image, create): the
// crash tests' fault injection (filter/fault/), which registers itself at
// start-up when its environment asks for it. Unset, nothing is inserted.
using ProtocolFilter = NodePtr (*)(NodePtr node, const OpenFlags &flags);
void set_protocol_filter(ProtocolFilter f);
// `node` under the protocol filter, or `node` itself when none is set. A
// protocol driver that makes a node outside the opener (file's create)
// passes it through here too.
NodePtr filter_protocol(NodePtr node, const OpenFlags &flags);

// Combines a backing file name recorded in `image` with the image's directory,
// as QEMU's path_combine does (absolute names and protocol URIs are kept).
std::string combine_backing_path(const std::string &image, const std::string &backing);

// What a relative name recorded in `image` (a backing file, a data file, an
// extent) is resolved against, as QEMU's bdrv_dirname: the name of the file
// below `image` through its file children (filters included), so that an
// image named by json: options or opened through blkdebug resolves against
// the directory of the file that holds it. std::nullopt where that file has
// no such name (a json: name, none): the name cannot be resolved.
std::optional<std::string> resolve_base(const BlockNode &image);

// `name` recorded in `image`, resolved (QEMU's bdrv_make_absolute_filename):
// absolute names and protocol URIs as they are, relative ones combined with
// resolve_base(image); "" where that has no answer.
std::string resolve_recorded_name(const BlockNode &image, const std::string &name);

// A file name given as a string (command line, image header) with its
// protocol prefix removed where the rest is a host path ("file:",
// "host_device:", "host_cdrom:"; Driver::path_after_prefix), as QEMU's file-posix drivers parse it
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

// QEMU's bdrv_refresh_filename(): the name a node opened from json: or
// --image-opts options (`given`, flattened, as typed) shows: its file's name
// unless options that change what it is were given (Driver::strong_options,
// Driver::refresh_filename), else "json:{...}" of them in QDict order.
std::string refreshed_filename(const BlockNode &node, const std::map<std::string, nlohmann::ordered_json> &given);

// realpath(3) of `p`, or `p` itself when it cannot be resolved.
std::string real_path(const std::string &p);

}  // namespace qimg
