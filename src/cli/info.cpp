// qemu-img info: the ImageInfo of an image, or of every layer of its backing
// chain (--backing-chain), each layer opened on its own without backing, as
// qemu-img's collect_image_info_list() does.
#include <cstdio>
#include <set>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/printers.h"
#include "util/qjson.h"

namespace qimg::cli {
namespace {

// Returns the ImageInfo list, or an empty optional after reporting.
bool collect_chain(const std::string &top, const SharedOptions &so, bool chain, nlohmann::ordered_json &list) {
    std::set<std::string> seen;
    std::string filename = top;
    std::string fmt = so.format.value_or("");
    bool image_opts = so.image_opts;
    bool have = true;
    while (have) {
        if (!seen.insert(filename).second) {
            error_reportf("Backing file '{}' creates an infinite loop.", filename);
            return false;
        }
        BlockOpener opener;
        ImageOpenArgs a = so.open_args("writeback");
        a.format = fmt;
        a.image_opts = image_opts;
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
    SharedOptions so;
    bool chain = false;
    if (int rc = parse_options(argc, argv, so,
                               kOptFormat | kOptFormatLong | kOptForceShare | kOptOutput | kOptObject | kOptImageOpts,
                               {flag(0, "backing-chain", chain)}))
        return rc;
    std::string filename = one_filename(argc, argv);

    OutputFormat out;
    if (!so.output_format(out)) return 1;

    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    if (!collect_chain(filename, so, chain, list)) return 1;

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
