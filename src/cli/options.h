// The one option layer of the subcommands: each lists its own options as a
// small table (cli::flag/value/action entries) and names the shared ones it
// accepts (SharedOption bits: -f, --image-opts, -U, --object, -t/-T, -q, -p,
// --output, -o, -l); parse_options() runs getopt_long over both with
// qemu-img's conventions and error messages, in command-line order.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cli/common.h"

namespace qimg::cli {

// One option of a subcommand's own table.
struct Option {
    char short_name = 0;              // 0: long only
    const char *long_name = nullptr;  // nullptr: short only
    bool has_arg = false;
    // Called when the option is seen (optarg, or nullptr without argument).
    // false: the subcommand exits with status 1 (the handler has reported).
    std::function<bool(const char *arg)> on_seen;
};

// Sets `dst` when seen.
Option flag(char short_name, const char *long_name, bool &dst);
// Stores the argument in `dst` (the last one given wins).
Option value(char short_name, const char *long_name, std::string &dst);
Option value(char short_name, const char *long_name, std::optional<std::string> &dst);
// Parses the argument with parse_number() (below) into `dst`.
Option number(char short_name, const char *long_name, const char *what, int64_t &dst, int64_t min = 0,
              int64_t max = INT64_MAX);
// Runs `fn` (false: exit 1 after it has reported).
Option action(char short_name, const char *long_name, std::function<bool()> fn);
Option action_arg(char short_name, const char *long_name, std::function<bool(const char *)> fn);

// The options many subcommands share; -h/--help is always accepted.
enum SharedOption : unsigned {
    kOptFormat = 1u << 0,         // -f FMT
    kOptFormatLong = 1u << 1,     // --format FMT as well (check, info, map)
    kOptImageOpts = 1u << 2,      // --image-opts
    kOptForceShare = 1u << 3,     // -U, --force-share
    kOptObject = 1u << 4,         // --object DEF
    kOptCache = 1u << 5,          // -t CACHE
    kOptSrcCache = 1u << 6,       // -T SRC_CACHE
    kOptQuiet = 1u << 7,          // -q
    kOptProgress = 1u << 8,       // -p
    kOptOutput = 1u << 9,         // --output=human|json (checked by output_format())
    kOptCreateOptions = 1u << 10, // -o OPTIONS, several accumulated (accumulate_options)
    kOptSnapshot = 1u << 11,      // -l SNAPSHOT (SnapshotSelector)
};

// The values of the shared options. A subcommand sets the defaults that
// differ (convert's -t is "unsafe") before parsing.
struct SharedOptions {
    std::optional<std::string> format;   // -f; unset: probe
    bool image_opts = false;
    bool force_share = false;
    bool quiet = false;
    bool progress = false;               // false after parsing when -q is given
    std::string cache = "writeback";     // -t
    std::string src_cache = "writeback"; // -T
    std::optional<std::string> output;   // --output, not yet checked
    std::optional<std::string> options;  // -o, accumulated
    SnapshotSelector snapshot;           // -l
    int object_fail_status = 1;          // --object errors (compare: 2)

    // What opening an image with these options asks for: -f, --image-opts,
    // -U, -q and the cache mode `cache` (this->cache or this->src_cache),
    // read-write when `writable`.
    ImageOpenArgs open_args(const std::string &cache_mode, bool writable = false) const;
    // --output as OutputFormat (Human when not given); false after reporting
    // qemu-img's message.
    bool output_format(OutputFormat &out) const;
};

enum class GetoptErrors {
    Qemu,    // qemu-img's "unrecognized option" / "missing argument" and exit 1
    Getopt,  // getopt prints its own message, then the help (measure)
};

// Parses argv (argv[0] the subcommand name) with the shared options of
// `shared` and the subcommand's `own`. -h/--help prints the help and exits.
// Returns 0, or the exit status of a handler that failed.
int parse_options(int argc, char **argv, SharedOptions &s, unsigned shared, std::vector<Option> own,
                  GetoptErrors errors = GetoptErrors::Qemu);

// The one image file name left after the options; otherwise qemu-img's
// "Expecting one image file name" and exit 1.
std::string one_filename(int argc, char **argv);

// "Invalid cache option: X" (-t) or "Invalid source cache option: X" (-T)
// when `mode` is not a cache mode.
std::optional<std::string> cache_mode_error(const std::string &mode, bool source);
// The same reported; false when `mode` is not valid.
bool valid_cache_mode(const std::string &mode, bool source);

// qemu-img's cvtnum_full(name, arg, min, max) on an option argument, its
// warning ("Using a multiplier suffix on hex numbers is deprecated") and
// error reported; false on error.
bool parse_number(std::string_view name, std::string_view arg, int64_t min, int64_t max, int64_t &out);
// cvtnum(): 0 to INT64_MAX.
bool parse_number(std::string_view name, std::string_view arg, int64_t &out);

}  // namespace qimg::cli
