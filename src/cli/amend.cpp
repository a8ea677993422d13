// qemu-img amend: changes format options of an existing image in place
// (BlockNode::amend), validating `-o` against the driver's amend options
// as qemu-img does, with `-o help` listing them.
#include <getopt.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "block/driver.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "util/keyval.h"

namespace qimg::cli {
namespace {

enum { kOptObject = 256, kOptImageOpts, kOptForce };

const char *type_name(CreateOption::Type t) {
    switch (t) {
    case CreateOption::Type::String: return "str";
    case CreateOption::Type::Bool: return "bool (on/off)";
    case CreateOption::Type::Number: return "num";
    case CreateOption::Type::Size: return "size";
    }
    return "str";
}

// qemu_opts_print_help(list, false): one sorted line per option.
void print_option_list(const std::vector<CreateOption> &opts) {
    std::vector<std::string> lines;
    for (const CreateOption &o : opts) {
        std::string s = "  " + o.name + "=<" + type_name(o.type) + ">";
        if (!o.help.empty()) {
            if (s.size() < 24) s.append(24 - s.size(), ' ');
            s += " - " + o.help;
        }
        lines.push_back(std::move(s));
    }
    std::sort(lines.begin(), lines.end());
    for (const std::string &l : lines) std::printf("%s\n", l.c_str());
}

// print_amend_option_help(); returns the exit code.
int print_amend_help(const std::string &format) {
    const Driver *d = find_driver(format);
    if (!d) {
        error_reportf("Unknown file format '{}'", format);
        return 1;
    }
    if (d->amend_options.empty()) {
        error_reportf("Format driver '{}' does not support option amendment", format);
        return 1;
    }
    std::printf("Amend options for '%s':\n", format.c_str());
    print_option_list(d->amend_options);
    return 0;
}

// qemu_opts_do_parse() against `list`: typed validation, QEMU's messages.
Result<std::map<std::string, std::string>> parse_against(const std::string &options,
                                                         const std::vector<CreateOption> &list) {
    QIMG_ASSIGN(OptList kv, parse_opts(options));
    std::map<std::string, std::string> out;
    for (const auto &[k, v] : kv) {
        auto it = std::find_if(list.begin(), list.end(), [&key = k](const CreateOption &o) { return o.name == key; });
        if (it == list.end()) return make_error(EINVAL, "Invalid parameter '" + k + "'");
        switch (it->type) {
        case CreateOption::Type::Bool: QIMG_TRY(parse_bool_opt(k, v)); break;
        case CreateOption::Type::Size: QIMG_TRY(parse_size_opt(k, v)); break;
        case CreateOption::Type::Number: QIMG_TRY(parse_number_opt(k, v)); break;
        case CreateOption::Type::String: break;
        }
        out[k] = v;
    }
    return out;
}

}  // namespace

int cmd_amend(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force", no_argument, nullptr, kOptForce},
        {nullptr, 0, nullptr, 0},
    };
    std::string options, fmt, cache = "writeback";
    bool have_options = false, quiet = false, image_opts = false, force = false;
    int c;
    while ((c = getopt_long(argc, argv, ":ho:f:t:pq", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'o': {
            auto acc = accumulate_options(have_options ? options : std::string(), optarg);
            if (!acc) {
                error_report(acc.error().message);
                return 1;
            }
            options = *acc;
            have_options = true;
            break;
        }
        case 'f':
            fmt = optarg;
            break;
        case 't':
            cache = optarg;
            break;
        case 'p':
            break;  // amend has no long-running work to show for the formats here
        case 'q':
            quiet = true;
            break;
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        case kOptForce:
            force = true;
            break;
        }
    }
    if (!have_options) error_exit("Must specify options (-o)");

    // With -f, help needs no image (and no file name).
    if (!fmt.empty() && has_help_option(options)) return print_amend_help(fmt);
    if (optind != argc - 1) {
        error_report("Expecting one image file name");
        return 1;
    }
    std::string filename = argv[argc - 1];
    if (!parse_cache_mode(cache)) {
        error_reportf("Invalid cache option: {}", cache);
        return 1;
    }

    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt;
    a.image_opts = image_opts;
    a.writable = true;
    a.cache = cache;
    a.quiet = quiet;
    NodePtr node = open_image(opener, filename, a);
    if (!node) return 1;
    std::string format(node->driver_name());

    if (has_help_option(options)) return print_amend_help(format);
    const Driver *d = find_driver(format);
    if (!d || d->amend_options.empty()) {
        error_reportf("Format driver '{}' does not support option amendment", format);
        return 1;
    }
    auto opts = parse_against(options, d->amend_options);
    if (!opts) {
        std::string msg = opts.error().message;
        // An option known to creation only gets QEMU's hint line.
        std::vector<CreateOption> both = d->amend_options;
        both.insert(both.end(), d->create_options.begin(), d->create_options.end());
        if (parse_against(options, both)) msg += "\nThis option is only supported for image creation";
        error_report(msg);
        return 1;
    }
    auto r = node->amend(*opts, force);
    if (!r) {
        error_report(r.error().message);
        return 1;
    }
    return 0;
}

}  // namespace qimg::cli
