// Report printers shared by the info-like subcommands (see printers.h).
#include "cli/printers.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <fmt/format.h>
#include <fmt/printf.h>

#include "block/create_opts.h"
#include "cli/common.h"
#include "util/keyval.h"
#include "util/qjson.h"
#include "util/size.h"

namespace qimg::cli {

using json = nlohmann::ordered_json;

void qprintf(bool quiet, const std::string &s) {
    if (!quiet) std::fputs(s.c_str(), stdout);
}

json snapshot_info_json(const SnapshotInfo &sn) {
    json j;
    j["id"] = sn.id;
    j["name"] = sn.name;
    j["vm-state-size"] = sn.vm_state_size;
    j["date-sec"] = sn.date_sec;
    j["date-nsec"] = sn.date_nsec;
    j["vm-clock-sec"] = sn.vm_clock_nsec / 1000000000;
    j["vm-clock-nsec"] = sn.vm_clock_nsec % 1000000000;
    if (sn.icount != UINT64_MAX) j["icount"] = sn.icount;
    return j;
}

Result<json> collect_image_info(BlockNode &node) {
    json info;
    info["filename"] = node.filename();
    info["format"] = std::string(node.driver_name());
    if (node.has_driver_info()) info["dirty-flag"] = node.is_dirty();
    if (auto a = node.allocated_size()) info["actual-size"] = *a;
    info["virtual-size"] = node.length();
    if (node.has_driver_info() && node.cluster_size() != 0) info["cluster-size"] = node.cluster_size();
    if (node.encrypted()) info["encrypted"] = true;
    if (!node.backing_filename().empty()) {
        info["backing-filename"] = node.backing_filename();
        if (!node.full_backing_filename().empty()) info["full-backing-filename"] = node.full_backing_filename();
        if (!node.backing_format().empty()) info["backing-filename-format"] = node.backing_format();
    }
    auto sns = node.snapshot_list();
    if (!sns) {
        // qemu treats "no medium" and "not supported" as "no snapshots".
        if (sns.error().code != ENOTSUP && sns.error().code != ENOMEDIUM)
            return make_error(sns.error().code, "Can't list snapshots of device '': " + sns.error().message);
    } else if (!sns->empty()) {
        json list = json::array();
        for (const SnapshotInfo &sn : *sns) list.push_back(snapshot_info_json(sn));
        info["snapshots"] = std::move(list);
    }
    json spec = node.specific_info();
    if (!spec.is_null()) info["format-specific"] = std::move(spec);
    return info;
}

namespace {

std::string scalar_text(const json &v) {
    switch (v.type()) {
    case json::value_t::string: return v.get<std::string>();
    case json::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case json::value_t::number_integer: return std::to_string(v.get<int64_t>());
    case json::value_t::number_unsigned: return std::to_string(v.get<uint64_t>());
    case json::value_t::number_float: return fmt::sprintf("%.17g", v.get<double>());
    default: return {};
    }
}

bool is_composite(const json &v) { return v.is_object() || v.is_array(); }

void dump_qlist(const json &list, int indent);
void dump_qdict(const json &dict, int indent);

void dump_value(const json &v, int indent) {
    if (v.is_object()) {
        dump_qdict(v, indent);
    } else if (v.is_array()) {
        dump_qlist(v, indent);
    } else {
        std::fputs(scalar_text(v).c_str(), stdout);
    }
}

void dump_qlist(const json &list, int indent) {
    int i = 0;
    for (const json &e : list) {
        bool comp = is_composite(e);
        std::printf("%*s[%i]:%c", indent * 4, "", i++, comp ? '\n' : ' ');
        dump_value(e, indent + 1);
        if (!comp) std::putchar('\n');
    }
}

void dump_qdict(const json &dict, int indent) {
    for (const std::string &k : qdict_order(dict)) {
        const json &v = dict.at(k);
        std::string key = k;
        for (char &c : key)
            if (c == '-') c = ' ';
        bool comp = is_composite(v);
        std::printf("%*s%s:%c", indent * 4, "", key.c_str(), comp ? '\n' : ' ');
        dump_value(v, indent + 1);
        if (!comp) std::putchar('\n');
    }
}

}  // namespace

void dump_qobject_human(const json &obj, int indent) { dump_value(obj, indent); }

std::string snapshot_table_header() {
    return fmt::sprintf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
}

std::string snapshot_table_row(const SnapshotInfo &sn) {
    char date[64] = "";
    time_t t = static_cast<time_t>(sn.date_sec);
    struct tm tm;
    if (localtime_r(&t, &tm)) std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = sn.vm_clock_nsec / 1000000000;
    std::string clock = fmt::sprintf("%02d:%02d:%02d.%03d", static_cast<int>(secs / 3600),
                                     static_cast<int>((secs / 60) % 60), static_cast<int>(secs % 60),
                                     static_cast<int>((sn.vm_clock_nsec / 1000000) % 1000));
    std::string icount = sn.icount != UINT64_MAX ? std::to_string(static_cast<int64_t>(sn.icount)) : "";
    return fmt::sprintf("%-9s %-16s %8s%20s%13s%11s", sn.id, sn.name, size_to_str(sn.vm_state_size), date, clock,
                        icount);
}

void print_image_info_human(const json &info) {
    std::string dsize = info.contains("actual-size") ? size_to_str(info["actual-size"].get<uint64_t>()) : "unavailable";
    uint64_t vsize = info["virtual-size"].get<uint64_t>();
    std::printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRId64 " bytes)\ndisk size: %s\n",
                info["filename"].get<std::string>().c_str(), info["format"].get<std::string>().c_str(),
                size_to_str(vsize).c_str(), static_cast<int64_t>(vsize), dsize.c_str());
    if (info.value("encrypted", false)) std::printf("encrypted: yes\n");
    if (info.contains("cluster-size")) std::printf("cluster_size: %s\n", scalar_text(info["cluster-size"]).c_str());
    if (info.value("dirty-flag", false)) std::printf("cleanly shut down: no\n");
    if (info.contains("backing-filename")) {
        std::string b = info["backing-filename"].get<std::string>();
        std::printf("backing file: %s", b.c_str());
        if (!info.contains("full-backing-filename")) {
            std::printf(" (cannot determine actual path)");
        } else if (info["full-backing-filename"].get<std::string>() != b) {
            std::printf(" (actual path: %s)", info["full-backing-filename"].get<std::string>().c_str());
        }
        std::printf("\n");
        if (info.contains("backing-filename-format"))
            std::printf("backing file format: %s\n", info["backing-filename-format"].get<std::string>().c_str());
    }
    if (info.contains("snapshots")) {
        std::printf("Snapshot list:\n%s\n", snapshot_table_header().c_str());
        for (const json &s : info["snapshots"]) {
            SnapshotInfo sn;
            sn.id = s["id"].get<std::string>();
            sn.name = s["name"].get<std::string>();
            sn.vm_state_size = s["vm-state-size"].get<uint64_t>();
            sn.date_sec = s["date-sec"].get<uint32_t>();
            sn.date_nsec = s["date-nsec"].get<uint32_t>();
            sn.vm_clock_nsec = s["vm-clock-sec"].get<uint64_t>() * 1000000000ULL + s["vm-clock-nsec"].get<uint64_t>();
            if (s.contains("icount")) sn.icount = s["icount"].get<uint64_t>();
            std::printf("%s\n", snapshot_table_row(sn).c_str());
        }
    }
    if (info.contains("format-specific")) {
        std::printf("Format specific information:\n");
        const json &spec = info["format-specific"];
        if (spec.contains("data")) dump_qobject_human(spec["data"], 1);
    }
}

json check_report_json(const std::string &filename, std::string_view format, const CheckReport &r) {
    json j;
    j["filename"] = filename;
    j["format"] = std::string(format);
    j["check-errors"] = r.check_errors;
    auto opt = [&j](const char *k, int64_t v) {
        if (v != 0) j[k] = v;
    };
    opt("image-end-offset", r.image_end_offset);
    opt("corruptions", r.corruptions);
    opt("leaks", r.leaks);
    opt("corruptions-fixed", r.corruptions_fixed);
    opt("leaks-fixed", r.leaks_fixed);
    opt("total-clusters", r.total_clusters);
    opt("allocated-clusters", r.allocated_clusters);
    opt("fragmented-clusters", r.fragmented_clusters);
    opt("compressed-clusters", r.compressed_clusters);
    return j;
}

void print_check_human(const CheckReport &r, bool quiet) {
    std::string out;
    if (!(r.corruptions || r.leaks || r.check_errors)) {
        out += "No errors were found on the image.\n";
    } else {
        if (r.corruptions)
            out += fmt::format("\n{} errors were found on the image.\n"
                               "Data may be corrupted, or further writes to the image may corrupt it.\n",
                               r.corruptions);
        if (r.leaks)
            out += fmt::format("\n{} leaked clusters were found on the image.\n"
                               "This means waste of disk space, but no harm to data.\n",
                               r.leaks);
        if (r.check_errors)
            out += fmt::format("\n{} internal errors have occurred during the check.\n", r.check_errors);
    }
    if (r.total_clusters != 0 && r.allocated_clusters != 0) {
        out += fmt::sprintf("%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed "
                            "clusters\n",
                            r.allocated_clusters, r.total_clusters, r.allocated_clusters * 100.0 / r.total_clusters,
                            r.fragmented_clusters * 100.0 / r.allocated_clusters,
                            r.compressed_clusters * 100.0 / r.allocated_clusters);
    }
    if (r.image_end_offset) out += fmt::format("Image end offset: {}\n", r.image_end_offset);
    qprintf(quiet, out);
}

int print_create_option_help(const char *filename, std::string_view fmt) {
    const Driver *drv = find_format_that(fmt, &Driver::can_create, "image creation");
    if (!drv) return 1;
    std::vector<CreateOption> list = merge_create_options(drv->create_options, nullptr);
    if (filename) {
        auto proto = find_protocol_driver(filename);
        if (!proto) {
            error_report(proto.error().message);
            return 1;
        }
        if (!(*proto)->can_create()) {
            error_reportf("Protocol driver '{}' does not support image creation", (*proto)->name);
            return 1;
        }
        list = merge_create_options(drv->create_options, &(*proto)->create_options);
        std::fputs("Supported options:\n", stdout);
    } else {
        std::printf("Supported %.*s options:\n", static_cast<int>(fmt.size()), fmt.data());
    }
    std::fputs(option_help_text(list).c_str(), stdout);
    if (!filename) {
        std::fputs("\nThe protocol level may support further options.\n"
                   "Specify the target filename to include those options.\n",
                   stdout);
    }
    return 0;
}

}  // namespace qimg::cli
