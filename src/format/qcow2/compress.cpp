// Compression codecs for qcow2 clusters (see compress.h).
#include "format/qcow2/compress.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <memory>
#include <vector>
#ifdef QIMG_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#include "format/qcow2/header.h"

namespace qimg::qcow2 {
namespace {

constexpr int kDeflateWindowBits = -12;  // raw deflate, 4 KiB window (QEMU)

Error corrupt() { return make_error(EIO, "Could not decompress cluster: Input/output error"); }

Result<void> inflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
    z_stream z{};
    if (inflateInit2(&z, kDeflateWindowBits) != Z_OK) return make_error(ENOMEM, "Could not initialise zlib");
    z.next_in = const_cast<Bytef *>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    int r = inflate(&z, Z_FINISH);
    // As QEMU: a full output buffer counts as success even if the stream
    // goes on (the input is padded to whole sectors).
    bool good = r == Z_STREAM_END || (r == Z_BUF_ERROR && z.avail_out == 0);
    if (r == Z_STREAM_END && z.avail_out != 0) good = false;
    inflateEnd(&z);
    if (!good) return corrupt();
    return ok();
}

Result<void> zstd_decompress_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d) return make_error(ENOMEM, "Could not initialise zstd");
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    ZSTD_inBuffer i{in.data(), in.size(), 0};
    size_t r = 0;
    bool good = true;
    while (o.pos < o.size) {
        size_t last_in = i.pos, last_out = o.pos;
        r = ZSTD_decompressStream(d, &o, &i);
        if (ZSTD_isError(r) || (i.pos <= last_in && o.pos <= last_out)) {
            good = false;
            break;
        }
    }
    if (good && r > 0) good = false;  // a frame left unfinished
    ZSTD_freeDCtx(d);
    if (!good) return corrupt();
    return ok();
}

}  // namespace

Result<void> decompress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out) {
    if (type == kCompressionZlib) return inflate_cluster(in, out);
    if (type == kCompressionZstd) return zstd_decompress_cluster(in, out);
    return make_error(ENOTSUP, "Unknown compression type");
}

Result<size_t> compress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out) {
    if (type == kCompressionZlib) {
        z_stream z{};
        if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, kDeflateWindowBits, 9, Z_DEFAULT_STRATEGY) != Z_OK)
            return make_error(ENOMEM, "Could not initialise zlib");
        z.next_in = const_cast<Bytef *>(in.data());
        z.avail_in = static_cast<uInt>(in.size());
        z.next_out = out.data();
        z.avail_out = static_cast<uInt>(out.size());
        int r = deflate(&z, Z_FINISH);
        size_t n = out.size() - z.avail_out;
        deflateEnd(&z);
        return r == Z_STREAM_END ? n : size_t{0};
    }
    if (type == kCompressionZstd) {
        ZSTD_CCtx *c = ZSTD_createCCtx();
        if (!c) return make_error(ENOMEM, "Could not initialise zstd");
        ZSTD_outBuffer o{out.data(), out.size(), 0};
        ZSTD_inBuffer i{in.data(), in.size(), 0};
        size_t r = ZSTD_compressStream2(c, &o, &i, ZSTD_e_end);
        ZSTD_freeCCtx(c);
        if (ZSTD_isError(r)) {
            if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) return size_t{0};
            return make_error(EIO, "zstd compression failed");
        }
        return r == 0 ? o.pos : size_t{0};
    }
    return make_error(ENOTSUP, "Unknown compression type");
}

namespace {

// Per-thread deflate state, reset between clusters (deflateInit2 for every
// cluster, as QEMU does, costs a large allocation each time).
struct ZlibState {
    z_stream z{};
    int level = -100;
    ~ZlibState() {
        if (level != -100) deflateEnd(&z);
    }
};

Result<size_t> zlib_compress(std::span<const uint8_t> in, std::span<uint8_t> out, int level) {
    thread_local ZlibState st;
    if (st.level != level) {
        if (st.level != -100) deflateEnd(&st.z);
        st.z = z_stream{};
        st.level = -100;
        if (deflateInit2(&st.z, level, Z_DEFLATED, kDeflateWindowBits, 9, Z_DEFAULT_STRATEGY) != Z_OK)
            return make_error(ENOMEM, "Could not initialise zlib");
        st.level = level;
    } else if (deflateReset(&st.z) != Z_OK) {
        return make_error(EIO, "zlib reset failed");
    }
    st.z.next_in = const_cast<Bytef *>(in.data());
    st.z.avail_in = static_cast<uInt>(in.size());
    st.z.next_out = out.data();
    st.z.avail_out = static_cast<uInt>(out.size());
    int r = deflate(&st.z, Z_FINISH);
    return r == Z_STREAM_END ? out.size() - st.z.avail_out : size_t{0};
}

#ifdef QIMG_HAVE_ISAL
Result<size_t> isal_compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
    thread_local std::vector<uint8_t> level_buf(ISAL_DEF_LVL1_DEFAULT);
    isal_zstream z;
    isal_deflate_stateless_init(&z);
    z.level = 1;
    z.level_buf = level_buf.data();
    z.level_buf_size = static_cast<uint32_t>(level_buf.size());
    z.hist_bits = 12;  // distances <= 4 KiB: QEMU inflates with windowBits -12
    z.gzip_flag = IGZIP_DEFLATE;
    z.end_of_stream = 1;
    z.flush = NO_FLUSH;
    z.next_in = const_cast<uint8_t *>(in.data());
    z.avail_in = static_cast<uint32_t>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uint32_t>(out.size());
    int r = isal_deflate_stateless(&z);
    if (r == STATELESS_OVERFLOW) return size_t{0};
    if (r != COMP_OK) return make_error(EIO, "ISA-L compression failed");
    return size_t(z.total_out);
}
#endif

}  // namespace

bool have_isal() {
#ifdef QIMG_HAVE_ISAL
    return true;
#else
    return false;
#endif
}

Result<size_t> compress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out, int level,
                                bool fast) {
    if (type == kCompressionZlib) {
#ifdef QIMG_HAVE_ISAL
        if (fast) return isal_compress(in, out);
#endif
        return zlib_compress(in, out, fast ? 1 : level < 0 ? Z_DEFAULT_COMPRESSION : level);
    }
    if (type == kCompressionZstd) {
        thread_local std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx *)> c(ZSTD_createCCtx(), ZSTD_freeCCtx);
        if (!c) return make_error(ENOMEM, "Could not initialise zstd");
        ZSTD_CCtx_reset(c.get(), ZSTD_reset_session_and_parameters);
        if (level >= 0) ZSTD_CCtx_setParameter(c.get(), ZSTD_c_compressionLevel, level);
        ZSTD_outBuffer o{out.data(), out.size(), 0};
        ZSTD_inBuffer i{in.data(), in.size(), 0};
        size_t r = ZSTD_compressStream2(c.get(), &o, &i, ZSTD_e_end);
        if (ZSTD_isError(r)) {
            if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) return size_t{0};
            return make_error(EIO, "zstd compression failed");
        }
        return r == 0 ? o.pos : size_t{0};
    }
    return make_error(ENOTSUP, "Unknown compression type");
}

}  // namespace qimg::qcow2
