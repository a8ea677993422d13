// qimg's entry point: qemu-img's global options (-h, -V, -T) and dispatch to
// one function per subcommand (cli/<name>.cpp).
#include <getopt.h>

#include <cstdio>
#include <cstring>
#include <string_view>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/version.h"
#include "block/implicit_open.h"
#include "util/progname.h"

namespace {

struct Command {
    const char *name;
    int (*fn)(int, char **);
};

constexpr Command kCommands[] = {
    {"amend", qimg::cli::cmd_amend},       {"bench", qimg::cli::cmd_bench},
    {"bitmap", qimg::cli::cmd_bitmap},     {"check", qimg::cli::cmd_check},
    {"commit", qimg::cli::cmd_commit},     {"compare", qimg::cli::cmd_compare},
    {"convert", qimg::cli::cmd_convert},   {"create", qimg::cli::cmd_create},
    {"dd", qimg::cli::cmd_dd},             {"info", qimg::cli::cmd_info},
    {"map", qimg::cli::cmd_map},           {"measure", qimg::cli::cmd_measure},
    {"snapshot", qimg::cli::cmd_snapshot}, {"rebase", qimg::cli::cmd_rebase},
    {"resize", qimg::cli::cmd_resize},
};

}  // namespace

int main(int argc, char **argv) {
    using namespace qimg::cli;
    // Messages name the program by its basename, whatever path it was run
    // by, as qemu-img's error_init() does: libvirt and ironic run it by
    // absolute path and show its messages to their users.
    if (argc > 0 && argv[0] && *argv[0]) {
        const char *slash = std::strrchr(argv[0], '/');
        g_argv0 = slash ? slash + 1 : argv[0];
    }
    qimg::set_program_name(g_argv0);
    // stdout keeps stdio's default buffering, as qemu-img's: line-buffered
    // on a terminal, block-buffered into a pipe or file (map on a
    // many-extent image writes hundreds of thousands of lines).

    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, 'V'},
        {"trace", required_argument, nullptr, 'T'},
        {"implicit-open", required_argument, nullptr, 'I'},
        {nullptr, 0, nullptr, 0},
    };
    // qimg's policy for files images name (block/implicit_open.h): the
    // environment's, unless --implicit-open says otherwise below. A bad
    // value stops every command rather than falling back to 'follow'.
    bool policy_given = false;
    if (argc < 2) error_exit("Not enough arguments");
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:hVT:", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'V':
            std::fputs(version_text().c_str(), stdout);
            return 0;
        case 'I': {
            auto p = qimg::parse_implicit_open(optarg);
            if (!p) error_exit(p.error().message);
            qimg::set_implicit_open_policy(*p);
            policy_given = true;
            break;
        }
        case 'T':
            // Tracing is QEMU-internal; accepted for compatibility, and like
            // qemu-img with an unknown event, it only warns.
            warn_report(std::string("trace event '") + optarg + "' does not exist");
            break;
        }
    }
    if (optind >= argc) error_exit("Not enough arguments");
    if (!policy_given) {
        auto p = qimg::implicit_open_policy();
        if (!p) error_exit(p.error().message);
    }
    const char *name = argv[optind];
    for (const Command &cmd : kCommands) {
        if (std::strcmp(cmd.name, name) == 0) {
            // The subcommand sees argv starting at its own name, and parses
            // its options with a fresh getopt state.
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0;
            return cmd.fn(sub_argc, sub_argv);
        }
    }
    error_exitf("Command not found: {}", name);
}
