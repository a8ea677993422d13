// qemu-img create -f vpc: the options, the size rounding to a CHS geometry
// and the images qemu-img 7.2 writes (the same bytes but for the timestamp,
// the UUID and the footer checksum that covers them).
#include <ctime>
#include <vector>

#include "block/open.h"
#include "format/vpc/format.h"
#include "format/vpc/vpc.h"
#include "util/uuid.h"

namespace qimg::vpc {
namespace {

FooterBytes make_footer(uint64_t size, const Geometry &g, bool force_size, uint32_t type, const Uuid &uuid) {
    FooterBytes b{};
    ByteWriter w(b);
    w.bytes(footer::cookie, "conectix", 8);
    w.put(footer::features, 2);
    w.put(footer::version, 0x00010000);
    w.put(footer::data_offset, type == kTypeDynamic ? kFooterSize : UINT64_MAX);
    w.put(footer::timestamp, uint32_t(uint64_t(std::time(nullptr)) - kTimestampBase));
    w.bytes(footer::creator_app, force_size ? "qem2" : "qemu", 4);
    w.put(footer::creator_major, 5);  // Virtual PC 2007's version, as qemu-img
    w.put(footer::creator_minor, 3);
    w.bytes(footer::creator_os, "Wi2k", 4);
    w.put(footer::orig_size, size);
    w.put(footer::current_size, size);
    w.put(footer::cylinders, g.cylinders);
    w.put(footer::heads, g.heads);
    w.put(footer::sectors, g.sectors);
    w.put(footer::disk_type, type);
    w.bytes(footer::uuid, uuid.bytes.data(), uuid.bytes.size());
    w.put(footer::checksum, checksum(b, footer::checksum.offset));
    return b;
}

// Footer, dynamic header at 512, an empty BAT at 1536 (2 MiB blocks), and
// the footer again after the BAT.
Result<void> write_dynamic(BlockNode &file, const FooterBytes &footer, uint64_t sectors) {
    uint64_t entries = (sectors + kDefaultBlockSize / 512 - 1) / (kDefaultBlockSize / 512);
    uint64_t bat_bytes = (entries * 4 + 511) & ~uint64_t(511);
    QIMG_TRY(file.write(0, footer.data(), footer.size()));
    QIMG_TRY(file.write(kCreatedBatOffset + bat_bytes, footer.data(), footer.size()));
    std::vector<uint8_t> bat(bat_bytes, 0xff);
    if (bat_bytes) QIMG_TRY(file.write(kCreatedBatOffset, bat.data(), bat.size()));
    std::array<uint8_t, kDynHeaderSize> h{};
    ByteWriter w(h);
    w.bytes(dyn::cookie, "cxsparse", 8);
    w.put(dyn::data_offset, UINT64_MAX);  // all 64 bits, as Microsoft's tools expect
    w.put(dyn::table_offset, kCreatedBatOffset);
    w.put(dyn::version, 0x00010000);
    w.put(dyn::max_table_entries, uint32_t(entries));
    w.put(dyn::block_size, kDefaultBlockSize);
    w.put(dyn::checksum, checksum(h, dyn::checksum.offset));
    return file.write(kFooterSize, h.data(), h.size());
}

Result<void> write_fixed(BlockNode &file, const FooterBytes &footer, uint64_t size) {
    QIMG_TRY(file.truncate(size + kFooterSize, Prealloc::Off, false));
    auto r = file.write(size, footer.data(), footer.size());
    if (!r) return Err(r.error().prepended("Unable to write VHD header: "));
    return ok();
}

}  // namespace

Result<void> vpc_create(CreateRequest &req) {
    // As QEMU: the protocol file first (with the protocol's own options,
    // none of vpc's), then the vpc options.
    CreateRequest proto;
    proto.filename = req.filename;
    proto.options = req.options;
    for (const char *k : {"subformat", "force_size", "size"}) proto.options.erase(k);
    if (!proto.options.count("preallocation")) proto.options["preallocation"] = "off";
    proto.secrets = req.secrets;
    QIMG_TRY(req.opener->create_protocol(proto));

    std::string sub = req.get("subformat", "dynamic");
    if (sub != "dynamic" && sub != "fixed")
        return make_error(EINVAL, "Parameter 'subformat' does not accept value '" + sub + "'");
    bool force_size = req.get("force_size", "off") == "on";
    uint32_t type = sub == "fixed" ? kTypeFixed : kTypeDynamic;
    // The size grows to whole sectors, then (without force_size) to the
    // next CHS product: qemu-img does both silently.
    uint64_t size = req.size > UINT64_MAX - 511 ? UINT64_MAX & ~uint64_t(511) : (req.size + 511) & ~uint64_t(511);
    QIMG_ASSIGN(Rounded r, rounded_size(size, force_size));
    if (!force_size) {
        size = r.sectors * 512;
        QIMG_ASSIGN(r, rounded_size(size, false));
    }
    QIMG_ASSIGN(Uuid uuid, Uuid::generate());
    FooterBytes footer = make_footer(size, r.geo, force_size, type, uuid);

    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));
    if (type == kTypeDynamic) {
        auto w = write_dynamic(*file, footer, r.sectors);
        if (!w) return Err(w.error().prepended("Unable to create or write VHD header: "));
    } else {
        QIMG_TRY(write_fixed(*file, footer, size));
    }
    return file->flush();
}

std::vector<CreateOption> vpc_create_options() {
    using T = CreateOption::Type;
    return {
        {"size", T::Size, "Virtual disk size", ""},
        {"subformat", T::String,
         "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ", ""},
        {"force_size", T::Bool,
         "Force disk size calculation to use the actual size specified, rather than using the nearest "
         "CHS-based calculation",
         ""},
    };
}

}  // namespace qimg::vpc
