// What every subcommand shares: qemu-img's message conventions
// ("<argv0>: message"), getopt error reporting, --object, opening
// images with qemu-img's error prefix, and the --output switch.
#pragma once

#include <fmt/format.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "block/open.h"
#include "util/keyval.h"

namespace qimg::cli {

// The program name as invoked (argv[0] of the process), used as the prefix
// of every message, like qemu-img's error_report().
extern std::string g_argv0;

void error_report(std::string_view msg);
template <class... Args>
void error_reportf(fmt::format_string<Args...> f, Args &&...args) {
    error_report(fmt::format(f, std::forward<Args>(args)...));
}
// "<argv0>: warning: msg"
void warn_report(std::string_view msg);

// Prints "<argv0>: msg" and "Try 'qemu-img --help' for more information",
// exit status 1 (qemu-img's error_exit).
[[noreturn]] void error_exit(std::string_view msg);
template <class... Args>
[[noreturn]] void error_exitf(fmt::format_string<Args...> f, Args &&...args) {
    error_exit(fmt::format(f, std::forward<Args>(args)...));
}

// Ends the progress meter (util/progress.h), then reports `msg`; returns 1,
// the exit status, for commands that fail while the meter runs.
int fail_progress(std::string_view msg);

// The full `qemu-img --help` text; exits 0.
[[noreturn]] void print_help();

// Reports a getopt_long failure the way qemu-img does: for c == '?',
// "unrecognized option '<arg>'"; for c == ':', "missing argument for option
// '<arg>'"; then the --help hint, exit 1. Call with the value getopt returned.
[[noreturn]] void getopt_error(int c, char **argv);

// The optstring prefix every subcommand uses (":" so that getopt reports
// nothing itself), and the long options all of them accept.
inline constexpr const char *kOptPrefix = ":";

// --object as user_creatable_process_cmdline(), when the option is seen: a
// bad definition (syntax, members, a secret that cannot be loaded, a
// duplicate id) is reported and exits with `fail_status` (1; compare uses
// 2), "help" prints the help and exits 0. Secrets go to
// SecretStore::global() (util/secret.h), where drivers look them up.
void process_object_option(const char *arg, int fail_status = 1);

// The format driver named `fmt` when it can do what `can` asks; otherwise
// reports "Unknown file format '<fmt>'" or "Format driver '<fmt>' does not
// support <what>" and returns nullptr.
const Driver *find_format_that(std::string_view fmt, bool (Driver::*can)() const, std::string_view what);

// --output=human|json.
enum class OutputFormat { Human, Json };
// Parses the --output argument; on error reports qemu-img's message and
// returns false.
bool parse_output_format(std::string_view arg, OutputFormat &out);

// Opens an image as qemu-img's img_open does: on failure prints
// "<argv0>: Could not open '<name>': <reason>" and returns nullptr.
struct ImageOpenArgs {
    std::string format;      // -f
    bool image_opts = false; // --image-opts
    bool writable = false;
    bool force_share = false;
    bool no_backing = false;
    std::string cache = "writeback";  // -t / -T mode name
    bool quiet = false;
    // qemu-img's BDRV_O_NO_IO / BDRV_O_RESIZE / BDRV_O_NO_SHARE: they decide
    // the permissions taken and so the image locks (see OpenFlags).
    bool no_io = false;
    bool resize = false;
    bool no_share = false;
    bool check = false;        // OpenFlags::check (qemu-img check)
    int rw_backing_level = 0;  // OpenFlags::rw_backing_level
    // Options merged over the image's own (OpenOptions::extra): convert
    // hands a created target its -o ...key-secret values, as qemu-img's
    // img_add_key_secrets does, so an encrypted target can be opened.
    OptionMap extra;
};
NodePtr open_image(BlockOpener &opener, const std::string &filename, const ImageOpenArgs &a);

// The page-cache budget of a copying command (convert, dd, commit, rebase)
// without --write-behind: engine::default_write_behind(), sized from the
// memory the process may fill; QIMG_WRITE_BEHIND_MIB (MiB, 0 = off), the
// benchmarks' knob, overrides it. With QIMG_DEBUG_WRITE_BEHIND set, says on
// stderr what it chose and from what.
uint64_t default_write_behind();

// -l of convert and measure: QEMU's internal_snapshot_opts
// ("snapshot.id=ID,snapshot.name=NAME", a QemuOpts list that also takes an
// "id=") or a plain string that is a snapshot id or name. Of several -l the
// last of each kind is kept, and the option form wins over a plain one.
class SnapshotSelector {
public:
    // One -l argument. On a bad option list reports qemu-img's messages (or
    // prints the option help for "help") and returns false: exit 1.
    bool parse(const char *arg);
    bool empty() const { return !has_opts_ && !plain_; }
    bool has_opts() const { return has_opts_; }
    // QEMU's bdrv_snapshot_load_tmp (option form) or
    // bdrv_snapshot_load_tmp_by_id_or_name (plain form) on the source.
    Result<void> load(BlockNode &node) const;

private:
    bool has_opts_ = false;
    std::optional<std::string> id_, name_, plain_;
    std::set<std::string> opts_ids_;  // QemuOpts ids seen ("Duplicate ID")
};

// Formats a human size like QEMU's size_to_str ("1 GiB").
std::string human_size(uint64_t bytes);

}  // namespace qimg::cli
