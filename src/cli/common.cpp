// Shared CLI helpers (see common.h).
#include "cli/common.h"

#include <getopt.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "block/driver.h"
#include "block/object_types.h"
#include "engine/pipeline.h"
#include "util/memory_room.h"
#include "crypto/secret.h"
#include "util/progname.h"
#include "util/progress.h"
#include "util/size.h"

namespace qimg::cli {

std::string g_argv0 = "qemu-img";

void error_report(std::string_view msg) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %.*s\n", g_argv0.c_str(), static_cast<int>(msg.size()), msg.data());
}

void warn_report(std::string_view msg) { report_warning(msg); }

void error_exit(std::string_view msg) {
    error_report(msg);
    std::fprintf(stderr, "Try 'qemu-img --help' for more information\n");
    std::exit(1);
}

int fail_progress(std::string_view msg) {
    progress::end();
    error_report(msg);
    return 1;
}

void getopt_error(int c, char **argv) {
    const char *arg = argv[optind - 1];
    if (c == ':') error_exitf("missing argument for option '{}'", arg);
    // For a glued unknown short option ("-fraw" is fine, "-Zx" is not),
    // getopt leaves optopt set; qemu-img prints the whole argument.
    (void)optopt;
    error_exitf("unrecognized option '{}'", arg);
}

void process_object_option(const char *arg, int fail_status) {
    auto o = parse_object(arg);
    if (o && o->help) {
        std::fputs(object_help(*o).c_str(), stdout);
        std::exit(0);
    }
    Result<void> r = ok();
    if (!o) {
        r = Err(o.error());
    } else if (const ObjectType *t = find_object_type(o->qom_type)) {
        r = t->create(*o, [&o]() -> Result<void> { return SecretStore::global().add(*o); });
    } else {
        r = SecretStore::global().add(*o);
    }
    if (!r) {
        error_report(r.error().message);
        std::exit(fail_status);
    }
}

const Driver *find_format_that(std::string_view fmt, bool (Driver::*can)() const, std::string_view what) {
    const Driver *d = find_driver(fmt);
    if (!d) {
        error_reportf("Unknown file format '{}'", fmt);
        return nullptr;
    }
    if (!(d->*can)()) {
        error_reportf("Format driver '{}' does not support {}", fmt, what);
        return nullptr;
    }
    return d;
}

bool parse_output_format(std::string_view arg, OutputFormat &out) {
    if (arg == "json") {
        out = OutputFormat::Json;
        return true;
    }
    if (arg == "human") {
        out = OutputFormat::Human;
        return true;
    }
    error_report("--output must be used with human or json as argument.");
    return false;
}

NodePtr open_image(BlockOpener &opener, const std::string &filename, const ImageOpenArgs &a) {
    // qemu-img's img_open: -f names a driver, --image-opts carries its own.
    if (a.image_opts && !a.format.empty()) {
        error_report("--image-opts and --format are mutually exclusive");
        return nullptr;
    }
    OpenOptions o;
    o.format = a.format;
    o.image_opts = a.image_opts;
    o.flags.read_write = a.writable;
    o.flags.force_share = a.force_share;
    o.flags.no_backing = a.no_backing;
    o.flags.no_io = a.no_io;
    o.flags.resize = a.resize;
    o.flags.no_share = a.no_share;
    o.flags.check = a.check;
    o.flags.rw_backing_level = a.rw_backing_level;
    o.extra = a.extra;
    auto cache = parse_cache_mode(a.cache);
    if (!cache) {
        error_reportf("Invalid cache option: {}", a.cache);
        return nullptr;
    }
    o.flags.cache = *cache;
    // qemu-img's img_open_opts: -U adds force-share=on to --image-opts,
    // where any other value given is a conflict.
    if (a.force_share && a.image_opts) {
        auto given = parse_image_opts(filename);
        if (given) {
            auto fs = given->find("force-share");
            if (fs != given->end() && fs->second != "on") {
                error_report("--force-share/-U conflicts with image options");
                return nullptr;
            }
        }
    }
    auto r = opener.open_image(filename, o);
    if (!r) {
        error_reportf("Could not open '{}': {}", filename, r.error().message);
        // QEMU's error_report_err prints an error's hint after it (vhdx:
        // how to replay a log).
        if (!r.error().hint.empty()) std::fputs(r.error().hint.c_str(), stderr);
        return nullptr;
    }
    return *r;
}

namespace {

// Parses one "snapshot.…" argument into id/name the way
// qemu_opts_parse_noisily(&internal_snapshot_opts, arg, false) does: the
// first "id=" names the option set and is checked before anything else,
// then the elements in order, stopping at "help" or an unknown key.
bool parse_snapshot_opts(const char *arg, std::set<std::string> &ids, std::optional<std::string> &id,
                         std::optional<std::string> &name) {
    const std::vector<OptItem> items = parse_opt_items(arg);
    auto fail = [&](std::string_view msg) {
        if (!msg.empty()) error_report(msg);
        error_reportf("Failed in parsing snapshot param '{}'", arg);
        return false;
    };
    auto opts_id = std::find_if(items.begin(), items.end(),
                                [](const OptItem &i) { return i.name == "id" && i.flag_warning.empty(); });
    if (opts_id != items.end()) {
        if (!id_wellformed(opts_id->value)) {
            return fail("Parameter 'id' expects an identifier\n"
                        "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
        }
        if (!ids.insert(opts_id->value).second)
            return fail(fmt::format("Duplicate ID '{}' for snapshot", opts_id->value));
    }
    id.reset();
    name.reset();
    for (const OptItem &i : items) {
        if (i.is_help) {
            fail({});
            std::printf("snapshot options:\n"
                        "  snapshot.id=<str>      - snapshot id\n"
                        "  snapshot.name=<str>    - snapshot name\n");
            return false;
        }
        if (!i.flag_warning.empty()) warn_report(i.flag_warning);
        if (i.name == "id") continue;
        if (i.name != "snapshot.id" && i.name != "snapshot.name")
            return fail(fmt::format("Invalid parameter '{}'", i.name));
        (i.name == "snapshot.id" ? id : name) = i.value;  // the last one counts (qemu_opt_get)
    }
    return true;
}

}  // namespace

bool SnapshotSelector::parse(const char *arg) {
    if (!std::string_view(arg).starts_with("snapshot.")) {
        plain_ = arg;
        return true;
    }
    if (!parse_snapshot_opts(arg, opts_ids_, id_, name_)) return false;
    has_opts_ = true;
    return true;
}

Result<void> SnapshotSelector::load(BlockNode &node) const {
    if (has_opts_) return node.snapshot_load_tmp(id_ ? &*id_ : nullptr, name_ ? &*name_ : nullptr);
    // bdrv_snapshot_load_tmp_by_id_or_name: as an id first, then as a name.
    Result<void> r = node.snapshot_load_tmp(&*plain_, nullptr);
    if (!r && (r.error().code == ENOENT || r.error().code == EINVAL)) r = node.snapshot_load_tmp(nullptr, &*plain_);
    return r;
}

std::string human_size(uint64_t bytes) { return size_to_str(bytes); }

uint64_t default_write_behind() {
    if (const char *wb = std::getenv("QIMG_WRITE_BEHIND_MIB")) return std::strtoull(wb, nullptr, 10) << 20;
    uint64_t budget = engine::default_write_behind();
    if (std::getenv("QIMG_DEBUG_WRITE_BEHIND")) {
        // The budget said is the one from the room said (one probe: memory
        // charged between two would make them disagree).
        MemoryRoom room = probe_memory_room();
        budget = engine::write_behind_budget(room);
        auto mib = [](std::optional<uint64_t> v) { return v ? fmt::format("{} MiB", *v >> 20) : std::string("-"); };
        fmt::print(stderr, "write-behind: {} MiB (cgroup limit {}, room {}; MemAvailable {})\n", budget >> 20,
                   mib(room.cgroup_limit), mib(room.cgroup_room), mib(room.mem_available));
    }
    return budget;
}

}  // namespace qimg::cli
