// qcow2's compression type to codec mapping (see compress.h).
#include "format/qcow2/compress.h"

#include "format/qcow2/header.h"

namespace qimg::qcow2 {

Result<codec::Params> codec_for(uint8_t compression_type, const CompressOptions &opts) {
    codec::Params p;
    if (compression_type == kCompressionZlib) {
        p.codec = codec::Codec::Deflate;
        p.window_bits = 12;
    } else if (compression_type == kCompressionZstd) {
        p.codec = codec::Codec::Zstd;
    } else {
        return make_error(ENOTSUP, "Unknown compression type");
    }
    p.level = opts.level;
    p.fast = opts.fast;
    return p;
}

Result<void> decompress_cluster(uint8_t compression_type, std::span<const uint8_t> in, std::span<uint8_t> out) {
    QIMG_ASSIGN(codec::Params p, codec_for(compression_type));
    auto r = codec::decompress(p.codec, p.window_bits, in, out);
    if (!r && r.error().code == EIO) return make_error(EIO, "Could not decompress cluster: Input/output error");
    return r;
}

Result<std::vector<uint8_t>> compress_cluster(uint8_t compression_type, const void *buf, size_t len,
                                              uint64_t cluster_size, const CompressOptions &opts) {
    if (len > cluster_size) return make_error(EINVAL, "Compressed writes must cover whole clusters");
    QIMG_ASSIGN(codec::Params p, codec_for(compression_type, opts));
    return codec::compress_unit(p, buf, len, cluster_size);
}

}  // namespace qimg::qcow2
