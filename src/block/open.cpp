// Opening images by name (see open.h): filename syntax, protocol choice,
// format probing and backing chains.
#include "block/open.h"

#include "util/qjson.h"
#include "util/keyval.h"
#include "util/option_map.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <cstdio>
#include <vector>

namespace qimg {
namespace {

constexpr size_t kProbeBytes = 2048;  // as much as QEMU's probing looks at

// Identity of a file for loop detection: device and inode when it exists.
std::string file_identity(const std::string &path) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    return path;
}

Result<void> reject_leftovers(const OptionMap &left, const Driver &d) {
    if (left.empty()) return ok();
    const std::string &k = left.begin()->first;
    if (d.is_protocol) return make_error(EINVAL, "Block protocol '" + d.name + "' doesn't support the option '" + k + "'");
    return make_error(EINVAL, "Block format '" + d.name + "' does not support the option '" + k + "'");
}

// The permissions a root node takes: given by the flags' owner, else what
// blk_new_open() asks for with these flags.
Perms node_perms(const OpenFlags &f) {
    Perms p = f.perms ? *f.perms : root_perms(f.read_write, f.no_io, f.resize, f.no_share);
    if (f.force_share) p.shared = kPermAll;
    return p;
}

// The permissions a format node takes on its protocol child.
Perms file_perms(const Driver &d, const OptionMap &opts, Perms parent, const OpenFlags &f) {
    Perms p = d.file_child_perms ? d.file_child_perms(opts, parent, f)
                                 : child_perms(kRoleImage, parent, f.read_write, f.no_io);
    if (f.force_share) p.shared = kPermAll;  // -U shares everything on every node (force-share=on)
    return p;
}

// QEMU's BDRV_OPT_CACHE_DIRECT / BDRV_OPT_CACHE_NO_FLUSH: node options
// (`cache.direct=on` in --image-opts or json:) that override the -t mode for
// this node and, as in QEMU's inherited options, its children.
Result<void> take_cache_options(OptionMap &opts, OpenFlags &flags) {
    for (auto [key, field] : {std::pair{"cache.direct", &CacheMode::direct}, std::pair{"cache.no-flush", &CacheMode::no_flush}}) {
        auto it = opts.find(key);
        if (it == opts.end()) continue;
        QIMG_ASSIGN(bool on, parse_bool_opt(key, it->second));
        flags.cache.*field = on;
        opts.erase(it);
    }
    return ok();
}

// BDRV_OPT_FORCE_SHARE, a node option (`force-share=on` in --image-opts or
// json:) that, like -U, shares every permission on this node and, as QEMU's
// inherited options, its children; only a read-only node may have it.
Result<void> take_force_share(OptionMap &opts, OpenFlags &flags) {
    if (auto it = opts.find("force-share"); it != opts.end()) {
        QIMG_ASSIGN(flags.force_share, parse_bool_opt("force-share", it->second));
        opts.erase(it);
    }
    if (flags.force_share && flags.read_write)
        return make_error(EINVAL, "force-share=on can only be used with read-only images");
    return ok();
}

ProtocolFilter g_protocol_filter = nullptr;

// A protocol node opened from a name given as a string (its only option
// is that name) whose driver names its nodes itself (Driver::
// refresh_filename): QEMU's bdrv_refresh_filename renames it, and the image
// over it, after what the name stands for ("nbd:unix:s" shows as
// "nbd+unix://?socket=s").
bool names_itself_plainly(const OptionMap &protocol_opts, const std::string &display) {
    if (protocol_opts.size() - protocol_opts.count("driver") != 1) return false;
    auto f = protocol_opts.find("filename");
    if (f == protocol_opts.end() || f->second != display) return false;
    auto d = find_protocol_driver(display);
    return d && (*d)->refresh_filename;
}

// The name such a node gave itself, or `display` when it has none.
std::string self_name(const BlockNode &node, const std::string &display) {
    return node.filename().empty() ? display : node.filename();
}

// The name of a format node of driver `format` over such a protocol node
// named `file_name`: the same, unless that is a json: name (rbd's options),
// which QEMU's bdrv_refresh_filename nests as the format's "file".
std::string name_over(const std::string &format, const std::string &file_name) {
    if (!is_json_filename(file_name)) return file_name;
    auto file = parse_qemu_json(std::string_view(file_name).substr(5));
    if (!file || !file->is_object()) return file_name;
    nlohmann::ordered_json full = nlohmann::ordered_json::object();
    full["driver"] = format;
    full["file"] = std::move(*file);
    return "json:" + to_qemu_json(full, false);
}

}  // namespace

void set_protocol_filter(ProtocolFilter f) { g_protocol_filter = f; }

NodePtr filter_protocol(NodePtr node, const OpenFlags &flags) {
    return g_protocol_filter ? g_protocol_filter(std::move(node), flags) : node;
}

namespace {

// QEMU's bdrv_dirname failing: the protocol of `image` has no directories
// (nbd), so a relative name in it cannot be resolved; its message, or
// nullptr.
const std::string *no_dirname_reason(const std::string &image) {
    if (!protocol_prefix(image)) return nullptr;
    auto d = find_protocol_driver(image);
    return d && !(*d)->no_dirname_reason.empty() ? &(*d)->no_dirname_reason : nullptr;
}

}  // namespace

std::string combine_backing_path(const std::string &image, const std::string &backing) {
    if (backing.empty() || backing[0] == '/' || protocol_prefix(backing)) return backing;
    if (image.rfind("json:", 0) == 0) return backing;
    if (no_dirname_reason(image)) return {};  // info: "(cannot determine actual path)"
    // path_combine keeps the image's protocol prefix ("file:dir/top" gives
    // "file:dir/base"), so the base is opened the way the image was.
    size_t keep = protocol_prefix(image) ? image.find(':') + 1 : 0;
    size_t slash = image.rfind('/');
    if (slash != std::string::npos && slash + 1 > keep) keep = slash + 1;
    return image.substr(0, keep) + backing;
}

std::optional<std::string> resolve_base(const BlockNode &image) {
    const BlockNode *n = &image;
    while (n->file()) n = n->file();
    const std::string &name = n->filename();
    if (name.empty() || is_json_filename(name)) return std::nullopt;
    return name;
}

namespace {

// The file name of a protocol node's options when it was given as a string
// (OpenOptions::file_name_parsed), taken out of them so that
// open_protocol_node parses it; "" when the options carry it literally.
std::string take_parsed_name(OptionMap &opts, const OpenOptions &o) {
    if (!o.file_name_parsed) return {};
    return take_option(opts, "filename").value_or(std::string());
}

}  // namespace

std::string resolve_recorded_name(const BlockNode &image, const std::string &name) {
    if (name.empty() || name[0] == '/' || protocol_prefix(name)) return name;
    std::optional<std::string> base = resolve_base(image);
    return base ? combine_backing_path(*base, name) : std::string();
}

void warn_probed_raw(const std::string &display) {
    std::fprintf(stderr,
                 "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                 "         Automatically detecting the format is dangerous for raw images, write "
                 "operations on block 0 will be restricted.\n"
                 "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                 display.c_str());
}

std::string strip_file_prefix(const std::string &name) {
    std::optional<std::string> prefix = protocol_prefix(name);
    if (!prefix) return name;
    const Driver *d = find_driver(*prefix);
    if (!d || !d->is_protocol || !d->path_after_prefix) return name;
    std::string rest = name.substr(prefix->size() + 1);
    return protocol_prefix(rest) ? "./" + rest : rest;
}

Result<NodePtr> BlockOpener::open_protocol_node(const std::string &filename, const OptionMap &in,
                                                const OpenFlags &flags_in, bool with_backing) {
    OptionMap opts = in;
    // Only a name given as a string is parsed, for a protocol prefix and by
    // its driver; one given as an option is taken literally (QEMU's
    // parse_filename).
    const bool from_string = !filename.empty() && !opts.count("filename");
    if (from_string) opts["filename"] = strip_file_prefix(filename);
    OpenFlags flags = flags_in;
    QIMG_TRY(take_cache_options(opts, flags));
    QIMG_TRY(take_force_share(opts, flags));
    std::string drv_name;
    if (auto it = opts.find("driver"); it != opts.end()) {
        drv_name = it->second;
        opts.erase(it);
    }
    const Driver *d = nullptr;
    if (drv_name.empty()) {
        QIMG_ASSIGN(d, find_protocol_driver(opts["filename"], from_string || !opts.count("filename")));
    } else {
        d = find_driver(drv_name);
        if (!d) return make_error(EINVAL, "Unknown driver '" + drv_name + "'");
    }
    if (!d || !d->open) return make_error(EINVAL, "Unknown driver '" + drv_name + "'");
    if (!d->is_protocol) {
        // A format where a child node is expected (file.driver=raw,
        // data-file.driver=raw): QEMU opens any node there; it gets its own
        // protocol child from its "file." options.
        const bool name_to_child = from_string && !opts.count("file.filename");
        if (name_to_child) opts["file.filename"] = opts["filename"];
        opts.erase("filename");
        opts["driver"] = drv_name;
        OpenOptions o;
        o.flags = flags;
        o.file_name_parsed = name_to_child;
        o.flags.no_backing = o.flags.no_backing || !with_backing;
        o.warn_probed_raw = false;
        // A filter's format child is named after its file, so that its
        // backing file is found next to it.
        std::string display = filename;
        if (display.empty() && with_backing && opts.count("file.filename")) display = opts["file.filename"];
        return open_options(std::move(opts), display, o, 1);
    }
    std::optional<std::string> unparsed;
    if (d->parses_filename && !from_string) {
        if (auto it = opts.find("filename"); it != opts.end()) {
            unparsed = it->second;
            opts.erase(it);
        }
    }
    OpenRequest req;
    req.filename = opts["filename"];
    req.name_is_string = from_string;
    req.options = opts;
    req.flags = flags;
    req.opener = this;
    QIMG_ASSIGN(NodePtr node, d->open(req));
    req.options.erase("filename");
    if (unparsed) req.options["filename"] = *unparsed;
    QIMG_TRY(reject_leftovers(req.options, *d));
    // Filters (blkdebug) over a child already have it filtered below them.
    if (node->children().empty()) node = filter_protocol(std::move(node), flags);
    return node;
}

Result<NodePtr> BlockOpener::open_protocol(const std::string &filename, const OptionMap &in, const OpenFlags &flags,
                                           unsigned role) {
    QIMG_ASSIGN(NodePtr node, open_protocol_node(filename, in, flags));
    // With perms set, the caller is a format node opening a child (a qcow2
    // data file) in `role`. Without, the node is a root.
    Perms p = flags.perms ? child_perms(role, *flags.perms, flags.read_write, flags.no_io) : node_perms(flags);
    if (flags.force_share) p.shared = kPermAll;
    QIMG_TRY(node->set_perm(p));
    return node;
}

namespace {

using Json = nlohmann::ordered_json;
using TypedOptions = std::map<std::string, Json>;

// QEMU's bdrv_refresh_filename() for a node opened from the user's options
// (`given`, flattened, this node's under `prefix`): its full options are
// "driver", "filename", its driver's strong options and its children's
// (not the backing file's); it is named by a plain name when its driver
// gives one or, without strong options, by its file child's, else as
// "json:" and those options in QDict order.
struct Refreshed {
    Json full = Json::object();
    std::string exact;
};

Refreshed refresh_filename(const BlockNode &node, const TypedOptions &given, const std::string &prefix) {
    Refreshed r;
    const Driver *d = driver_of(node);
    bool strong = false;
    auto take = [&](const std::string &key, bool counts) {
        if (key.ends_with('.')) {
            // A list or dict option ("inject-error."): its flattened keys,
            // as QEMU's append_strong_runtime_options keeps them.
            const std::string p = prefix + key;
            for (auto it = given.lower_bound(p); it != given.end() && it->first.starts_with(p); ++it) {
                r.full[it->first.substr(prefix.size())] = it->second;
                strong = strong || counts;
            }
            return;
        }
        auto it = given.find(prefix + key);
        if (it == given.end()) return;
        r.full[key] = it->second;
        strong = strong || counts;
    };
    take("driver", false);
    take("filename", false);
    if (d) {
        for (const std::string &opt : d->strong_options) take(opt, true);
    }
    if (!r.full.contains("driver")) r.full["driver"] = std::string(node.driver_name());
    bool has_file = false;
    std::string file_exact;
    for (const BlockChild &c : node.children()) {
        if (c.kind == ChildKind::Backing || !c.node) continue;
        Refreshed child = refresh_filename(*c.node, given, prefix + c.name + ".");
        r.full[c.name] = std::move(child.full);
        if (c.kind == ChildKind::File) {
            has_file = true;
            file_exact = std::move(child.exact);
        }
    }
    if (d && d->refresh_filename) {
        r.exact = d->refresh_filename(r.full, file_exact);
    } else if (has_file) {
        // A filter is never named after its child (QEMU: only a format
        // node over a protocol is).
        if (!strong && !(d && d->is_filter)) r.exact = file_exact;
    } else if (auto f = given.find(prefix + "filename"); f != given.end() && f->second.is_string()) {
        r.exact = f->second.get<std::string>();
    }
    return r;
}

}  // namespace

std::string refreshed_filename(const BlockNode &node, const std::map<std::string, nlohmann::ordered_json> &given) {
    Refreshed r = refresh_filename(node, given, "");
    return r.exact.empty() ? "json:" + to_qemu_json(r.full, false) : r.exact;
}

namespace {

// The name QEMU's bdrv_refresh_filename gives the protocol node below an
// image named by options (json:, --image-opts): its driver's own plain name
// (Driver::refresh_filename: http's URL), or its filename while none of its
// strong options is given; "" when it has none. An image's relative backing
// file names are resolved against it (QEMU's bdrv_dirname asks the image's
// file), whatever options the image itself has.
std::string file_plain_name(const OptionMap &opts) {
    auto fn = opts.find("file.filename");
    const Driver *fd = nullptr;
    if (auto d = opts.find("file.driver"); d != opts.end()) {
        fd = find_driver(d->second);
    } else if (fn != opts.end()) {
        auto r = find_protocol_driver(fn->second);
        if (r) fd = *r;
    }
    if (!fd || !fd->is_protocol) return {};
    nlohmann::ordered_json full = nlohmann::ordered_json::object();
    full["driver"] = fd->name;
    if (fn != opts.end()) full["filename"] = fn->second;
    bool strong = false;
    for (const std::string &k : fd->strong_options) {
        if (auto it = opts.find("file." + k); it != opts.end()) {
            full[k] = it->second;
            strong = true;
        }
    }
    if (fd->refresh_filename) return fd->refresh_filename(full, {});
    return strong || fn == opts.end() ? std::string() : fn->second;
}

}  // namespace

Result<NodePtr> BlockOpener::open_image(const std::string &filename, const OpenOptions &o) {
    // QEMU's bdrv_open_inherit: sharing every permission (-U) is only safe
    // for a reader; a writer must hold its image exclusively.
    if (o.flags.force_share && o.flags.read_write)
        return make_error(EINVAL, "force-share=on can only be used with read-only images");
    OptionMap opts;
    // The options as the user typed them, for the name the opened node shows.
    TypedOptions given;
    std::string display = filename;
    if (o.image_opts) {
        QIMG_ASSIGN(opts, parse_image_opts(filename));
    } else if (is_json_filename(filename)) {
        QIMG_ASSIGN(nlohmann::ordered_json tree, parse_json_filename_tree(filename));
        opts = flatten_json_options(tree);
        given = flatten_json_typed(tree);
    } else {
        // The image is named after its file: "file:x" shows as "x".
        display = strip_file_prefix(filename);
        opts["file.filename"] = display;
    }
    OpenOptions oo = o;
    oo.file_name_parsed = !o.image_opts && !is_json_filename(filename);
    for (const auto &[k, v] : o.extra) opts[k] = v;
    // -U is the root's force-share=on, over what json: says (qemu-img's
    // img_open_file; --image-opts conflicts are the CLI's to report).
    if (o.flags.force_share) opts["force-share"] = "on";
    if (!o.format.empty()) {
        auto it = opts.find("driver");
        if (it != opts.end() && it->second != o.format)
            return make_error(EINVAL, "Cannot specify both a format and a driver option");
        opts["driver"] = o.format;
    }
    if (o.image_opts) {
        // A plain "driver=X,file.filename=Y" names the image by its file.
        auto f = opts.find("file.filename");
        if (f != opts.end()) display = f->second;
    } else if (is_json_filename(filename)) {
        auto f = opts.find("file.filename");
        bool simple = f != opts.end() && std::all_of(opts.begin(), opts.end(), [](const auto &kv) {
                          // Locking and caching do not change what the image is
                          // (QEMU: not strong options).
                          static const std::set<std::string, std::less<>> kWeak = {
                              "driver",       "file.driver",        "file.filename",    "file.locking",
                              "cache.direct", "cache.no-flush",     "file.cache.direct", "file.cache.no-flush"};
                          return kWeak.count(kv.first) != 0;
                      });
        if (simple) display = f->second;
    }
    // Otherwise the image is named by its options, but its file may still
    // have a plain name for relative backing names to follow (the image's
    // own name is refreshed below). With backing options given, the name
    // stays as typed.
    const bool backing_opts = std::any_of(opts.begin(), opts.end(), [](const auto &kv) {
        return kv.first == "backing" || kv.first.starts_with("backing.");
    });
    if ((o.image_opts || is_json_filename(filename)) && display == filename && !backing_opts) {
        if (std::string n = file_plain_name(opts); !n.empty()) display = n;
    }
    if (o.image_opts || is_json_filename(filename)) {
        for (const auto &[k, v] : opts) given.try_emplace(k, v);  // -f, extra options: strings
    }
    // A child given by reference to an existing node (a string where the
    // child's options belong, e.g. the implied key of --image-opts):
    // qemu-img has no other nodes to find.
    if (auto f = opts.find("file"); f != opts.end())
        return make_error(EINVAL, "Cannot find device='" + f->second + "' nor node-name='" + f->second + "'");
    chain_names_.clear();
    depth_ = 0;
    QIMG_ASSIGN(NodePtr node, open_options(std::move(opts), display, oo, 0));
    // With the backing file overridden QEMU names the backing options too;
    // those names keep what the user typed.
    const bool backing_given = std::any_of(given.begin(), given.end(), [](const auto &kv) {
        return kv.first == "backing" || kv.first.starts_with("backing.");
    });
    if (!given.empty() && !backing_given) node->set_filename(refreshed_filename(*node, given));
    return node;
}

Result<NodePtr> BlockOpener::open_options(OptionMap opts, const std::string &display, const OpenOptions &o_in,
                                          int depth) {
    if (depth > depth_limit) return make_error(EINVAL, "Backing chain too deep");
    OpenOptions o = o_in;
    QIMG_TRY(take_cache_options(opts, o.flags));
    QIMG_TRY(take_force_share(opts, o.flags));
    std::string fmt;
    if (auto it = opts.find("driver"); it != opts.end()) {
        fmt = it->second;
        opts.erase(it);
    }
    const Driver *fd = nullptr;
    if (!fmt.empty()) {
        fd = find_driver(fmt);
        if (!fd) return make_error(EINVAL, "Unknown driver '" + fmt + "'");
        if (fd->is_protocol) {
            // A protocol used directly as the image (e.g. -f file).
            OptionMap popts = opts;
            popts["driver"] = fmt;
            for (auto it = popts.begin(); it != popts.end();) {
                if (it->first.rfind("file.", 0) == 0) {
                    popts[it->first.substr(5)] = it->second;
                    it = popts.erase(it);
                } else {
                    ++it;
                }
            }
            const bool plain = names_itself_plainly(popts, display);
            QIMG_ASSIGN(NodePtr n, open_protocol_node(take_parsed_name(popts, o), popts, o.flags));
            QIMG_TRY(n->set_perm(node_perms(o.flags)));
            n->set_filename(plain ? self_name(*n, display) : display);
            return n;
        }
    }

    OptionMap file_opts = extract_prefix(opts, "file");
    // A filter's child is opened as its options say, with its backing chain
    // (QEMU's bdrv_open_file_child of an is_filter driver).
    const bool filter = fd && fd->is_filter;
    // No file child named: QEMU never opens one from a "filename" beside
    // the format's options.
    if (file_opts.empty())
        return make_error(EINVAL, fmt.empty() ? "Must specify either driver or file"
                                              : "A block device must be specified for \"file\"");
    const bool plain = names_itself_plainly(file_opts, display);
    // Unlocked until the format is known (QEMU probes before it attaches
    // the file to its format node).
    QIMG_ASSIGN(NodePtr file, open_protocol_node(take_parsed_name(file_opts, o), file_opts, o.flags, filter));
    const std::string shown = plain ? self_name(*file, display) : display;

    bool probed = false;
    if (!fd) {
        std::vector<uint8_t> head(kProbeBytes, 0);
        size_t n = static_cast<size_t>(std::min<uint64_t>(kProbeBytes, file->length()));
        // QEMU's find_image_format: the protocol's own message (a
        // network error) is its business; this one names the errno.
        if (auto r = file->read(0, head.data(), n); !r)
            return errno_error(r.error().code, "Could not read image for determining its format");
        // As QEMU: the probes see the whole buffer, zeroes past the end of
        // a short file (cloop's compares only as much of its magic as the
        // buffer holds), and an empty file is raw without asking them.
        if (n == 0) {
            fd = find_driver("raw");
        } else {
            int best = 0;
            for (const Driver *d : all_drivers()) {
                if (d->is_protocol || !d->probe) continue;
                int score = d->probe(head, shown);
                if (score > best) {
                    best = score;
                    fd = d;
                }
            }
        }
        if (!fd) return make_error(EINVAL, "Could not determine image format: No format matched");
        probed = true;
    }
    if (!fd->open) return make_error(EINVAL, "Unknown driver '" + fd->name + "'");
    // A format that is only read (QEMU's bdrv_apply_auto_read_only without
    // auto-read-only, which qemu-img never sets).
    if (fd->read_only && o.flags.read_write)
        return make_error(EACCES, fd->read_only_reason.empty() ? "Image is read-only" : fd->read_only_reason);

    if (probed && fd->name == "raw" && o.flags.read_write && o.warn_probed_raw) warn_probed_raw(shown);

    if (depth == 0) chain_names_.push_back(file_identity(file->filename()));
    const Perms perms = node_perms(o.flags);
    QIMG_TRY(file->set_perm(file_perms(*fd, opts, perms, o.flags)));
    OpenRequest req;
    req.filename = shown;
    req.options = std::move(opts);
    req.flags = o.flags;
    req.flags.perms = perms;
    req.file = file;
    req.opener = this;
    if (probed) req.options["x-probed"] = "on";
    QIMG_ASSIGN(NodePtr node, fd->open(req));
    req.options.erase("x-probed");
    node->set_file(node->file() ? node->file_ptr() : file);
    node->set_filename(plain ? name_over(fd->name, shown) : shown);
    node->set_read_only(!o.flags.read_write);
    if (fd->supports_backing) QIMG_TRY(open_recorded_backing(*node, req));
    QIMG_TRY(reject_leftovers(req.options, *fd));
    return node;
}

// The backing file a format records (BlockNode::set_backing_names), or the
// one "backing.*" options name even when the image records none (QEMU's
// bdrv_open_backing_file). Without a backing chain (info) those options are
// left over and refused, as in QEMU.
Result<void> BlockOpener::open_recorded_backing(BlockNode &node, OpenRequest &req) {
    if (req.flags.no_backing) return ok();
    OptionMap backing_opts = extract_prefix(req.options, "backing");
    if (node.backing_filename().empty() && backing_opts.empty()) return ok();
    QIMG_ASSIGN(NodePtr b, open_backing(node, node.backing_filename(), node.backing_format(), req.flags, backing_opts));
    node.set_backing(std::move(b));
    return ok();
}

Result<void> BlockOpener::check_implicit(const BlockNode &parent, const std::string &recorded,
                                         const std::string &resolved, const std::string &what) const {
    if (!implicit_open) return Err(implicit_open.error());
    ImplicitName n;
    // The directory that confines is the one of the file holding the image.
    n.image = parent.file() ? parent.file()->filename() : parent.filename();
    n.recorded = recorded;
    n.resolved = resolved;
    n.what = what;
    return check_implicit_open(*implicit_open, n);
}

Result<NodePtr> BlockOpener::open_child(BlockNode &parent, const OpenFlags &flags, const ChildSpec &spec) {
    NodePtr node;
    if (!spec.options.empty() && !spec.recorded_with_options) {
        // Named by the user: opened as the options say.
        OpenFlags f = flags;
        QIMG_ASSIGN(node, open_protocol({}, spec.options, f, spec.role));
    } else {
        std::string resolved = spec.relative_to_image
                                   ? strip_file_prefix(resolve_recorded_name(parent, spec.recorded))
                                   : spec.recorded;
        // The recorded name is the node's filename, or its file child's
        // under a format driver: options may not name another.
        auto drv = spec.options.find("driver");
        const Driver *d = drv == spec.options.end() ? nullptr : find_driver(drv->second);
        if (spec.options.count("filename") || (d && !d->is_protocol && spec.options.count("file.filename")))
            return make_error(EINVAL, "Can't specify 'file' and 'filename' options at the same time");
        QIMG_TRY(check_implicit(parent, spec.recorded, resolved, spec.what));
        QIMG_ASSIGN(node, open_protocol(spec.relative_to_image ? resolved : spec.recorded, spec.options, flags,
                                        spec.role));
    }
    parent.attach_child(spec.kind, spec.name, node);
    return node;
}

Result<NodePtr> BlockOpener::open_backing(BlockNode &child, const std::string &name, const std::string &format,
                                          const OpenFlags &flags, const OptionMap &overrides) {
    auto given = overrides.find("file.filename");
    // A "file:" name is stored as given but opened (and shown) without it;
    // a name given as an option is taken literally. Without either, the
    // "backing.*" options alone say what to open (backing.driver=null-co).
    std::string full;
    if (given != overrides.end()) {
        full = given->second;
    } else if (!name.empty()) {
        full = resolve_recorded_name(child, name);
        if (full.empty()) {
            // QEMU's bdrv_dirname, where no file below names a directory.
            const BlockNode *leaf = &child;
            while (leaf->file()) leaf = leaf->file();
            if (const std::string *reason = no_dirname_reason(leaf->filename())) return make_error(EINVAL, *reason);
            return make_error(EINVAL, "Cannot generate a base directory for " + std::string(leaf->driver_name()) +
                                          " nodes");
        }
        full = strip_file_prefix(full);
    }
    // A chain that names a file already in it would recurse forever. A file
    // the options name is opened once more, as QEMU does (no recursion).
    if (given == overrides.end()) {
        auto allowed = check_implicit(child, name, full, "backing file");
        if (!allowed) return Err(allowed.error().prepended("Could not open backing file: "));
    }
    std::string key = file_identity(full);
    if (given == overrides.end() && std::find(chain_names_.begin(), chain_names_.end(), key) != chain_names_.end())
        return make_error(EINVAL, "Backing file '" + full + "' creates a loop in the backing chain");
    chain_names_.push_back(key);
    if (++depth_ > depth_limit) return make_error(EINVAL, "Backing chain too deep");

    OpenOptions o;
    o.format = format;
    o.flags = flags;
    // `flags` are the child's: its permissions decide the backing file's
    // (QEMU's bdrv_default_perms_for_cow). The level named by
    // rw_backing_level is opened read-write, as commit does with its base.
    const Perms parent = node_perms(flags);
    const bool rw = flags.rw_backing_level == 1;
    Perms p = child_perms(kRoleCow, parent, false, flags.no_io);
    if (rw) p.perm |= kPermConsistentRead | kPermWrite;
    if (flags.force_share) p.shared = kPermAll;
    o.flags.read_write = rw;
    o.flags.perms = p;
    o.flags.rw_backing_level = flags.rw_backing_level > 0 ? flags.rw_backing_level - 1 : 0;
    o.warn_probed_raw = false;
    OptionMap opts;
    if (given != overrides.end()) {
        // The options name the file; the header's name plays no part.
    } else if (is_json_filename(full)) {
        QIMG_ASSIGN(opts, parse_json_filename(full));
    } else {
        opts["file.filename"] = full;
        o.file_name_parsed = true;
    }
    for (const auto &[k, v] : overrides) opts[k] = v;
    if (!format.empty() && !overrides.count("driver")) opts["driver"] = format;
    auto r = open_options(std::move(opts), full, o, depth_);
    if (!r) return Err(r.error().prepended("Could not open backing file: "));  // QEMU's bdrv_open_backing_file
    return r;
}

Result<void> BlockOpener::create_protocol(const std::string &filename, uint64_t size, Prealloc prealloc) {
    CreateRequest req;
    req.filename = filename;
    req.size = size;
    req.options["preallocation"] = std::string(prealloc_name(prealloc));
    return create_protocol(req);
}

Result<void> BlockOpener::create_protocol(CreateRequest &req) {
    req.opener = this;
    QIMG_ASSIGN(const Driver *d, find_protocol_driver(req.filename));
    if (!d->create) return make_error(ENOTSUP, "Protocol driver '" + d->name + "' does not support image creation");
    return d->create(req);
}

std::string real_path(const std::string &p) {
    char buf[PATH_MAX];
    return ::realpath(p.c_str(), buf) ? std::string(buf) : p;
}

BlockNode *find_backing_image(BlockNode &top, const std::string &name) {
    for (BlockNode *p = &top; p->backing(); p = p->backing()) {
        BlockNode *b = p->backing();
        if (p->backing_filename() == name) return b;
        if (real_path(strip_file_prefix(resolve_recorded_name(*p, name))) == real_path(b->filename())) return b;
    }
    return nullptr;
}

}  // namespace qimg
