// qemu-img create -f vhdx: the options, their checks and messages, and the
// image qemu-img 7.2 writes: the file identifier with QEMU's creator
// string, two headers (a random sequence number and the next one), the
// log after the header section, the BAT, the metadata region with its five
// items, and for a fixed disk the payload blocks after a 5 MiB gap. The
// same bytes as qemu-img's but for the random GUIDs and sequence number.
#include <bit>
#include <charconv>
#include <cstring>
#include <vector>

#include "block/open.h"
#include "format/vhdx/format.h"
#include "format/vhdx/vhdx.h"
#include "util/checked.h"
#include "util/uuid.h"

namespace qimg::vhdx {
namespace {

constexpr uint64_t GiB = 1024 * MiB;
constexpr uint64_t kDefaultLogSize = 1 * MiB;
// QEMU's creator field: "QEMU v" and its version, in UTF-16 without a NUL.
constexpr const char *kCreator = "QEMU v7.2.22";

uint64_t number(const CreateRequest &req, const std::string &k, uint64_t dflt) {
    if (!req.has(k)) return dflt;
    std::string v = req.get(k);
    uint64_t n = 0;
    std::from_chars(v.data(), v.data() + v.size(), n);
    return n;
}

// The region table: the BAT after the log, the metadata region after it.
std::vector<uint8_t> region_table(const Region &bat, const Region &md) {
    std::vector<uint8_t> b(kRegionTableSize, 0);
    put_le32(b.data(), kRegionSignature);
    put_le32(b.data() + 8, 2);
    uint8_t *e = b.data() + 16;
    std::memcpy(e, kBatGuid.data(), 16);
    put_le64(e + 16, bat.offset);
    put_le32(e + 24, bat.length);
    e += kRegionEntrySize;
    std::memcpy(e, kMetadataGuid.data(), 16);
    put_le64(e + 16, md.offset);
    put_le32(e + 24, md.length);
    put_le32(b.data() + 4, checksum(b, 4));
    return b;
}

// The metadata table (64 KiB) and the five items that follow it.
Result<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>> metadata(uint64_t size, uint32_t block_size,
                                                                       bool fixed) {
    std::vector<uint8_t> table(64 * KiB, 0), items(40, 0);
    put_le64(table.data(), kMetadataSignature);
    put_le16(table.data() + 10, 5);
    struct Item {
        const Guid *guid;
        uint32_t length, bits;
    };
    const Item list[] = {{&kFileParamsGuid, 8, kMetaRequired},
                         {&kVirtualSizeGuid, 8, kMetaRequired | 2},
                         {&kPage83Guid, 16, kMetaRequired | 2},
                         {&kLogicalSectorGuid, 4, kMetaRequired | 2},
                         {&kPhysicalSectorGuid, 4, kMetaRequired | 2}};
    uint32_t off = 64 * KiB;
    for (size_t i = 0; i < 5; ++i) {
        uint8_t *e = table.data() + 32 + 32 * i;
        std::memcpy(e, list[i].guid->data(), 16);
        put_le32(e + 16, off);
        put_le32(e + 20, list[i].length);
        put_le32(e + 24, list[i].bits);
        off += list[i].length;
    }
    put_le32(items.data(), block_size);
    put_le32(items.data() + 4, fixed ? kParamLeaveAllocated : 0);
    put_le64(items.data() + 8, size);
    QIMG_ASSIGN(Guid page83, random_guid());
    std::memcpy(items.data() + 16, page83.data(), 16);
    put_le32(items.data() + 32, 512);
    put_le32(items.data() + 36, 512);
    return std::pair{std::move(table), std::move(items)};
}

}  // namespace

Result<void> vhdx_create(CreateRequest &req) {
    CreateRequest proto;
    proto.filename = req.filename;
    proto.options = req.options;
    for (const char *k : {"size", "log_size", "block_size", "subformat", "block_state_zero"}) proto.options.erase(k);
    if (!proto.options.count("preallocation")) proto.options["preallocation"] = "off";
    proto.secrets = req.secrets;
    QIMG_TRY(req.opener->create_protocol(proto));

    std::string sub = req.get("subformat", "dynamic");
    if (sub != "dynamic" && sub != "fixed")
        return make_error(EINVAL, "Parameter 'subformat' does not accept value '" + sub + "'");
    const bool fixed = sub == "fixed";
    // As QEMU: sizes are rounded up silently, the disk to sectors, the log
    // and block sizes to MiB (a block size above 256 MiB to 256 MiB).
    const uint64_t size = checked_align_up(req.size, 512).value_or(UINT64_MAX & ~uint64_t(511));
    uint64_t log_size = checked_align_up(number(req, "log_size", kDefaultLogSize), MiB).value_or(0);
    uint64_t block_size = checked_align_up(number(req, "block_size", 0), MiB).value_or(UINT64_MAX);
    if (block_size > kBlockSizeMax) block_size = kBlockSizeMax;
    const bool zero_blocks = req.get("block_state_zero", "on") == "on";

    if (size > kMaxImageSize) return make_error(EINVAL, "Image size too large; max of 64TB");
    if (log_size > UINT32_MAX) return make_error(EINVAL, "Log size must be smaller than 4 GB");
    if (log_size < MiB || log_size % MiB) return make_error(EINVAL, "Log size must be a multiple of 1 MB");
    if (block_size == 0) {
        // QEMU's choice, to keep the BAT small.
        block_size = size > 32 * TiB ? 64 * MiB : size > 100 * GiB ? 32 * MiB : size > 1 * GiB ? 16 * MiB : 8 * MiB;
    }
    if (!std::has_single_bit(block_size)) return make_error(EINVAL, "Block size must be a power of two");

    Params p;
    p.block_size = uint32_t(block_size);
    p.size = size;
    p.logical_sector = 512;
    QIMG_ASSIGN(p, check_params(p));

    const Region bat{checked_align_up(kHeaderSectionEnd + log_size, MiB).value(),
                     uint32_t(checked_align_up(p.bat_entries * 8, MiB).value())};
    const Region md{bat.offset + bat.length, uint32_t(1 * MiB)};
    const uint64_t data_start = bat.offset + bat.length + 5 * MiB;

    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));

    // (A) the file identifier and creator.
    std::vector<uint8_t> id(8, 0);
    std::memcpy(id.data(), "vhdxfile", 8);
    for (const char *c = kCreator; *c; ++c) {
        id.push_back(uint8_t(*c));
        id.push_back(0);
    }
    auto w = file->write(0, id.data(), id.size());
    if (!w) return Err(w.error().prepended("Failed to write file signature: "));

    // (B), (C) the headers: 80 bytes each, as QEMU writes them.
    Header h;
    QIMG_ASSIGN(Uuid seq, Uuid::generate());
    h.sequence = le32(seq.bytes.data());
    h.version = 1;
    h.log_length = uint32_t(log_size);
    h.log_offset = kHeaderSectionEnd;
    QIMG_ASSIGN(h.file_write_guid, random_guid());
    QIMG_ASSIGN(h.data_write_guid, random_guid());
    std::vector<uint8_t> hb(kHeaderSize);
    for (uint64_t at : {kHeader1Offset, kHeader2Offset}) {
        store_header(hb, h);
        auto r = file->write(at, hb.data(), 80);
        if (!r) return Err(r.error().prepended("Failed to write image headers: "));
        h.sequence++;
    }

    // (G) the BAT: a fixed disk's blocks follow the data start, 1 MiB
    // aligned; a dynamic disk's entries are ZERO (block_state_zero) or 0.
    QIMG_TRY(file->truncate(data_start + (fixed ? size : 0), Prealloc::Off, false));
    const uint8_t state = zero_blocks ? kZero : fixed ? kFullyPresent : kNotPresent;
    if (state != kNotPresent || !file->has_zero_init()) {
        std::vector<uint8_t> table(bat.length, 0);
        const uint64_t blocks = div_round_up(size, block_size);
        for (uint64_t b = 0; b < blocks; ++b) {
            uint64_t entry = state;
            if (state == kFullyPresent) entry |= checked_align_up(data_start + b * block_size, MiB).value();
            put_le64(table.data() + 8 * bat_index(b, p.chunk_ratio), entry);
        }
        auto r = file->write(bat.offset, table.data(), table.size());
        if (!r) return Err(r.error().prepended("Failed to write the BAT: "));
    }
    // (D), (E) the region tables.
    std::vector<uint8_t> rt = region_table(bat, md);
    auto r1 = file->write(kRegionTableOffset, rt.data(), rt.size());
    if (!r1) return Err(r1.error().prepended("Failed to write first region table: "));
    auto r2 = file->write(kRegionTable2Offset, rt.data(), rt.size());
    if (!r2) return Err(r2.error().prepended("Failed to write second region table: "));
    // (H) the metadata.
    QIMG_ASSIGN(auto m, metadata(size, uint32_t(block_size), fixed));
    auto r3 = file->write(md.offset, m.first.data(), m.first.size());
    if (r3) r3 = file->write(md.offset + 64 * KiB, m.second.data(), m.second.size());
    if (!r3) return Err(r3.error().prepended("Failed to initialize metadata: "));
    return file->flush();
}

std::vector<CreateOption> vhdx_create_options() {
    using T = CreateOption::Type;
    return {
        {"size", T::Size, "Virtual disk size; max of 64TB.", ""},
        {"log_size", T::Size, "Log size; min 1MB.", "1048576"},
        {"block_size", T::Size, "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.", "0"},
        {"subformat", T::String, "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.", ""},
        {"block_state_zero", T::Bool,
         "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using "
         "'qemu-img convert' with subformat=dynamic.",
         ""},
    };
}

}  // namespace qimg::vhdx
