// qemu-img convert: option parsing and validation in qemu-img's order and
// wording, source opening, target creation (cli/convert_target.h), and the
// copy itself in engine/copy.h.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "block/create.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "engine/copy.h"
#include "util/keyval.h"
#include "util/progress.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

struct ConvertArgs {
    SharedOptions so;  // -f, -o, -l, -p, -t, -T, -q, -U, --object, --image-opts
    std::optional<std::string> out_fmt_arg;  // -O
    std::string out_fmt, out_baseimg, backing_fmt;
    bool has_out_fmt = false;
    bool compressed = false, copy_range = false, no_in_order = false;
    bool skip_create = false;
    bool tgt_image_opts = false, salvage = false, target_is_zero = false;
    bool bitmaps = false, skip_broken = false, explicit_min_sparse = false;
    int64_t min_sparse = 8, rate_limit = 0;
    CompressOptions compress;  // --compress-level (qimg-only)
    std::unique_ptr<progress::JsonStream> json_progress;  // --progress-fd/-file (qimg-only)
    long coroutines = 0;  // -m; 0: the engine's default_in_flight()
    int64_t write_behind = -1;  // --write-behind (qimg-only); -1: default_write_behind()
    bool azure = false;  // --azure (qimg-only): a fixed VHD of a whole number of MiB
};

// --azure: Azure takes only fixed VHDs whose virtual size is a whole number
// of MiB. It stands for -O vpc -o subformat=fixed,force_size=on with the
// size rounded up to a MiB (target_spec); qemu-img users do the rounding
// with `resize` first. A long option of convert's own, not a -o option:
// `-o help` and the vpc option list stay qemu-img's.
constexpr uint64_t kAzureAlign = 1 << 20;
bool apply_azure(ConvertArgs &a) {
    const char *msg = nullptr;
    if (a.skip_create) msg = "--azure creates the target: it cannot be used with -n";
    else if (a.out_fmt_arg && *a.out_fmt_arg != "vpc") msg = "--azure writes a VHD: use it with -O vpc or without -O";
    else if (a.so.options && (a.so.options->find("subformat") != std::string::npos ||
                              a.so.options->find("force_size") != std::string::npos))
        msg = "--azure sets subformat and force_size itself";
    if (msg) {
        error_report(msg);
        return false;
    }
    a.out_fmt_arg = "vpc";
    std::string o = a.so.options.value_or("");
    a.so.options = (o.empty() ? "" : o + ",") + "subformat=fixed,force_size=on";
    return true;
}

// qemu_strtol(s, NULL, 0, &v): the whole string must be a number.
bool parse_long(const char *s, long &out) {
    if (!*s) return false;
    errno = 0;
    char *end = nullptr;
    long v = std::strtol(s, &end, 0);
    if (errno || *end) return false;
    out = v;
    return true;
}

// Returns 1 on a parse error (after reporting).
int parse_args(int argc, char **argv, ConvertArgs &a) {
    auto sparse = [&a](const char *arg) {
        int64_t v;
        if (!parse_number("buffer size for sparse output", arg, v)) return false;
        if (v % 512 != 0 || v / 512 > static_cast<int64_t>(engine::kMaxBufSectors)) {
            error_reportf("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 "
                          "up to {}. Select 0 to disable sparse detection (fully allocates output).",
                          engine::kMaxBufSectors * 512);
            return false;
        }
        a.min_sparse = v / 512;
        a.explicit_min_sparse = true;
        return true;
    };
    auto coroutines = [&a](const char *arg) {
        if (!parse_long(arg, a.coroutines) || a.coroutines < 1 ||
            a.coroutines > static_cast<long>(engine::kMaxInFlight)) {
            error_reportf("Invalid number of coroutines. Allowed number of coroutines is between 1 and {}",
                          engine::kMaxInFlight);
            return false;
        }
        return true;
    };
    auto progress_fd = [&a](const char *arg) {
        long fd = -1;
        if (!parse_long(arg, fd) || fd < 0 || fd > INT32_MAX || fcntl(static_cast<int>(fd), F_GETFD) < 0) {
            error_reportf("Invalid progress fd '{}'", arg);
            return false;
        }
        a.json_progress = std::make_unique<progress::JsonStream>(static_cast<int>(fd), true);
        return true;
    };
    auto progress_file = [&a](const char *arg) {
        int fd = ::open(arg, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            error_reportf("Could not open progress file '{}': {}", arg, std::strerror(errno));
            return false;
        }
        a.json_progress = std::make_unique<progress::JsonStream>(fd, false);
        return true;
    };
    // qimg-only: "fast" (ISA-L deflate when built with it) or a codec level
    // (zlib 1..9, zstd 1..19); default QEMU's output.
    auto compress_level = [&a](const char *arg) {
        long lvl = 0;
        if (std::strcmp(arg, "fast") == 0) {
            a.compress.fast = true;
        } else if (parse_long(arg, lvl) && lvl >= 1 && lvl <= 19) {
            a.compress.level = static_cast<int>(lvl);
        } else {
            error_reportf("Invalid compression level '{}': use 'fast' or a number from 1 to 19", arg);
            return false;
        }
        return true;
    };
    a.so.cache = "unsafe";
    if (int rc = parse_options(argc, argv, a.so,
                               kOptFormat | kOptCreateOptions | kOptSnapshot | kOptProgress | kOptCache | kOptSrcCache |
                                   kOptQuiet | kOptForceShare | kOptObject | kOptImageOpts,
                               {
                                   value('O', nullptr, a.out_fmt_arg),
                                   value('B', nullptr, a.out_baseimg),
                                   flag('C', nullptr, a.copy_range),
                                   flag('c', nullptr, a.compressed),
                                   value('F', nullptr, a.backing_fmt),
                                   action_arg('S', nullptr, sparse),
                                   flag('n', nullptr, a.skip_create),
                                   action_arg('m', nullptr, coroutines),
                                   flag('W', nullptr, a.no_in_order),
                                   number('r', nullptr, "rate limit", a.rate_limit),
                                   flag(0, "target-image-opts", a.tgt_image_opts),
                                   flag(0, "salvage", a.salvage),
                                   flag(0, "target-is-zero", a.target_is_zero),
                                   flag(0, "bitmaps", a.bitmaps),
                                   flag(0, "skip-broken-bitmaps", a.skip_broken),
                                   action_arg(0, "compress-level", compress_level),
                                   action_arg(0, "progress-fd", progress_fd),
                                   action_arg(0, "progress-file", progress_file),
                                   // qimg-only: how much of the target may sit in the page cache
                                   // (0: the kernel decides, as with qemu-img).
                                   number(0, "write-behind", "write-behind size", a.write_behind),
                                   flag(0, "azure", a.azure),
                               }))
        return rc;
    if (a.azure && !apply_azure(a)) return 1;
    a.has_out_fmt = a.out_fmt_arg.has_value();
    a.out_fmt = a.out_fmt_arg.value_or("");
    if (!a.has_out_fmt && !a.tgt_image_opts) {
        a.out_fmt = "raw";
        a.has_out_fmt = true;
    }
    const char *msg = nullptr;
    if (a.skip_broken && !a.bitmaps) msg = "Use of --skip-broken-bitmaps requires --bitmaps";
    else if (a.compressed && a.copy_range) msg = "Cannot enable copy offloading when -c is used";
    else if (a.explicit_min_sparse && a.copy_range) msg = "Cannot enable copy offloading when -S is used";
    else if (a.copy_range && a.salvage) msg = "Cannot use copy offloading in salvaging mode";
    else if (a.tgt_image_opts && !a.skip_create) msg = "--target-image-opts requires use of -n flag";
    else if (a.skip_create && a.so.options) msg = "-o has no effect when skipping image creation";
    else if (a.target_is_zero && !a.skip_create) msg = "--target-is-zero requires use of -n flag";
    if (msg) {
        error_report(msg);
        return 1;
    }
    return 0;
}

// Formats that can store compressed clusters.
bool can_compress(std::string_view fmt) {
    const Driver *d = find_driver(fmt);
    return d && d->supports_compression;
}


// QEMU's convert_check_bitmaps. QEMU walks a node's bitmaps newest first,
// which for bitmaps loaded from an image is the reverse of directory order.
bool check_bitmaps(BlockNode &src, bool skip_broken) {
    if (!src.supports_persistent_bitmaps()) {
        error_report("Source lacks bitmap support");
        return false;
    }
    auto list = src.bitmap_list();
    if (!list) {
        error_report(list.error().message);
        return false;
    }
    for (auto it = list->rbegin(); it != list->rend(); ++it) {
        if (!skip_broken && it->in_use) {
            error_reportf("Cannot copy inconsistent bitmap '{}'", it->name);
            std::fputs("Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it\n", stderr);
            return false;
        }
    }
    return true;
}

// QEMU's convert_copy_bitmaps: each bitmap is added to the target with its
// granularity and state, then filled by a merge from the source.
bool copy_bitmaps(BlockNode &src, BlockNode &dst, bool skip_broken) {
    auto list = src.bitmap_list();
    if (!list) {
        error_report(list.error().message);
        return false;
    }
    for (auto it = list->rbegin(); it != list->rend(); ++it) {
        if (skip_broken && it->in_use) {
            warn_report("Skipping inconsistent bitmap '" + it->name + "'");
            continue;
        }
        BitmapAction add;
        add.kind = BitmapAction::Kind::Add;
        add.name = it->name;
        add.granularity = it->granularity;
        add.node_name = "#block3" + std::to_string(10 + it->name.size() % 90);
        Result<void> r = dst.bitmap_action(add);
        if (r && !it->enabled) {
            BitmapAction dis = add;
            dis.kind = BitmapAction::Kind::Disable;
            r = dst.bitmap_action(dis);
        }
        if (!r) {
            error_reportf("Failed to create bitmap {}: {}", it->name, r.error().message);
            return false;
        }
        BitmapAction merge = add;
        merge.kind = BitmapAction::Kind::Merge;
        merge.src = &src;
        merge.src_name = it->name;
        r = dst.bitmap_action(merge);
        if (!r) {
            error_reportf("Failed to populate bitmap {}: {}", it->name, r.error().message);
            BitmapAction rm = add;
            rm.kind = BitmapAction::Kind::Remove;
            (void)dst.bitmap_action(rm);
            return false;
        }
    }
    return true;
}

class Run {
public:
    Run(int argc, char **argv, ConvertArgs &a) : argc_(argc), argv_(argv), a_(a) {}

    int main() {
        int rc = body();
        if (a_.json_progress) a_.json_progress->finish(rc == 0);
        if (rc == 0) progress::print(100, 0);
        progress::end();
        return rc;
    }

private:
    // Everything after progress init; a non-zero return is the exit code.
    int body() {
        for (int i = 0; i < src_num_; ++i) {
            ImageOpenArgs oa = a_.so.open_args(a_.so.src_cache);
            oa.no_share = !a_.so.force_share;  // qemu-img opens sources with BDRV_O_NO_SHARE
            NodePtr n = open_image(opener_, argv_[optind + i], oa);
            if (!n) return 1;
            total_bytes_ += engine::sector_length(*n);
            sources_.push_back(std::move(n));
        }
        if (!a_.so.snapshot.empty()) {
            if (!a_.so.snapshot.has_opts() && src_num_ > 1) {
                error_report("No support for concatenating multiple snapshot");
                return 1;
            }
            if (auto r = a_.so.snapshot.load(*sources_[0]); !r) {
                error_reportf("Failed to load snapshot: {}", r.error().message);
                return 1;
            }
        }
        ImagePlan plan;
        if (a_.azure && total_bytes_ % kAzureAlign != 0 && !a_.so.quiet)
            std::fprintf(stderr, "%s: note: --azure: virtual size rounded up from %llu to %llu bytes (a whole number of MiB)\n",
                         g_argv0.c_str(), static_cast<unsigned long long>(total_bytes_),
                         static_cast<unsigned long long>(azure_size()));
        if (!a_.skip_create) {
            auto p = plan_image(target_spec());
            if (!p) {
                error_report(p.error().message);
                return 1;
            }
            plan = std::move(*p);
            auto it = plan.options.find("backing_file");
            if (it != plan.options.end()) out_baseimg_ = it->second;
        } else {
            out_baseimg_ = a_.out_baseimg;
        }
        bool target_has_backing = !out_baseimg_.empty();
        if (a_.target_is_zero && target_has_backing) {
            // qemu-img reports this and still exits 0 (its ret is 0 here).
            error_report("Cannot use --target-is-zero when the destination image has a backing file");
            return 0;
        }
        if (src_num_ > 1 && !out_baseimg_.empty()) {
            error_report("Having a backing file for the target makes no sense when concatenating multiple input "
                         "images");
            return 1;
        }
        if (!a_.skip_create && plan.options.count("backing_file") &&
            !plan.options.count("backing_fmt")) {
            error_report("Use of backing file requires explicit backing format");
            return 1;
        }
        if (a_.compressed) {
            if (!a_.skip_create && !can_compress(a_.out_fmt)) {
                error_report("Compression not supported for this file format");
                return 1;
            }
            auto enc = plan.options.find("encryption");
            bool encryption = false;
            if (enc != plan.options.end()) {
                auto b = parse_bool_opt("encryption", enc->second);
                encryption = b && *b;
            }
            if (encryption || plan.options.count("encrypt.format")) {
                error_report("Compression and encryption not supported at the same time");
                return 1;
            }
            auto pre = plan.options.find("preallocation");
            if (pre != plan.options.end() && pre->second != "off") {
                error_report("Compression and preallocation not supported at the same time");
                return 1;
            }
        }
        if (a_.bitmaps) {
            if (src_num_ > 1) {
                error_report("Copying bitmaps only possible with single source");
                return 1;
            }
            if (!check_bitmaps(*sources_[0], a_.skip_broken)) return 1;
        }
        if (!a_.skip_create) {
            auto r = create_image(opener_, plan, true);
            if (!r) {
                error_reportf("{}: error while converting {}: {}", out_filename_, a_.out_fmt, r.error().message);
                return 1;
            }
        }
        if (!valid_cache_mode(a_.so.cache, false)) return 1;
        ImageOpenArgs ta;
        ta.format = a_.has_out_fmt ? a_.out_fmt : std::string();
        ta.image_opts = a_.skip_create && a_.tgt_image_opts;
        ta.writable = true;
        ta.cache = a_.so.cache;
        ta.quiet = a_.so.quiet;
        // qemu-img's img_add_key_secrets: the secrets of a created target.
        if (!a_.skip_create)
            for (const auto &[k, v] : plan.options)
                if (k.ends_with("key-secret")) ta.extra[k] = v;
        // A target this command created records only names the user gave
        // (-o data_file, -B): opened whatever the implicit-open policy.
        auto policy = opener_.implicit_open;
        if (!a_.skip_create) opener_.implicit_open = ImplicitOpen::Follow;
        NodePtr target = open_image(opener_, out_filename_, ta);
        opener_.implicit_open = policy;
        if (!target) return 1;
        if (a_.bitmaps && !target->supports_persistent_bitmaps()) {
            error_reportf("Format driver '{}' does not support bitmaps", target->driver_name());
            return 1;
        }
        // Like QEMU, only the driver is asked here: an image of a compressing
        // format that cannot compress (qcow2 with a data file) fails its first
        // compressed write ("error while writing at byte N: Operation not
        // supported").
        if (a_.compressed && !can_compress(target->driver_name())) {
            error_report("Compression not supported for this file format");
            return 1;
        }
        if (a_.skip_create && engine::sector_length(*target) < total_bytes_) {
            error_report("output file is smaller than input file");
            return 1;
        }

        engine::CopyOptions o;
        o.in_flight = static_cast<unsigned>(a_.coroutines);
        o.in_order = !a_.no_in_order;
        o.min_sparse = static_cast<uint64_t>(a_.min_sparse);
        o.target_has_backing = target_has_backing;
        if (target_has_backing && !a_.skip_create && target->backing())
            o.target_backing_sectors = static_cast<int64_t>(engine::sector_length(*target->backing()) / engine::kSectorSize);
        o.target_is_zero = a_.target_is_zero ||
                           (!a_.skip_create && a_.min_sparse && !target_has_backing && target->has_zero_init());
        o.copy_offload = a_.copy_range;
        o.salvage = a_.salvage;
        o.quiet = a_.so.quiet;
        o.rate_limit = static_cast<uint64_t>(a_.rate_limit);
        o.write_behind = a_.write_behind >= 0 ? static_cast<uint64_t>(a_.write_behind) : default_write_behind();
        // QEMU's bdi.needs_compressed_writes: a target that stores every
        // cluster compressed (vmdk streamOptimized) is written as with -c.
        if (a_.compressed || target->needs_compressed_writes()) {
            o.compressed = true;
            uint32_t unit = target->compressed_cluster_size();
            o.cluster_sectors = (unit ? unit : target->cluster_size()) / engine::kSectorSize;
            o.compress = a_.compress;
        }
        o.on_progress = [](float p) { progress::print(p, 0); };
        o.on_warning = [](const std::string &w) { warn_report(w); };
        if (auto *js = a_.json_progress.get())
            o.on_bytes = [js](uint64_t done, uint64_t total) { js->update("copy", done, total, done == 0 || done == total); };
        std::vector<BlockNode *> srcs;
        for (auto &s : sources_) srcs.push_back(s.get());
        auto r = engine::copy_images(srcs, *target, o);
        if (!r) {
            if (!r.error().message.empty()) error_report(r.error().message);
            return 1;
        }
        if (a_.bitmaps && !copy_bitmaps(*sources_[0], *target, a_.skip_broken)) return 1;
        r = target->flush();
        if (!r) {
            error_report(r.error().message);
            return 1;
        }
        return 0;
    }

    uint64_t azure_size() const { return (total_bytes_ + kAzureAlign - 1) / kAzureAlign * kAzureAlign; }

    // The target as convert creates it: -O, -o, -B, -F and the sources' size.
    ImageSpec target_spec() const {
        ImageSpec spec;
        spec.format = a_.out_fmt;
        spec.filename = out_filename_;
        if (a_.so.options && !a_.so.options->empty()) spec.options = a_.so.options;
        spec.size = a_.azure ? azure_size() : total_bytes_;
        if (!a_.out_baseimg.empty()) spec.backing_file = a_.out_baseimg;
        if (!a_.backing_fmt.empty()) spec.backing_format = a_.backing_fmt;
        return spec;
    }

public:
    int src_num_ = 0;
    std::string out_filename_;

private:
    int argc_;
    char **argv_;
    ConvertArgs &a_;
    BlockOpener opener_;
    std::vector<NodePtr> sources_;
    uint64_t total_bytes_ = 0;
    std::string out_baseimg_;
};

}  // namespace

int cmd_convert(int argc, char **argv) {
    ConvertArgs a;
    if (parse_args(argc, argv, a)) return 1;
    int src_num = argc - optind - 1;
    std::string out_filename = src_num >= 1 ? argv[argc - 1] : "";
    if (a.so.options && has_help_option(*a.so.options)) {
        if (a.has_out_fmt) return print_create_option_help(src_num >= 1 ? out_filename.c_str() : nullptr, a.out_fmt);
        error_report("Option help requires a format be specified");
        return 1;
    }
    if (src_num < 1) {
        error_report("Must specify image file name");
        return 1;
    }
    if (!valid_cache_mode(a.so.src_cache, true)) return 1;
    progress::init(a.so.progress, 1.0f);
    progress::print(0, 100);
    Run run(argc, argv, a);
    run.src_num_ = src_num;
    run.out_filename_ = out_filename;
    return run.main();
}

}  // namespace qimg::cli
