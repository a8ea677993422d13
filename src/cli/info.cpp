// qemu-img info: the ImageInfo of an image, or of every layer of its backing
// chain (--backing-chain), each layer opened on its own without backing, as
// qemu-img's collect_image_info_list() does.
#include <getopt.h>

#include <cstdio>
#include <set>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "util/qjson.h"

namespace qimg::cli {
namespace {

enum { kOptOutput = 256, kOptBackingChain, kOptObject, kOptImageOpts };

// Returns the ImageInfo list, or an empty optional after reporting.
bool collect_chain(const std::string &top, std::string fmt, bool image_opts, bool chain, bool force_share,
                   nlohmann::ordered_json &list) {
    std::set<std::string> seen;
    std::string filename = top;
    bool have = true;
    while (have) {
        if (!seen.insert(filename).second) {
            error_reportf("Backing file '{}' creates an infinite loop.", filename);
            return false;
        }
        BlockOpener opener;
        ImageOpenArgs a;
        a.format = fmt;
        a.image_opts = image_opts;
        a.force_share = force_share;
        a.no_backing = true;
        a.no_io = true;  // qemu-img info opens with BDRV_O_NO_IO: no "consistent read" lock
        NodePtr node = open_image(opener, filename, a);
        if (!node) return false;
        auto info = collect_image_info(*node);
        if (!info) {
            error_report(info.error().message);
            return false;
        }
        list.push_back(*info);

        // Options of the top image do not apply to the layers below.
        have = false;
        fmt.clear();
        image_opts = false;
        if (chain) {
            if (!node->full_backing_filename().empty()) {
                filename = node->full_backing_filename();
                have = true;
            } else if (!node->backing_filename().empty()) {
                error_reportf("Could not determine absolute backing filename, but backing filename '{}' present",
                              node->backing_filename());
                return false;
            }
            fmt = node->backing_format();
        }
    }
    return true;
}

}  // namespace

int cmd_info(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"format", required_argument, nullptr, 'f'},
        {"output", required_argument, nullptr, kOptOutput},
        {"backing-chain", no_argument, nullptr, kOptBackingChain},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt;
    const char *output = nullptr;
    bool chain = false, image_opts = false, force_share = false;
    int c;
    while ((c = getopt_long(argc, argv, ":f:hU", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
            break;
        case 'U':
            force_share = true;
            break;
        case kOptOutput:
            output = optarg;
            break;
        case kOptBackingChain:
            chain = true;
            break;
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        }
    }
    if (optind != argc - 1) error_exit("Expecting one image file name");
    std::string filename = argv[optind];

    OutputFormat out = OutputFormat::Human;
    if (output && !parse_output_format(output, out)) return 1;

    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    if (!collect_chain(filename, fmt, image_opts, chain, force_share, list)) return 1;

    if (out == OutputFormat::Human) {
        bool delim = false;
        for (const auto &info : list) {
            if (delim) std::printf("\n");
            delim = true;
            print_image_info_human(info);
        }
    } else {
        std::printf("%s\n", to_qemu_json(chain ? list : list[0]).c_str());
    }
    return 0;
}

}  // namespace qimg::cli
