// The driver registry: every protocol and format driver describes itself in
// one Driver record and registers it with QIMG_REGISTER_DRIVER from its own
// source file. Nothing else in the tree names a driver's implementation, so
// adding a format touches no other format (see format/raw/raw.cpp, the
// template a new format starts from).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "block/node.h"
#include "block/perm.h"
#include "crypto/secret.h"
#include "util/json_filename.h"

namespace qimg {

// One creation option (`-o name=value`), as listed by `-o help`.
struct CreateOption {
    enum class Type { String, Bool, Number, Size };
    std::string name;
    Type type = Type::String;
    std::string help;
    std::string default_value;  // shown by -o help as "(default: ...)"; empty: none
};

struct OpenFlags {
    bool read_write = false;
    bool no_backing = false;      // do not open the backing chain
    bool force_share = false;     // -U
    CacheMode cache;
    // How the command uses the image, as qemu-img's BDRV_O_* open flags; they
    // decide the permissions (block/perm.h) and so QEMU's image locks.
    bool no_io = false;           // BDRV_O_NO_IO: metadata only (info)
    bool resize = false;          // BDRV_O_RESIZE: the size may change (resize)
    bool no_share = false;        // BDRV_O_NO_SHARE: others may not write (convert source)
    bool check = false;           // BDRV_O_CHECK: opened by qemu-img check (no repair on open)
    // Permissions the node's users take on it. Set by the opener for every
    // node it opens (format drivers pass their own request's flags on to
    // open_backing/open_protocol); unset at a root, where they follow from
    // the flags above.
    std::optional<Perms> perms;
    // Which backing level below this node is opened read-write (1: the
    // immediate backing file, 2: its backing file...; 0: none), as
    // `qemu-img commit` needs for its base.
    int rw_backing_level = 0;
};

class BlockOpener;

// What a driver's open() receives.
struct OpenRequest {
    std::string filename;   // the name to report (may be empty for json:/image-opts)
    // Protocols: options["filename"] is a name given as a string (command
    // line, image header), not a "filename" option of json:/--image-opts,
    // which QEMU's bdrv_parse_filename does not see (rbd reads such an
    // option in its legacy way).
    bool name_is_string = false;
    OptionMap options;      // this node's options, child prefixes stripped ("offset", "size", ...)
    OpenFlags flags;
    NodePtr file;           // format drivers: the opened protocol child
    BlockOpener *opener = nullptr;  // to open backing files / extra children
    // The --object secrets (keys, passphrases: encrypt.key-secret=<id>).
    const SecretStore *secrets = &SecretStore::global();
};

// Options a driver's create() receives: the `-o` values after validation
// against the driver's option list, by name, plus the size.
struct CreateRequest {
    std::string filename;
    uint64_t size = 0;
    std::map<std::string, std::string> options;  // validated; absent = not given
    BlockOpener *opener = nullptr;
    const SecretStore *secrets = &SecretStore::global();  // as OpenRequest::secrets
    bool quiet = false;
    // Helpers for typed access with the driver's defaults applied.
    bool has(const std::string &k) const { return options.count(k) != 0; }
    std::string get(const std::string &k, const std::string &dflt = {}) const {
        auto it = options.find(k);
        return it == options.end() ? dflt : it->second;
    }
};

// What `qemu-img measure` asks a format (QEMU's bdrv_measure): the host
// space an image of this format needs, either new (of options["size"]) or
// holding a copy of `source`.
struct MeasureRequest {
    // The validated -o values (the format's create options plus the file
    // protocol's), normalised as CreateRequest::options: sizes and numbers in
    // decimal, booleans "on"/"off"; absent = not given. "size" is --size.
    std::map<std::string, std::string> options;
    BlockNode *source = nullptr;  // the image to be copied, or nullptr
    const SecretStore *secrets = &SecretStore::global();  // as OpenRequest::secrets
    bool has(const std::string &k) const { return options.count(k) != 0; }
    std::string get(const std::string &k, const std::string &dflt = {}) const {
        auto it = options.find(k);
        return it == options.end() ? dflt : it->second;
    }
};

// QEMU's BlockMeasureInfo.
struct MeasureInfo {
    uint64_t required = 0;         // "required size"
    uint64_t fully_allocated = 0;  // "fully allocated size"
    bool has_bitmaps = false;      // print "bitmaps size"
    uint64_t bitmaps = 0;
};

struct Driver {
    std::string name;
    bool is_protocol = false;
    // URI-style prefixes a protocol driver handles ("nbd", "http"); "file" is the default.
    std::vector<std::string> protocol_prefixes;
    // What follows "<prefix>:" is a host path (QEMU's
    // bdrv_parse_filename_strip_prefix: "file:a.img", "host_device:/dev/sdb"):
    // the prefix is dropped where a name is given as a string (strip_file_prefix).
    bool path_after_prefix = false;
    // A protocol whose names have no directory that relative names (a
    // backing file's) could be resolved against: QEMU's bdrv_dirname error
    // ("Cannot generate a base directory for NBD nodes"). Empty: they have.
    std::string no_dirname_reason;
    // QEMU's bdrv_parse_filename: the driver reads its options out of a
    // name given as a string ("nbd://h/x", "http://...",
    // "blkdebug:CONF:IMAGE", "null-co://"). A "filename" given as an option
    // (json:, --image-opts) is not parsed: the driver never sees it, and
    // it is left over as an option the driver does not take.
    bool parses_filename = false;
    // Format probing: a score for the first bytes of the image (up to 2048),
    // 0 = not this format. raw answers 1 so that anything else wins.
    std::function<int(std::span<const uint8_t> head, const std::string &filename)> probe;
    // Protocols of host devices (QEMU's bdrv_probe_device): a score for a
    // plain path without a protocol prefix, 0 = not this driver. A block
    // device given by name is host_device's (or host_cdrom's), not file's.
    std::function<int(const std::string &path)> probe_device;
    std::function<Result<NodePtr>(OpenRequest &)> open;
    // nullptr: the format cannot be created (qemu-img: "Format driver 'x' does not support image creation").
    std::function<Result<void>(CreateRequest &)> create;
    std::vector<CreateOption> create_options;
    // qemu-img measure; nullptr: "Block driver 'x' does not support size
    // measurement".
    std::function<Result<MeasureInfo>(MeasureRequest &)> measure;

    // The options that change what a node is (QEMU's strong_runtime_opts,
    // beside "driver" and "filename"): given, they name the image as a
    // json: string (raw's offset/size) instead of its file's name. One
    // ending in "." takes every key below it (blkdebug's "inject-error.").
    std::vector<std::string> strong_options;
    // QEMU's bdrv_refresh_filename of a driver that names its nodes itself:
    // the plain name for a node with these full options (driver, filename,
    // strong options, children; `file_exact`: its file child's plain name,
    // "" if none), or "" for a json: name. nullptr: the name of its file
    // child, or of its "filename" option.
    std::function<std::string(const nlohmann::ordered_json &full, const std::string &file_exact)> refresh_filename;

    // A filter (QEMU's is_filter drivers: throttle, copy-on-read): its one
    // child "file" is required ("A block device must be specified for
    // \"file\""), is opened as the options say (a protocol without
    // probing, or a format with its backing chain) and shows through the
    // filter unchanged (BlockNode::filtered_child()).
    bool is_filter = false;

    // --- Capabilities: what the driver can do, declared here once. The CLI
    // and the engine ask these and print qemu-img's message where one is
    // missing; nothing outside a driver's own folder tests its name. What
    // depends on the image rather than the format (qcow2 v2 has no bitmaps,
    // a qcow2 with a data file cannot compress) the node answers:
    // BlockNode::supports_persistent_bitmaps(), compressed_cluster_size(),
    // and the snapshot/bitmap/resize calls fail with qemu-img's words.
    //
    // The format can have a backing file.
    bool supports_backing = false;
    // The format can store compressed clusters (`convert -c`).
    bool supports_compression = false;
    // `qemu-img check` can check it (BlockNode::check); otherwise "This
    // image format does not support checks", exit status 63.
    bool supports_check = false;
    // Internal snapshots (`qemu-img snapshot`, `convert -l`, `measure -l`);
    // without them, what the node's snapshot calls answer (QEMU's words for
    // a format without bdrv_snapshot_*).
    bool supports_snapshots = false;
    // Persistent dirty bitmaps (`qemu-img bitmap`, `convert --bitmaps`);
    // whether one image can hold them is BlockNode::supports_persistent_bitmaps().
    bool supports_bitmaps = false;
    // A format that is only ever read (dmg, bochs, cloop; QEMU's
    // bdrv_apply_auto_read_only): opening it for writing fails with
    // `read_only_reason`, or "Image is read-only".
    bool read_only = false;
    std::string read_only_reason;
    // create_options listed: qemu-img create/convert/measure can make one
    // (otherwise "Format driver 'x' does not support image creation").
    bool can_create() const { return !create_options.empty(); }
    // amend_options listed (otherwise "Format driver 'x' does not support
    // option amendment").
    bool can_amend() const { return !amend_options.empty(); }
    // The permissions the format takes on its protocol child (QEMU's
    // bdrv_child_perm) given its own users' `parent` permissions and its
    // options; nullptr: the child holds metadata and data (QEMU's
    // BDRV_CHILD_IMAGE role), as for qcow2.
    std::function<Perms(const OptionMap &opts, Perms parent, const OpenFlags &flags)> file_child_perms;
    // Options `qemu-img amend -o` accepts (BlockNode::amend); empty: the
    // format "does not support option amendment".
    std::vector<CreateOption> amend_options;
};

void register_driver(const Driver *d);
const Driver *find_driver(std::string_view name);
// All registered drivers, sorted by name.
std::vector<const Driver *> all_drivers();
// The driver record of an open node (by its driver name), or nullptr.
const Driver *driver_of(const BlockNode &node);

// QEMU's path_has_protocol(): a name whose first ':' comes before any '/'
// names a protocol ("nbd://h/x", "file:a", and ":a" with an empty one); the
// prefix before that ':', or nullopt for a plain path.
std::optional<std::string> protocol_prefix(std::string_view filename);
// bdrv_find_protocol(filename, allow_protocol_prefix): plain paths and
// "file:" names are the file driver's (a host device path its device
// driver's); a registered protocol prefix picks that driver; anything else
// fails with "Unknown protocol '<prefix>'". Without `allow_prefix` (a name
// given as an option, not a string) any name is a path.
Result<const Driver *> find_protocol_driver(std::string_view filename, bool allow_prefix = true);

struct DriverRegistrar {
    explicit DriverRegistrar(const Driver *d) { register_driver(d); }
};
#define QIMG_REGISTER_DRIVER(make_fn) \
    static ::qimg::DriverRegistrar QIMG_CONCAT(qimg_driver_registrar_, __LINE__){make_fn()}

}  // namespace qimg
