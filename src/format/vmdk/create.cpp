// qemu-img create -f vmdk: the options, checks, file names, sparse extent
// layout and descriptor text of qemu-img 7.2 (block/vmdk.c's
// vmdk_co_create_opts / vmdk_co_do_create / vmdk_init_extent), so that an
// image is byte for byte qemu-img's apart from the random CID.
//
// Sparse extent layout (sectors): header 0, descriptor 1..20 (monolithic
// files only; an extent of a split image leaves them zero), the redundant
// grain directory at 21 followed by its grain tables, the grain directory
// followed by its tables, grains from the next multiple of 128. Every grain
// table is allocated up front, as QEMU writes them.
#include <algorithm>
#include <cstdio>
#include <random>

#include "block/open.h"
#include "format/vmdk/descriptor.h"
#include "format/vmdk/vmdk.h"
#include "util/endian.h"

namespace qimg::vmdk {
namespace {

constexpr uint64_t kSplitSize = 0x80000000;  // twoGbMaxExtent*: 2 GiB extents

struct Names {
    std::string path, prefix, postfix;
};

// QEMU's filename_decompose: directory (through the last '/', '\\' or
// ':'), base name before its last '.', and the rest.
Result<Names> decompose(const std::string &f) {
    if (f.empty()) return make_error(EINVAL, "No filename provided");
    Names n;
    size_t cut = f.rfind('/');
    if (cut == std::string::npos) cut = f.rfind('\\');
    if (cut == std::string::npos) cut = f.rfind(':');
    std::string base = f;
    if (cut != std::string::npos) {
        n.path = f.substr(0, cut + 1);
        base = f.substr(cut + 1);
    }
    size_t dot = base.rfind('.');
    if (dot == std::string::npos) {
        n.prefix = base;
    } else {
        n.prefix = base.substr(0, dot);
        n.postfix = base.substr(dot);
    }
    return n;
}

std::string basename_of(const std::string &p) {
    size_t s = p.rfind('/');
    return s == std::string::npos ? p : p.substr(s + 1);
}

uint32_t random_cid() {
    static thread_local std::mt19937 rng{std::random_device{}()};
    return uint32_t(rng());
}

std::string hex(uint32_t v) {
    char b[16];
    snprintf(b, sizeof b, "%x", v);
    return b;
}

// The hosted sparse header and empty tables of an extent of `bytes`.
constexpr size_t h4_size = 79;  // magic and header

std::vector<uint8_t> sparse_layout(uint64_t bytes, bool compress, bool zeroed_grain, uint64_t *grain_offset,
                                   uint64_t *gd_bytes) {
    const uint64_t granularity = 128, gtes = 512;
    uint64_t sectors = bytes / 512;
    uint64_t grains = (sectors + granularity - 1) / granularity;
    uint64_t gt_size = (gtes * 4 + 511) / 512;
    uint64_t gt_count = (grains + gtes - 1) / gtes;
    uint64_t gd_sectors = (gt_count * 4 + 511) / 512;
    uint64_t rgd = 1 + 20;
    uint64_t gd = rgd + gd_sectors + gt_size * gt_count;
    uint64_t grain_off = (gd + gd_sectors + gt_size * gt_count + granularity - 1) / granularity * granularity;
    *grain_offset = grain_off;
    *gd_bytes = gd_sectors * 512;
    std::vector<uint8_t> img(grain_off * 512);
    put_be32(&img[0], kMagicVmdk4);
    put_le32(&img[4], compress ? 3 : zeroed_grain ? 2 : 1);
    put_le32(&img[8], kFlagRgd | kFlagNlDetect | (compress ? kFlagCompress | kFlagMarker : 0) |
                          (zeroed_grain ? kFlagZeroGrain : 0));
    put_le64(&img[12], sectors);
    put_le64(&img[20], granularity);
    put_le64(&img[28], 1);
    put_le64(&img[36], 20);
    put_le32(&img[44], uint32_t(gtes));
    put_le64(&img[48], rgd);
    put_le64(&img[56], gd);
    put_le64(&img[64], grain_off);
    img[73] = 0xa, img[74] = 0x20, img[75] = 0xd, img[76] = 0xa;
    put_le16(&img[77], compress ? kCompressDeflate : 0);
    for (uint64_t i = 0; i < gt_count; i++) {
        put_le32(&img[rgd * 512 + 4 * i], uint32_t(rgd + gd_sectors + i * gt_size));
        put_le32(&img[gd * 512 + 4 * i], uint32_t(gd + gd_sectors + i * gt_size));
    }
    return img;
}

// The options of a protocol file (everything not vmdk's own), as QEMU
// passes them on to bdrv_create_file for every extent.
Result<void> create_file(CreateRequest &req, const std::string &name) {
    CreateRequest r;
    r.filename = name;
    r.secrets = req.secrets;
    for (const auto &[k, v] : req.options) {
        static constexpr std::string_view kOwn[] = {"size", "adapter_type", "backing_file", "backing_fmt", "compat6",
                                                    "hwversion", "toolsversion", "subformat", "zeroed_grain"};
        if (std::find(std::begin(kOwn), std::end(kOwn), k) == std::end(kOwn)) r.options[k] = v;
    }
    return req.opener->create_protocol(r);
}

Result<NodePtr> open_file(CreateRequest &req, const std::string &name) {
    OpenFlags f;
    f.read_write = true;
    f.resize = true;
    f.no_backing = true;
    return req.opener->open_protocol(name, {}, f);
}

// Creates one extent file: flat (a file of `bytes`), or sparse.
Result<NodePtr> create_extent(CreateRequest &req, const std::string &name, uint64_t bytes, bool flat, bool compress,
                              bool zeroed_grain) {
    QIMG_TRY(create_file(req, name));
    QIMG_ASSIGN(NodePtr f, open_file(req, name));
    if (flat) {
        QIMG_TRY(f->truncate(bytes, Prealloc::Off, false));
        return f;
    }
    uint64_t grain_off = 0, gd_bytes = 0;
    std::vector<uint8_t> img = sparse_layout(bytes, compress, zeroed_grain, &grain_off, &gd_bytes);
    // As QEMU writes it: the header, the file grown to the first grain
    // (the grain tables stay holes), then both directories.
    QIMG_TRY(f->write(0, img.data(), h4_size));
    QIMG_TRY(f->truncate(img.size(), Prealloc::Off, false));
    for (uint64_t at : {le64(&img[48]) * 512, le64(&img[56]) * 512})
        QIMG_TRY(f->write(at, img.data() + at, gd_bytes));
    return f;
}

}  // namespace

std::vector<CreateOption> create_options() {
    using T = CreateOption::Type;
    return {
        {"size", T::Size, "Virtual disk size", ""},
        {"adapter_type", T::String, "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX",
         ""},
        {"backing_file", T::String, "File name of a base image", ""},
        {"backing_fmt", T::String, "Must be 'vmdk' if present", ""},
        {"compat6", T::Bool, "VMDK version 6 image", "off"},
        {"hwversion", T::String, "VMDK hardware version", "undefined"},
        {"toolsversion", T::String, "VMware guest tools version", ""},
        {"subformat", T::String,
         "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | "
         "twoGbMaxExtentFlat | streamOptimized} ",
         ""},
        {"zeroed_grain", T::Bool, "Enable efficient zero writes using the zeroed-grain GTE feature", ""},
    };
}

Result<void> create(CreateRequest &req) {
    if (req.has("backing_fmt") && req.get("backing_fmt") != "vmdk")
        return make_error(EINVAL, "backing_file must be a vmdk image");
    QIMG_ASSIGN(Names names, decompose(req.filename));
    uint64_t size = (req.size + 511) / 512 * 512;
    std::string adapter = req.get("adapter_type", "ide");
    if (adapter != "ide" && adapter != "buslogic" && adapter != "lsilogic" && adapter != "legacyESX")
        return make_error(EINVAL, "invalid parameter value: " + adapter);
    std::optional<std::string> hw;
    if (req.has("hwversion") && req.get("hwversion") != "undefined") hw = req.get("hwversion");
    std::string tools = req.get("toolsversion", "2147483647");
    bool compat6 = req.get("compat6", "off") == "on";
    bool zeroed = req.get("zeroed_grain", "off") == "on";
    std::string sub = req.get("subformat", "monolithicSparse");
    if (sub != "monolithicSparse" && sub != "monolithicFlat" && sub != "twoGbMaxExtentSparse" &&
        sub != "twoGbMaxExtentFlat" && sub != "streamOptimized")
        return make_error(EINVAL, "invalid parameter value: " + sub);
    if (compat6) {
        if (hw) return make_error(EINVAL, "compat6 cannot be enabled with hwversion set");
        hw = "6";
    }
    if (!hw) hw = "4";
    uint32_t heads = adapter == "ide" ? 16 : 255;
    bool split = sub == "twoGbMaxExtentFlat" || sub == "twoGbMaxExtentSparse";
    bool flat = sub == "monolithicFlat" || sub == "twoGbMaxExtentFlat";
    bool compress = sub == "streamOptimized";
    std::optional<std::string> backing;
    if (req.has("backing_file")) backing = req.get("backing_file");
    if (flat && backing) return make_error(ENOTSUP, "Flat image can't have backing file");
    if (flat && zeroed) return make_error(ENOTSUP, "Flat image can't enable zeroed grain");

    uint64_t extent_size = split ? kSplitSize : size;
    uint64_t created = (!split && !flat) ? extent_size : 0;
    std::string first = names.path + names.prefix + names.postfix;
    NodePtr desc_file;
    if (!split && !flat) {
        QIMG_ASSIGN(desc_file, create_extent(req, first, created, false, compress, zeroed));
    } else {
        QIMG_TRY(create_file(req, first));
        QIMG_ASSIGN(desc_file, open_file(req, first));
    }
    std::string lines;
    auto add_line = [&](uint64_t bytes, const std::string &file) {
        lines += "RW " + std::to_string((bytes + 511) / 512) + (flat ? " FLAT \"" : " SPARSE \"") +
                 basename_of(file) + (flat ? "\" 0\n" : "\"\n");
    };
    if (!split && !flat) add_line(created, first);

    uint32_t parent_cid = 0xffffffff;
    std::string parent_line;
    if (backing) {
        std::string full = combine_backing_path(first, *backing);
        OpenOptions o;
        o.flags.no_backing = true;
        o.file_name_parsed = true;
        BlockOpener op;
        op.implicit_open = ImplicitOpen::Follow;  // the user's own names
        auto b = op.open_image(full, o);
        if (!b) return Err(b.error().prepended("Could not open '" + full + "': "));
        if ((*b)->driver_name() != "vmdk")
            return make_error(EINVAL,
                              "Invalid backing file format: " + std::string((*b)->driver_name()) + ". Must be vmdk");
        auto info = (*b)->specific_info();
        parent_cid = info["data"]["cid"].get<uint32_t>();
        parent_line = "parentFileNameHint=\"" + *backing + "\"";
    }
    for (int idx = 1; created < size; idx++) {
        uint64_t cur = std::min(size - created, extent_size);
        char num[16];
        snprintf(num, sizeof num, "%03d", idx);
        std::string name = split ? names.path + names.prefix + "-" + (flat ? "f" : "s") + num + names.postfix
                                 : names.path + names.prefix + "-flat" + names.postfix;
        {
            QIMG_ASSIGN(NodePtr ext, create_extent(req, name, cur, flat, compress, zeroed));
            QIMG_TRY(ext->flush());
        }
        add_line(cur, name);
        created += cur;
    }

    std::string desc = "# Disk DescriptorFile\nversion=1\nCID=" + hex(random_cid()) + "\nparentCID=" +
                       hex(parent_cid) + "\ncreateType=\"" + sub + "\"\n" + parent_line +
                       "\n# Extent description\n" + lines +
                       "\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"" + *hw +
                       "\"\nddb.geometry.cylinders = \"" + std::to_string(int64_t(size) / int64_t(63 * heads * 512)) +
                       "\"\nddb.geometry.heads = \"" + std::to_string(heads) +
                       "\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"" + adapter +
                       "\"\nddb.toolsVersion = \"" + tools + "\"\n";
    uint64_t desc_offset = (!split && !flat) ? 0x200 : 0;
    {
        auto r = desc_file->write(desc_offset, desc.data(), desc.size());
        if (!r) return Err(errno_error(r.error().code, "Could not write description"));
    }
    if (desc_offset == 0) QIMG_TRY(desc_file->truncate(desc.size(), Prealloc::Off, false));
    return desc_file->flush();
}

}  // namespace qimg::vmdk
