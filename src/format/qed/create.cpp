// qemu-img create -f qed: the options, their checks and messages, and the
// image qemu-img 7.2 writes (byte for byte): a one-cluster header with the
// backing file name after it, then an empty L1 table.
#include <cstring>
#include <string>
#include <vector>

#include "block/open.h"
#include "format/qed/header.h"
#include "format/qed/qed.h"

namespace qimg::qed {

Result<void> qed_create(CreateRequest &req) {
    CreateRequest proto;
    proto.filename = req.filename;
    proto.secrets = req.secrets;
    for (const auto &[k, v] : req.options)
        if (k != "size" && k != "backing_file" && k != "backing_fmt" && k != "cluster_size" && k != "table_size")
            proto.options[k] = v;
    QIMG_TRY(req.opener->create_protocol(proto));

    Header h;
    uint64_t cs = std::stoull(req.get("cluster_size", std::to_string(kDefaultClusterSize)));
    uint64_t ts = std::stoull(req.get("table_size", std::to_string(kDefaultTableSize)));
    uint64_t size = req.size > UINT64_MAX - 511 ? UINT64_MAX & ~uint64_t(511) : (req.size + 511) & ~uint64_t(511);
    if (!valid_cluster_size(cs))
        return make_error(EINVAL, "QED cluster size must be within range [" + std::to_string(kMinClusterSize) + ", " +
                                      std::to_string(kMaxClusterSize) + "] and power of 2");
    if (!valid_table_size(ts))
        return make_error(EINVAL, "QED table size must be within range [" + std::to_string(kMinTableSize) + ", " +
                                      std::to_string(kMaxTableSize) + "] and power of 2");
    if (!valid_image_size(size, cs, ts))
        return make_error(EINVAL, "QED image size must be a non-zero multiple of cluster size and less than " +
                                      std::to_string(max_image_size(cs, ts)) + " bytes");
    h.cluster_size = uint32_t(cs);
    h.table_size = uint32_t(ts);
    h.header_size = 1;
    h.l1_table_offset = cs;
    h.image_size = size;
    std::string backing = req.get("backing_file");
    if (req.has("backing_file")) {
        h.features |= kFeatureBacking;
        h.backing_filename_offset = kHeaderSize;
        h.backing_filename_size = uint32_t(backing.size());
        if (req.get("backing_fmt") == "raw") h.features |= kFeatureBackingRaw;
    }

    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    flags.no_backing = true;
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));
    // QED ties allocation to the file's length: start from an empty file.
    QIMG_TRY(file->truncate(0, Prealloc::Off, true));
    std::vector<uint8_t> b(kHeaderSize + backing.size());
    HeaderBytes hb = encode_header(h);
    std::memcpy(b.data(), hb.data(), hb.size());
    if (!backing.empty()) std::memcpy(b.data() + kHeaderSize, backing.data(), backing.size());
    QIMG_TRY(file->write(0, b.data(), b.size()));
    std::vector<uint8_t> l1(h.table_bytes(), 0);
    QIMG_TRY(file->write(h.l1_table_offset, l1.data(), l1.size()));
    return file->flush();
}

std::vector<CreateOption> qed_create_options() {
    using T = CreateOption::Type;
    return {
        {"size", T::Size, "Virtual disk size", ""},
        {"backing_file", T::String, "File name of a base image", ""},
        {"backing_fmt", T::String, "Image format of the base image", ""},
        {"cluster_size", T::Size, "Cluster size (in bytes)", "65536"},
        {"table_size", T::Size, "L1/L2 table size (in clusters)", ""},
    };
}

}  // namespace qimg::qed
