// qemu-img's report printers shared by info, snapshot, check and map: the
// ImageInfo record (JSON in QAPI member order, printed in QDict order by
// to_qemu_json), its human dump (bdrv_image_info_dump), QAPI objects dumped
// as "key: value" trees, the snapshot table and the ImageCheck report.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "block/node.h"

namespace qimg::cli {

// bdrv_query_image_info(): the ImageInfo of one node (its backing chain is
// not followed). Errors are complete messages for error_report().
Result<nlohmann::ordered_json> collect_image_info(BlockNode &node);
// bdrv_image_info_dump(): "image: ...", sizes, backing file lines, the
// snapshot table and "Format specific information:".
void print_image_info_human(const nlohmann::ordered_json &info);
// dump_qobject() of block/qapi.c: a QAPI object as an indented
// "key: value" tree (dashes in keys shown as spaces), QDict member order.
void dump_qobject_human(const nlohmann::ordered_json &obj, int indent);

// bdrv_snapshot_dump(): the table header, and one row (without newline).
std::string snapshot_table_header();
std::string snapshot_table_row(const SnapshotInfo &sn);
nlohmann::ordered_json snapshot_info_json(const SnapshotInfo &sn);

// The ImageCheck record of `qemu-img check --output=json` (members only when
// non-zero, as QEMU's has_* flags), and the human report.
nlohmann::ordered_json check_report_json(const std::string &filename, std::string_view format,
                                         const CheckReport &r);
void print_check_human(const CheckReport &r, bool quiet);

// qemu-img's print_block_option_help(): for `-o help` / `-o ?`. Without a
// filename, "Supported <fmt> options:" with the format's options and the
// hint about protocol options; with one, "Supported options:" with the
// format's and the protocol's options merged. Errors (unknown format, no
// creation support, unknown protocol) are reported. Returns the exit status.
int print_create_option_help(const char *filename, std::string_view fmt);

// printf() unless quiet (qemu-img's qprintf).
void qprintf(bool quiet, const std::string &s);

}  // namespace qimg::cli
