// qemu-img create -f qcow: the options and the image qemu-img 7.2 writes
// (byte for byte): the header, the backing file name, then an L1 table of
// zeroed sectors. With a backing file the clusters are 512 bytes (so that
// no write has to copy from it) and the L2 tables 32 KiB; without, 4 KiB
// clusters and L2 tables.
#include <algorithm>
#include <vector>

#include "block/open.h"
#include "format/qcow/header.h"
#include "format/qcow/qcow.h"

namespace qimg::qcow {
namespace {

// The encryption options, checked as QEMU's create checks them; true for a
// legacy AES image (whose secret must exist: QEMU builds the cipher).
Result<bool> check_encryption(const CreateRequest &req) {
    std::string fmt = req.get("encrypt.format");
    bool on = req.get("encryption", "off") == "on" || !fmt.empty();
    if (!on) return false;
    if (!fmt.empty() && fmt != "aes") return make_error(EINVAL, "Unsupported encryption format");
    if (!req.has("encrypt.key-secret")) return make_error(EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    QIMG_TRY(req.secrets->lookup_utf8(req.get("encrypt.key-secret")));
    return true;
}

Result<void> write_image(BlockNode &file, const Header &h, const std::string &backing) {
    HeaderBytes hb = encode_header(h);
    QIMG_TRY(file.write(0, hb.data(), hb.size()));
    if (!backing.empty()) QIMG_TRY(file.write(kHeaderSize, backing.data(), backing.size()));
    uint64_t l1_bytes = (h.l1_entries() * 8 + 511) / 512 * 512;
    // Zeroes written (not a hole), as qemu-img writes them, in 1 MiB pieces.
    std::vector<uint8_t> zero(size_t(std::min<uint64_t>(l1_bytes, 1 << 20)), 0);
    for (uint64_t done = 0; done < l1_bytes;) {
        uint64_t n = std::min<uint64_t>(zero.size(), l1_bytes - done);
        QIMG_TRY(file.write(h.l1_table_offset + done, zero.data(), n));
        done += n;
    }
    return file.flush();
}

}  // namespace

Result<void> qcow_create(CreateRequest &req) {
    std::string backing_fmt = req.get("backing_fmt");
    if (!backing_fmt.empty() && !find_driver(backing_fmt))
        return make_error(EINVAL, "unrecognized backing format '" + backing_fmt + "'");
    CreateRequest proto;
    proto.filename = req.filename;
    proto.secrets = req.secrets;
    for (const auto &[k, v] : req.options)
        if (k != "size" && k != "backing_file" && k != "backing_fmt" && k != "encryption" && k.rfind("encrypt.", 0) != 0)
            proto.options[k] = v;
    QIMG_TRY(req.opener->create_protocol(proto));

    if (req.size == 0) return make_error(EINVAL, "Image size is too small, cannot be zero length");
    QIMG_ASSIGN(const bool aes, check_encryption(req));
    Header h;
    if (aes) h.crypt_method = kCryptAes;
    h.size = req.size > UINT64_MAX - 511 ? UINT64_MAX & ~uint64_t(511) : (req.size + 511) & ~uint64_t(511);
    std::string backing = req.get("backing_file");
    if (backing == "fat:") backing.clear();  // QEMU's vvfat marker: no backing file
    uint64_t header_end = kHeaderSize;
    if (req.has("backing_file")) {
        h.cluster_bits = 9;
        h.l2_bits = 12;
        if (!backing.empty()) {
            h.backing_file_offset = kHeaderSize;
            h.backing_file_size = uint32_t(backing.size());
            header_end += backing.size();
        }
    }
    h.l1_table_offset = (header_end + 7) & ~uint64_t(7);
    if (h.size > UINT64_MAX - h.l1_span()) return make_error(EINVAL, "Image too large");

    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    flags.no_backing = true;
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));
    return write_image(*file, h, backing);
}

std::vector<CreateOption> qcow_create_options() {
    using T = CreateOption::Type;
    return {
        {"size", T::Size, "Virtual disk size", ""},
        {"backing_file", T::String, "File name of a base image", ""},
        {"backing_fmt", T::String, "Format of the backing image", ""},
        {"encryption", T::Bool, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", ""},
        {"encrypt.format", T::String, "Encrypt the image, format choices: 'aes'", ""},
        {"encrypt.key-secret", T::String, "ID of the secret that provides the AES encryption key", ""},
    };
}

}  // namespace qimg::qcow
