// zlib, zstd, ISA-L and libdeflate behind codec.h.
#include "codec/codec.h"

#include <bzlib.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#ifdef QIMG_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif
#ifdef QIMG_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

namespace qimg::codec {
namespace {

Error corrupt() { return make_error(EIO, kCorruptMessage); }

bool window_valid(int bits) { return bits >= 9 && bits <= 15; }

// zlib's windowBits for a codec: negative for raw deflate.
int zlib_window(Codec codec, int window_bits) { return codec == Codec::Zlib ? window_bits : -window_bits; }

// One inflate() call over all of `in` into `out`: zlib's return code and
// the bytes made. (in/out beyond 4 GiB do not occur: callers pass units.)
struct Inflated {
    int code = Z_DATA_ERROR;
    size_t made = 0;
};
Result<Inflated> inflate_once(int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out) {
    z_stream z{};
    if (inflateInit2(&z, window_bits) != Z_OK) return make_error(ENOMEM, "Could not initialise zlib");
    z.next_in = const_cast<Bytef *>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    Inflated r{inflate(&z, Z_FINISH), 0};
    r.made = out.size() - z.avail_out;
    inflateEnd(&z);
    return r;
}

Result<void> inflate_raw(int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out) {
    QIMG_ASSIGN(Inflated r, inflate_once(window_bits, in, out));
    // As QEMU: a full output buffer counts as success even if the stream
    // goes on (the input is padded to whole sectors); a stream that ends
    // before filling it does not.
    bool full = r.made == out.size();
    if (!(r.code == Z_STREAM_END && full) && !(r.code == Z_BUF_ERROR && full)) return corrupt();
    return ok();
}

// One whole stream into at most out.size() bytes.
Result<size_t> inflate_stream(int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out) {
    QIMG_ASSIGN(Inflated r, inflate_once(window_bits, in, out));
    if (r.code != Z_STREAM_END) return corrupt();
    return r.made;
}

Result<void> zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
    std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx *)> d(ZSTD_createDCtx(), ZSTD_freeDCtx);
    if (!d) return make_error(ENOMEM, "Could not initialise zstd");
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    ZSTD_inBuffer i{in.data(), in.size(), 0};
    size_t r = 0;
    while (o.pos < o.size) {
        size_t last_in = i.pos, last_out = o.pos;
        r = ZSTD_decompressStream(d.get(), &o, &i);
        if (ZSTD_isError(r) || (i.pos <= last_in && o.pos <= last_out)) return corrupt();
    }
    if (r > 0) return corrupt();  // a frame left unfinished
    return ok();
}

// Per-thread deflate state, reset between calls (deflateInit2 for every
// cluster, as QEMU does, costs a large allocation each time).
struct ZlibState {
    z_stream z{};
    int level = -100, window_bits = 0;
    ~ZlibState() {
        if (level != -100) deflateEnd(&z);
    }
};

// window_bits as zlib takes it: negative for raw deflate, positive with the
// zlib wrapper (zlib_window()).
Result<size_t> deflate_raw(int window_bits, int level, std::span<const uint8_t> in, std::span<uint8_t> out) {
    thread_local ZlibState st;
    if (st.level != level || st.window_bits != window_bits) {
        if (st.level != -100) deflateEnd(&st.z);
        st.z = z_stream{};
        st.level = -100;
        if (deflateInit2(&st.z, level, Z_DEFLATED, window_bits, 9, Z_DEFAULT_STRATEGY) != Z_OK)
            return make_error(ENOMEM, "Could not initialise zlib");
        st.level = level;
        st.window_bits = window_bits;
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
Result<size_t> isal_deflate_raw(int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out) {
    thread_local std::vector<uint8_t> level_buf(ISAL_DEF_LVL1_DEFAULT);
    isal_zstream z;
    isal_deflate_stateless_init(&z);
    z.level = 1;
    z.level_buf = level_buf.data();
    z.level_buf_size = static_cast<uint32_t>(level_buf.size());
    z.hist_bits = static_cast<uint16_t>(window_bits);  // no distance past the window
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

#ifdef QIMG_HAVE_LIBDEFLATE
// libdeflate compresses a whole buffer (a grain) two to three times as fast
// as zlib, but its window is always 32 KiB: used only for streams read with
// the full window (window_bits 15: vmdk grains), never for qcow2's 4 KiB one.
// Its levels are not zlib's: at the same number it is sometimes larger
// (64 KiB grains of /usr/bin: +0.1 % at 6), one level up it was smaller on
// every sample tried, so zlib level N is libdeflate level N + 1. Level 7
// against zlib 6, 64 KiB grains: the bench's ext4 disk 6.1 s against
// 14.2 s and 1.1 % smaller; /usr/bin 0.52 s against 1.22 s, 0.9 % smaller;
// licence texts 0.22 s against 0.49 s, 1.2 % smaller.
int libdeflate_level(int zlib_level) { return zlib_level + 1; }

Result<size_t> libdeflate_compress(Codec codec, int level, std::span<const uint8_t> in, std::span<uint8_t> out) {
    struct Compressors {
        libdeflate_compressor *at[11] = {};
        ~Compressors() {
            for (auto *c : at)
                if (c) libdeflate_free_compressor(c);
        }
    };
    thread_local Compressors cs;
    if (level < 0 || level > 10) return make_error(EINVAL, "deflate level out of range");
    auto *&c = cs.at[level];
    if (!c) c = libdeflate_alloc_compressor(level);
    if (!c) return make_error(ENOMEM, "Could not initialise libdeflate");
    return codec == Codec::Zlib ? libdeflate_zlib_compress(c, in.data(), in.size(), out.data(), out.size())
                                : libdeflate_deflate_compress(c, in.data(), in.size(), out.data(), out.size());
}
#endif

Result<size_t> zstd_compress(int level, std::span<const uint8_t> in, std::span<uint8_t> out) {
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

}  // namespace

bool have_isal() {
#ifdef QIMG_HAVE_ISAL
    return true;
#else
    return false;
#endif
}

Result<size_t> compress(const Params &p, std::span<const uint8_t> in, std::span<uint8_t> out) {
    if (p.codec == Codec::Bzip2) return make_error(ENOTSUP, "bzip2 compression is not supported");
    if (p.codec == Codec::Zstd) return zstd_compress(p.level, in, out);
    if (!window_valid(p.window_bits)) return make_error(EINVAL, "deflate window bits out of range");
#ifdef QIMG_HAVE_ISAL
    if (p.fast && p.codec == Codec::Deflate) return isal_deflate_raw(p.window_bits, in, out);
#endif
#ifdef QIMG_HAVE_LIBDEFLATE
    if (p.window_bits == 15)
        return libdeflate_compress(
            p.codec, p.fast ? 1 : p.level == 0 ? 0 : libdeflate_level(p.level < 0 ? 6 : std::min(p.level, 9)), in, out);
#endif
    return deflate_raw(zlib_window(p.codec, p.window_bits), p.fast ? 1 : p.level < 0 ? Z_DEFAULT_COMPRESSION : p.level,
                       in, out);
}

Result<std::vector<uint8_t>> compress_unit(const Params &p, const void *data, size_t len, size_t unit) {
    if (len > unit) return make_error(EINVAL, "compress_unit: data larger than its unit");
    std::vector<uint8_t> in(unit, 0);
    if (len) std::memcpy(in.data(), data, len);
    std::vector<uint8_t> out(unit ? unit - 1 : 0);
    QIMG_ASSIGN(size_t n, compress(p, in, out));
    out.resize(n);  // 0: incompressible
    return out;
}

Result<void> decompress(Codec codec, int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out) {
    if (codec == Codec::Bzip2) {
        QIMG_ASSIGN(size_t n, decompress_stream(codec, window_bits, in, out));
        if (n != out.size()) return corrupt();
        return ok();
    }
    if (codec == Codec::Zstd) return zstd_decompress(in, out);
    if (!window_valid(window_bits)) return make_error(EINVAL, "deflate window bits out of range");
    return inflate_raw(zlib_window(codec, window_bits), in, out);
}

Result<size_t> decompress_stream(Codec codec, int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out) {
    if (codec == Codec::Bzip2) {
        if (in.size() > UINT_MAX || out.size() > UINT_MAX) return corrupt();
        unsigned made = static_cast<unsigned>(out.size());
        int r = BZ2_bzBuffToBuffDecompress(reinterpret_cast<char *>(out.data()), &made,
                                           const_cast<char *>(reinterpret_cast<const char *>(in.data())),
                                           static_cast<unsigned>(in.size()), 0, 0);
        if (r == BZ_MEM_ERROR) return make_error(ENOMEM, "Could not initialise bzip2");
        if (r != BZ_OK) return corrupt();
        return size_t{made};
    }
    if (codec == Codec::Zstd) {
        size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
        if (ZSTD_isError(n)) return corrupt();
        return n;
    }
    if (!window_valid(window_bits)) return make_error(EINVAL, "deflate window bits out of range");
    return inflate_stream(zlib_window(codec, window_bits), in, out);
}

}  // namespace qimg::codec
