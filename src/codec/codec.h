// Compression codecs for the formats that store compressed clusters or
// grains (qcow2, qcow v1, vmdk streamOptimized …): raw deflate with a chosen
// history window, and zstd. Chosen by codec and parameters, never by a
// format's own type byte; each format maps its field to a Codec itself.
// No block knowledge. Thread-safe: compression state is kept per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "util/result.h"

namespace qimg::codec {

enum class Codec {
    Deflate,  // raw deflate (RFC 1951: no zlib or gzip wrapper)
    Zstd,     // one or more zstd frames
    Zlib,     // deflate in a zlib wrapper (RFC 1950: header, Adler-32 trailer):
              // cloop blocks, vmdk grains
    Bzip2,    // one bzip2 stream (dmg chunks): decompress_stream only
};

struct Params {
    Codec codec = Codec::Deflate;
    // Deflate: log2 of the history window, 9..15. The compressor never
    // refers further back, so a reader with a window this small inflates it
    // (qcow2 readers inflate with 12: 4 KiB).
    int window_bits = 15;
    int level = -1;     // codec level; -1: the codec's default (zlib 6, zstd 3)
    bool fast = false;  // deflate: the fastest compressor available (ISA-L igzip
                        // level 1 when built with it, else zlib level 1); zstd ignores it
    // Deflate and Zlib with window_bits 15 go through libdeflate when built
    // with it (QIMG_HAVE_LIBDEFLATE): the same format, zlib level N as
    // libdeflate's N + 1 (faster, and no larger on the real data tried;
    // see codec.cpp), so the bytes differ from zlib's.
};

// Compresses `in` into `out` (capacity out.size()). Returns the compressed
// length, or 0 when the result does not fit (the caller stores the data
// uncompressed). Errors: ENOMEM (codec state), EIO (codec failure),
// EINVAL (window_bits out of range).
Result<size_t> compress(const Params &p, std::span<const uint8_t> in, std::span<uint8_t> out);

// Compresses `len` bytes of `data` padded with zeroes to `unit` bytes (a
// cluster or grain; len <= unit). Empty result: the compressed form is not
// smaller than the unit, store the unit uncompressed. This is the step that a
// parallel engine runs on its worker threads (BlockNode::compress_cluster).
Result<std::vector<uint8_t>> compress_unit(const Params &p, const void *data, size_t len, size_t unit);

// Decompresses `in` (which may carry trailing padding) into exactly
// out.size() bytes. A stream that ends early or is corrupt is EIO with the
// message kCorruptMessage.
Result<void> decompress(Codec codec, int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out);

// Decompresses one complete stream (Deflate/Zlib: up to its end marker;
// Zstd: whole frames) that fits in `out`, and returns the bytes it made,
// which may be fewer than out.size(). A stream that is corrupt, truncated
// or larger than `out` is EIO with kCorruptMessage.
Result<size_t> decompress_stream(Codec codec, int window_bits, std::span<const uint8_t> in, std::span<uint8_t> out);

inline constexpr const char *kCorruptMessage = "Could not decompress: Input/output error";

// Whether Params::fast deflate uses ISA-L (QIMG_HAVE_ISAL at build time).
bool have_isal();

}  // namespace qimg::codec
