// qcow2 image creation with qemu-img 7.2's options, defaults, messages and
// initial layout (QEMU's qcow2_co_create_opts/qcow2_co_create): header in
// cluster 0, refcount table in cluster 1, one refcount block in cluster 2,
// then the L1 table and whatever preallocation adds, allocated through a
// Qcow2Node so that creation and later writes share one code path.
#include <unistd.h>

#include <bit>

#include "block/open.h"
#include "format/qcow2/qcow2.h"
#include "util/endian.h"
#include "util/keyval.h"

namespace qimg::qcow2 {
namespace {

constexpr uint64_t kDefaultClusterSize = 65536;

struct Options {
    int version = 3;
    uint64_t cluster_size = kDefaultClusterSize;
    bool extended_l2 = false, lazy_refcounts = false, data_file_raw = false;
    uint64_t refcount_bits = 16;
    Prealloc prealloc = Prealloc::Off;
    uint8_t compression = kCompressionZlib;
    std::string backing_file, backing_fmt, data_file;
    bool has_backing = false, has_backing_fmt = false, has_data_file = false;
    EncryptionCreate encryption;
};

Result<bool> get_bool(const CreateRequest &req, const std::string &k, bool dflt) {
    if (!req.has(k)) return dflt;
    return parse_bool_opt(k, req.get(k));
}

// Option values, checked in the order QEMU's QAPI visitor and then
// qcow2_co_create check them.
Result<Options> parse_options(const CreateRequest &req) {
    Options o;
    QIMG_ASSIGN(o.data_file_raw, get_bool(req, "data_file_raw", false));
    QIMG_ASSIGN(o.extended_l2, get_bool(req, "extended_l2", false));
    if (req.has("compat")) {
        std::string c = req.get("compat");
        if (c == "0.10" || c == "v2") o.version = 2;
        else if (c == "1.1" || c == "v3") o.version = 3;
        else return make_error(EINVAL, "Parameter 'version' does not accept value '" + c + "'");
    }
    o.has_backing = req.has("backing_file");
    o.backing_file = req.get("backing_file");
    o.has_backing_fmt = req.has("backing_fmt");
    o.backing_fmt = req.get("backing_fmt");
    QIMG_ASSIGN(o.encryption, encryption_create_options(req.options, *req.secrets));
    if (req.has("cluster_size")) {
        QIMG_ASSIGN(o.cluster_size, parse_size_opt("cluster_size", req.get("cluster_size")));
    }
    if (req.has("preallocation")) {
        std::string p = req.get("preallocation");
        auto r = parse_prealloc(p);
        if (!r) return make_error(EINVAL, "Parameter 'preallocation' does not accept value '" + p + "'");
        o.prealloc = *r;
    }
    QIMG_ASSIGN(o.lazy_refcounts, get_bool(req, "lazy_refcounts", false));
    if (req.has("refcount_bits")) {
        QIMG_ASSIGN(o.refcount_bits, parse_number_opt("refcount_bits", req.get("refcount_bits")));
    }
    bool has_compression = req.has("compression_type");
    if (has_compression) {
        std::string c = req.get("compression_type");
        if (c == "zlib") o.compression = kCompressionZlib;
        else if (c == "zstd") o.compression = kCompressionZstd;
        else return make_error(EINVAL, "Parameter 'compression-type' does not accept value '" + c + "'");
    }
    o.has_data_file = req.has("data_file");
    o.data_file = req.get("data_file");

    // qcow2_co_create
    const char *v3 = " (use version=v3 or greater)";
    if (o.extended_l2 && o.version < 3)
        return make_error(EINVAL, std::string("Extended L2 entries are only supported with compatibility level 1.1 and above") + v3);
    if (o.cluster_size < 512 || o.cluster_size > (2u << 20) || !std::has_single_bit(o.cluster_size))
        return make_error(EINVAL, "Cluster size must be a power of two between 512 and 2048k");
    if (o.extended_l2 && o.cluster_size < 512 * kSubclusters)
        return make_error(EINVAL, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
    if (o.has_backing && o.prealloc != Prealloc::Off && !o.extended_l2)
        return make_error(EINVAL, "Backing file and preallocation can only be used at the same time if extended_l2 is on");
    if (o.has_backing_fmt && !o.has_backing)
        return make_error(EINVAL, "Backing format cannot be used without backing file");
    if (o.version < 3 && o.lazy_refcounts)
        return make_error(EINVAL, std::string("Lazy refcounts only supported with compatibility level 1.1 and above") + v3);
    if (o.refcount_bits > 64 || !std::has_single_bit(o.refcount_bits))
        return make_error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
    if (o.version < 3 && o.refcount_bits != 16)
        return make_error(EINVAL, std::string("Different refcount widths than 16 bits require compatibility level 1.1 or above") + v3);
    if (o.data_file_raw && !o.has_data_file) return make_error(EINVAL, "data-file-raw requires data-file");
    if (o.data_file_raw && o.has_backing)
        return make_error(EINVAL, "Backing file and data-file-raw cannot be used at the same time");
    if (o.data_file_raw && o.prealloc == Prealloc::Off) o.prealloc = Prealloc::Metadata;
    if (o.has_data_file && o.version < 3)
        return make_error(EINVAL, std::string("External data files are only supported with compatibility level 1.1 and above") + v3);
    if (has_compression && o.compression != kCompressionZlib && o.version < 3)
        return make_error(EINVAL, std::string("Non-zlib compression type is only supported with compatibility level 1.1 and above") + v3);
    return o;
}

// The local file a created image name designates ("file:" stripped), or ""
// for a name of another protocol.
std::string local_path(const std::string &name) {
    std::string f = strip_file_prefix(name);
    size_t colon = f.find(':'), slash = f.find('/');
    return colon == std::string::npos || (slash != std::string::npos && slash < colon) ? f : std::string();
}

Result<void> format_image(CreateRequest &req, const Options &o, uint64_t size) {
    Header h;
    h.version = uint32_t(o.version);
    h.cluster_bits = uint32_t(std::countr_zero(o.cluster_size));
    h.refcount_table_offset = o.cluster_size;
    h.refcount_table_clusters = 1;
    h.refcount_order = uint32_t(std::countr_zero(o.refcount_bits));
    h.compression_type = o.compression;
    if (o.lazy_refcounts) h.compatible |= kCompatLazyRefcounts;
    if (o.has_data_file) {
        h.incompatible |= kIncompatDataFile;
        h.data_file = o.data_file;
    }
    if (o.data_file_raw) h.autoclear |= kAutoclearDataFileRaw;
    if (o.compression != kCompressionZlib) h.incompatible |= kIncompatCompression;
    if (o.extended_l2) h.incompatible |= kIncompatExtL2;

    OpenFlags flags;
    flags.read_write = true;
    flags.no_backing = true;
    {
        // As qcow2_co_create: the first clusters are written with
        // BDRV_O_NO_FLUSH, then the image is reopened as qcow2 with flushes
        // on, so the metadata updates below flush as they would later. (The
        // flushes also shape how the file system lays the file out, which
        // iotest 250 sees in du's count.)
        OpenFlags raw_flags = flags;
        raw_flags.cache.no_flush = true;
        QIMG_ASSIGN(NodePtr raw, req.opener->open_protocol(req.filename, {}, raw_flags));
        QIMG_ASSIGN(auto head, serialize_header(h));
        QIMG_TRY(raw->write(0, head.data(), head.size()));
        std::vector<uint8_t> rt(2 * o.cluster_size, 0);
        put_be64(rt.data(), 2 * o.cluster_size);
        QIMG_TRY(raw->write(o.cluster_size, rt.data(), rt.size()));
    }
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));
    // The names in the header just written (a data file) are the user's
    // own -o values, not an untrusted image's: opened whatever the
    // implicit-open policy.
    BlockOpener own_names;
    own_names.implicit_open = ImplicitOpen::Follow;
    OpenRequest oreq;
    oreq.filename = req.filename;
    oreq.flags = flags;
    oreq.file = file;
    oreq.opener = &own_names;
    QIMG_ASSIGN(auto node, Qcow2Node::open(oreq));
    // Header, refcount table and refcount block (QEMU's alloc_clusters(3 clusters)).
    QIMG_TRY(node->allocate_initial_clusters());
    {
        auto r = node->truncate(size, o.prealloc, false);
        if (!r) return Err(r.error().prepended("Could not resize image: "));
    }
    if (o.has_backing) {
        auto r = node->set_backing_file(o.backing_file, o.has_backing_fmt ? o.backing_fmt : std::string());
        if (!r)
            return make_error(r.error().code, "Could not assign backing file '" + o.backing_file + "' with format '" +
                                                  o.backing_fmt + "': " + r.error().message);
    }
    if (o.encryption.method != kCryptNone) QIMG_TRY(node->set_up_encryption(o.encryption));
    QIMG_TRY(node->close());
    QIMG_TRY(file->flush());
    return ok();
}

}  // namespace

Result<void> qcow2_create(CreateRequest &req) {
    // QEMU creates the protocol file(s) before validating the qcow2 options
    // and deletes them again on any failure.
    QIMG_TRY(req.opener->create_protocol(req.filename, 0, Prealloc::Off));
    auto fail = [&](Error e, bool data_created, const std::string &data) -> Result<void> {
        if (std::string p = local_path(req.filename); !p.empty()) ::unlink(p.c_str());
        if (std::string p = local_path(data); data_created && !p.empty()) ::unlink(p.c_str());
        return Err(std::move(e));
    };
    std::string data_name = req.get("data_file");
    bool data_created = false;
    if (req.has("data_file")) {
        auto r = req.opener->create_protocol(data_name, 0, Prealloc::Off);
        if (!r) return fail(r.error(), false, data_name);
        data_created = true;
    }
    auto o = parse_options(req);
    if (!o) return fail(o.error(), data_created, data_name);
    uint64_t size = (req.size + 511) / 512 * 512;  // QEMU silently rounds up
    auto r = format_image(req, *o, size);
    if (!r) return fail(r.error(), data_created, data_name);
    return ok();
}

std::vector<CreateOption> qcow2_create_options() {
    using T = CreateOption::Type;
    return {
        {"encryption", T::Bool, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", ""},
        {"encrypt.format", T::String, "Encrypt the image, format choices: 'aes', 'luks'", ""},
        {"encrypt.key-secret", T::String, "ID of secret providing qcow AES key or LUKS passphrase", ""},
        {"encrypt.cipher-alg", T::String, "Name of encryption cipher algorithm", ""},
        {"encrypt.cipher-mode", T::String, "Name of encryption cipher mode", ""},
        {"encrypt.ivgen-alg", T::String, "Name of IV generator algorithm", ""},
        {"encrypt.ivgen-hash-alg", T::String, "Name of IV generator hash algorithm", ""},
        {"encrypt.hash-alg", T::String, "Name of encryption hash algorithm", ""},
        {"encrypt.iter-time", T::Number, "Time to spend in PBKDF in milliseconds", ""},
        {"cluster_size", T::Size, "qcow2 cluster size", "65536"},
        {"extended_l2", T::Bool, "Extended L2 tables", "off"},
        {"preallocation", T::String, "Preallocation mode (allowed values: off, metadata, falloc, full)", ""},
        {"compression_type", T::String, "Compression method used for image cluster compression", "zlib"},
        {"size", T::Size, "Virtual disk size", ""},
        {"compat", T::String, "Compatibility level (v2 [0.10] or v3 [1.1])", ""},
        {"backing_file", T::String, "File name of a base image", ""},
        {"backing_fmt", T::String, "Image format of the base image", ""},
        {"data_file", T::String, "File name of an external data file", ""},
        {"data_file_raw", T::Bool, "The external data file must stay valid as a raw image", ""},
        {"lazy_refcounts", T::Bool, "Postpone refcount updates", "off"},
        {"refcount_bits", T::Number, "Width of a reference count entry in bits", "16"},
    };
}

}  // namespace qimg::qcow2
