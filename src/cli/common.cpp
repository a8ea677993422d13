// Shared CLI helpers (see common.h).
#include "cli/common.h"

#include <getopt.h>

#include <cstdio>
#include <cstdlib>

#include "block/driver.h"
#include "engine/pipeline.h"
#include "util/memory_room.h"
#include "util/secret.h"
#include "util/size.h"

namespace qimg::cli {

std::string g_argv0 = "qemu-img";

void error_report(std::string_view msg) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %.*s\n", g_argv0.c_str(), static_cast<int>(msg.size()), msg.data());
}

void warn_report(std::string_view msg) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: warning: %.*s\n", g_argv0.c_str(), static_cast<int>(msg.size()), msg.data());
}

void error_exit(std::string_view msg) {
    error_report(msg);
    std::fprintf(stderr, "Try 'qemu-img --help' for more information\n");
    std::exit(1);
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
    Result<void> r = o ? SecretStore::global().add(*o) : Err(o.error());
    if (!r) {
        error_report(r.error().message);
        std::exit(fail_status);
    }
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
    auto cache = parse_cache_mode(a.cache);
    if (!cache) {
        error_reportf("Invalid cache option: {}", a.cache);
        return nullptr;
    }
    o.flags.cache = *cache;
    auto r = opener.open_image(filename, o);
    if (!r) {
        error_reportf("Could not open '{}': {}", filename, r.error().message);
        return nullptr;
    }
    return *r;
}

std::string human_size(uint64_t bytes) { return size_to_str(bytes); }

uint64_t default_write_behind() {
    if (const char *wb = std::getenv("QIMG_WRITE_BEHIND_MIB")) return std::strtoull(wb, nullptr, 10) << 20;
    uint64_t budget = engine::default_write_behind();
    if (std::getenv("QIMG_DEBUG_WRITE_BEHIND")) {
        MemoryRoom room = probe_memory_room();
        auto mib = [](std::optional<uint64_t> v) { return v ? fmt::format("{} MiB", *v >> 20) : std::string("-"); };
        fmt::print(stderr, "write-behind: {} MiB (cgroup limit {}, room {}; MemAvailable {})\n", budget >> 20,
                   mib(room.cgroup_limit), mib(room.cgroup_room), mib(room.mem_available));
    }
    return budget;
}

}  // namespace qimg::cli
