// The shared option layer (see options.h): the shared options' table, and
// the one getopt_long loop every subcommand runs.
#include "cli/options.h"

#include <getopt.h>

#include "util/keyval.h"
#include "util/size.h"

namespace qimg::cli {

Option flag(char short_name, const char *long_name, bool &dst) {
    return {short_name, long_name, false, [&dst](const char *) { return dst = true; }};
}

Option value(char short_name, const char *long_name, std::string &dst) {
    return {short_name, long_name, true, [&dst](const char *arg) { return dst = arg, true; }};
}

Option value(char short_name, const char *long_name, std::optional<std::string> &dst) {
    return {short_name, long_name, true, [&dst](const char *arg) { return dst = arg, true; }};
}

Option number(char short_name, const char *long_name, const char *what, int64_t &dst, int64_t min, int64_t max) {
    return {short_name, long_name, true,
            [what, &dst, min, max](const char *arg) { return parse_number(what, arg, min, max, dst); }};
}

Option action(char short_name, const char *long_name, std::function<bool()> fn) {
    return {short_name, long_name, false, [fn = std::move(fn)](const char *) { return fn(); }};
}

Option action_arg(char short_name, const char *long_name, std::function<bool(const char *)> fn) {
    return {short_name, long_name, true, std::move(fn)};
}

namespace {

// The entries of the shared options in `shared`, bound to `s`.
std::vector<Option> shared_table(SharedOptions &s, unsigned shared) {
    std::vector<Option> t;
    t.push_back(action('h', "help", []() -> bool { print_help(); }));
    if (shared & kOptFormat) t.push_back(value('f', (shared & kOptFormatLong) ? "format" : nullptr, s.format));
    if (shared & kOptImageOpts) t.push_back(flag(0, "image-opts", s.image_opts));
    if (shared & kOptForceShare) t.push_back(flag('U', "force-share", s.force_share));
    if (shared & kOptObject)
        t.push_back(action_arg(0, "object", [&s](const char *arg) {
            process_object_option(arg, s.object_fail_status);
            return true;
        }));
    if (shared & kOptCache) t.push_back(value('t', nullptr, s.cache));
    if (shared & kOptSrcCache) t.push_back(value('T', nullptr, s.src_cache));
    if (shared & kOptQuiet) t.push_back(flag('q', nullptr, s.quiet));
    if (shared & kOptProgress) t.push_back(flag('p', nullptr, s.progress));
    if (shared & kOptOutput) t.push_back(value(0, "output", s.output));
    if (shared & kOptCreateOptions)
        t.push_back(action_arg('o', nullptr, [&s](const char *arg) {
            auto acc = accumulate_options(s.options.value_or(""), arg);
            if (!acc) {
                error_report(acc.error().message);
                return false;
            }
            s.options = *acc;
            return true;
        }));
    if (shared & kOptSnapshot) t.push_back(action_arg('l', nullptr, [&s](const char *arg) { return s.snapshot.parse(arg); }));
    return t;
}

}  // namespace

int parse_options(int argc, char **argv, SharedOptions &s, unsigned shared, std::vector<Option> own,
                  GetoptErrors errors) {
    std::vector<Option> table = shared_table(s, shared);
    for (Option &o : own) table.push_back(std::move(o));

    // With a leading ':' getopt reports nothing itself and tells a missing
    // argument (':') from an unknown option ('?').
    std::string shorts = errors == GetoptErrors::Qemu ? ":" : "";
    std::vector<option> longs;
    std::vector<int> vals;  // the value getopt_long returns for table[i]
    for (size_t i = 0; i < table.size(); ++i) {
        const Option &o = table[i];
        int val = o.short_name ? o.short_name : static_cast<int>(256 + i);
        vals.push_back(val);
        if (o.short_name) {
            shorts += o.short_name;
            if (o.has_arg) shorts += ':';
        }
        if (o.long_name) longs.push_back({o.long_name, o.has_arg ? required_argument : no_argument, nullptr, val});
    }
    longs.push_back({nullptr, 0, nullptr, 0});
    if (errors == GetoptErrors::Getopt) opterr = 1;

    int c;
    while ((c = getopt_long(argc, argv, shorts.c_str(), longs.data(), nullptr)) != -1) {
        if (c == '?' || c == ':') {
            if (errors == GetoptErrors::Getopt) print_help();
            getopt_error(c, argv);
        }
        for (size_t i = 0; i < table.size(); ++i) {
            if (vals[i] != c) continue;
            if (!table[i].on_seen(table[i].has_arg ? optarg : nullptr)) return 1;
            break;
        }
    }
    if (s.quiet) s.progress = false;
    return 0;
}

ImageOpenArgs SharedOptions::open_args(const std::string &cache_mode, bool writable) const {
    ImageOpenArgs a;
    a.writable = writable;
    a.format = format.value_or("");
    a.image_opts = image_opts;
    a.force_share = force_share;
    a.cache = cache_mode;
    a.quiet = quiet;
    return a;
}

bool SharedOptions::output_format(OutputFormat &out) const {
    out = OutputFormat::Human;
    return !output || parse_output_format(*output, out);
}

std::string one_filename(int argc, char **argv) {
    if (optind != argc - 1) error_exit("Expecting one image file name");
    return argv[optind];
}

std::optional<std::string> cache_mode_error(const std::string &mode, bool source) {
    if (parse_cache_mode(mode)) return std::nullopt;
    return std::string(source ? "Invalid source cache option: " : "Invalid cache option: ") + mode;
}

bool valid_cache_mode(const std::string &mode, bool source) {
    auto e = cache_mode_error(mode, source);
    if (e) error_report(*e);
    return !e;
}

bool parse_number(std::string_view name, std::string_view arg, int64_t min, int64_t max, int64_t &out) {
    std::string warning;
    auto r = cvtnum_full(name, arg, min, max, g_argv0, &warning);
    if (!warning.empty()) warn_report(warning);
    if (!r) {
        error_report(r.error().message);
        return false;
    }
    out = *r;
    return true;
}

bool parse_number(std::string_view name, std::string_view arg, int64_t &out) {
    return parse_number(name, arg, 0, INT64_MAX, out);
}

}  // namespace qimg::cli
