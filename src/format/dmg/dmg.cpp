// The dmg format: Apple's UDIF disk images, read-only as QEMU 7.2 reads
// them (Apple documents no specification; the layout below is what QEMU,
// libdmg and dmg2img agree on). All fields big-endian.
//
//   koly trailer (512 bytes, its magic within the last 515 bytes of the
//   file): 0x18 data fork offset, 0x28/0x30 resource fork offset/length,
//   0xd8/0xe0 XML property list offset/length, 0x1ec sector count.
//   The block tables ("mish", one per partition) come from the resource
//   fork when it has a length, else from the base64 <data> elements of
//   the XML plist. A mish block: magic "mish" at 0, its first sector at 8,
//   its data offset (added to the data fork offset) at 0x18, then from
//   byte 204 chunks of 40 bytes: type at 0, first sector (added to the
//   block's) at 8, sector count at 0x10, offset in the data fork (added to
//   the block's) at 0x18, length at 0x20.
//   Chunk types: 0 zeroes, 1 raw, 2 ignore (zeroes), 0x80000005 zlib,
//   0x80000006 bzip2, 0x80000007 lzfse, 0x7ffffffe comment, 0xffffffff end.
//
// As QEMU: the koly search, its checks (forks and plist inside the file
// before the trailer, a plist of at most 16 MiB, a non-negative sector
// count), chunks of at most 64 MiB compressed and 131072 sectors unless
// they are zeroes (reported, then "Invalid argument"), comments and end
// markers dropped, lzfse (no Debian library) and unknown types dropped with
// QEMU's warning, so that reading them fails with an I/O error, as does
// reading a sector that no chunk covers. Unlike Debian's qemu-img, bzip2
// chunks are read (libbz2, codec/codec.h). Unlike QEMU, the chunks are
// sorted by sector before the binary search (QEMU searches them as the
// image lists them), and a raw chunk shorter than its sector count reads
// zeroes past its data rather than a stale buffer: a hostile image gets
// an answer that depends only on the image.
//
// Like QEMU, dmg reports no allocation of its own: every byte is data
// without a host offset. The probe is QEMU's: a file name ending ".dmg".
//
// Concurrency: the chunk table is immutable after open; the last chunk
// decompressed is kept for the next read (block/unit_cache.h), and chunks
// are decompressed outside the lock.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/status.h"
#include "block/unit_cache.h"
#include "codec/codec.h"
#include "util/bytes.h"
#include "util/checked.h"
#include "util/progname.h"

namespace qimg {
namespace {

enum : uint32_t {
    kZeroes = 0,
    kRaw = 1,
    kIgnore = 2,
    kZlib = 0x80000005,
    kBzip2 = 0x80000006,
    kLzfse = 0x80000007,
    kComment = 0x7ffffffe,
    kLast = 0xffffffff,
};

constexpr uint64_t kMaxLength = 64u << 20;        // compressed bytes per chunk
constexpr uint64_t kMaxSectors = kMaxLength / 512;  // sectors per decompressed chunk
constexpr uint64_t kMaxPlist = 16u << 20;
constexpr size_t kMishHeader = 204, kChunkEntry = 40, kMinMish = 244;

struct Chunk {
    uint32_t type = 0;
    uint64_t sector = 0, count = 0;   // guest sectors [sector, sector+count)
    uint64_t offset = 0, length = 0;  // in the file

    bool zero() const { return type == kZeroes || type == kIgnore; }
};

// QEMU's dmg fails without a message of its own for most damage; the block
// layer then says which file (bdrv_open_driver) before the command does.
Error invalid(const BlockNode &file) {
    return make_error(EINVAL, "Could not open '" + file.filename() + "': Invalid argument");
}

// The warnings QEMU prints once per process (warn_report_once).
void warn_once(uint32_t type) {
    static std::once_flag lzfse, unknown;
    if (type == kLzfse)
        std::call_once(lzfse, [] {
            report_warning("dmg-lzfse module is missing, accessing lzfse compressed blocks will result in I/O errors");
        });
    else
        std::call_once(unknown, [type] {
            char hex[16];
            std::snprintf(hex, sizeof hex, "%x", type);
            report_warning(std::string("Image contains chunks of unknown type ") + hex +
                           ", accessing them will result in I/O errors");
        });
}

// Appends the chunks of one mish block (QEMU's dmg_read_mish_block): data
// that is not a mish block is skipped.
Result<void> read_mish(const BlockNode &file, std::span<const uint8_t> b, uint64_t data_fork,
                       std::vector<Chunk> &chunks) {
    ByteReader r(b);
    if (b.size() < kMinMish || r.be32(0) != 0x6d697368) return ok();
    uint64_t first_sector = r.be64(8);
    uint64_t in_offset = data_fork + r.be64(0x18);  // wraps as in QEMU; reads past the file fail
    size_t entries = (b.size() - kMishHeader) / kChunkEntry;
    for (size_t i = 0; i < entries; ++i) {
        size_t at = kMishHeader + i * kChunkEntry;
        Chunk c;
        c.type = r.be32(at);
        switch (c.type) {
        case kZeroes: case kRaw: case kIgnore: case kZlib: case kBzip2: break;
        case kComment: case kLast: continue;
        default: warn_once(c.type); continue;
        }
        size_t index = chunks.size();
        c.sector = r.be64(at + 8) + first_sector;
        c.count = r.be64(at + 0x10);
        if (!c.zero() && c.count > kMaxSectors) {
            report_error("sector count " + std::to_string(c.count) + " for chunk " + std::to_string(index) +
                         " is larger than max (" + std::to_string(kMaxSectors) + ")");
            return invalid(file);
        }
        c.offset = r.be64(at + 0x18) + in_offset;
        c.length = r.be64(at + 0x20);
        if (c.length > kMaxLength) {
            report_error("length " + std::to_string(c.length) + " for chunk " + std::to_string(index) +
                         " is larger than max (" + std::to_string(kMaxLength) + ")");
            return invalid(file);
        }
        chunks.push_back(c);
    }
    return ok();
}

// The resource fork: a header whose first word is the offset of the
// resource data and third its length; the data is a sequence of
// length-prefixed resources, each a mish block (or skipped).
Result<void> read_resource_fork(BlockNode &file, uint64_t begin, uint64_t length, uint64_t data_fork,
                                std::vector<Chunk> &chunks) {
    std::array<uint8_t, 12> h{};
    QIMG_TRY(read_padded(file, begin, h.data(), h.size()));
    ByteReader hr(h);
    uint32_t data_offset = hr.be32(0), count = hr.be32(8);
    if (data_offset > length) return invalid(file);
    if (count == 0 || uint64_t{data_offset} + count > length) return invalid(file);
    uint64_t off = begin + data_offset, end = off + count;
    std::vector<uint8_t> buf;
    while (off < end) {
        std::array<uint8_t, 4> w{};
        QIMG_TRY(read_padded(file, off, w.data(), w.size()));
        uint32_t n = ByteReader(w).be32(0);
        if (n == 0 || n > end - off) return invalid(file);
        off += 4;
        buf.resize(n);
        QIMG_TRY(read_padded(file, off, buf.data(), buf.size()));
        QIMG_TRY(read_mish(file, buf, data_fork, chunks));
        off += n;
    }
    return ok();
}

// Base64 as GLib's g_base64_decode reads it: characters outside the
// alphabet (the plist's tabs and newlines) are skipped, '=' ends a group.
std::vector<uint8_t> base64_decode(std::string_view s) {
    std::vector<uint8_t> out;
    out.reserve(s.size() * 3 / 4);
    uint32_t acc = 0;
    int bits = 0;
    for (char ch : s) {
        int v;
        if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
        else if (ch == '+') v = 62;
        else if (ch == '/') v = 63;
        else continue;
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<uint8_t>(acc >> bits));
        }
    }
    return out;
}

// The XML plist: every <data>...</data> is a base64 mish block (QEMU looks
// for the elements by their text, not by parsing the XML).
Result<void> read_plist(BlockNode &file, uint64_t begin, uint64_t length, uint64_t data_fork,
                        std::vector<Chunk> &chunks) {
    if (length == 0 || length > kMaxPlist) return invalid(file);
    std::string xml(static_cast<size_t>(length), '\0');
    if (auto r = read_padded(file, begin, xml.data(), xml.size()); !r) return invalid(file);
    xml.resize(std::strlen(xml.c_str()));  // QEMU's strstr stops at a NUL
    size_t pos = 0;
    while ((pos = xml.find("<data>", pos)) != std::string::npos) {
        pos += 6;
        size_t end = xml.find("</data>", pos);
        if (end == std::string::npos) return invalid(file);
        auto mish = base64_decode(std::string_view(xml).substr(pos, end - pos));
        // QEMU passes the decoded length as 32 bits; 16 MiB of XML cannot exceed it.
        QIMG_TRY(read_mish(file, mish, data_fork, chunks));
        pos = end + 7;
    }
    return ok();
}

class DmgNode final : public BlockNode {
public:
    DmgNode(NodePtr file, std::vector<Chunk> chunks, uint64_t size) : chunks_(std::move(chunks)), size_(size) {
        file_ = std::move(file);
    }

    std::string_view driver_name() const override { return "dmg"; }
    uint64_t length() const override { return size_; }
    bool has_driver_info() const override { return false; }  // QEMU's dmg has no bdrv_get_info

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (!range_fits(off, len, size_)) return make_error(EIO, "Request beyond the end of the image");
        auto *out = static_cast<uint8_t *>(buf);
        while (len > 0) {
            uint64_t sector = off / 512;
            const Chunk *c = find(sector);
            if (!c) return make_error(EIO, "Input/output error");
            // The chunk's bytes from `off` on: its sectors, up to the request's end.
            uint64_t chunk_end = (c->sector + c->count) * 512;  // no wrap: find() checked the sum
            size_t n = static_cast<size_t>(std::min<uint64_t>(len, chunk_end - off));
            if (c->zero()) {
                std::memset(out, 0, n);
            } else {
                QIMG_ASSIGN(LastUnitCache::Unit data, get_chunk(*c));
                std::memcpy(out, data->data() + (off - c->sector * 512), n);
            }
            off += n;
            out += n;
            len -= n;
        }
        return ok();
    }

    Result<BlockStatus> block_status(uint64_t, uint64_t len) override { return unmapped_data_status(len); }

private:
    // The chunk holding `sector`: chunks_ is sorted by first sector; of
    // overlapping chunks the one that starts last before the sector wins.
    const Chunk *find(uint64_t sector) const {
        auto it = std::upper_bound(chunks_.begin(), chunks_.end(), sector,
                                   [](uint64_t s, const Chunk &c) { return s < c.sector; });
        if (it == chunks_.begin()) return nullptr;
        --it;
        if (it->count > (UINT64_MAX / 512) - it->sector || sector - it->sector >= it->count) return nullptr;
        return &*it;
    }

    Result<LastUnitCache::Unit> get_chunk(const Chunk &c) {
        uint64_t key = static_cast<uint64_t>(&c - chunks_.data());
        if (auto hit = cache_.find(key)) return hit;
        auto data = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(c.count * 512));
        if (c.type == kRaw) {
            // QEMU reads `length` bytes into a buffer of the sector count's
            // size; here what the chunk lacks reads as zeroes.
            size_t n = static_cast<size_t>(std::min<uint64_t>(c.length, data->size()));
            if (auto r = read_padded(*file_, c.offset, data->data(), n); !r) return make_error(EIO, "Input/output error");
        } else {
            std::vector<uint8_t> in(static_cast<size_t>(c.length));
            if (auto r = read_padded(*file_, c.offset, in.data(), in.size()); !r)
                return make_error(EIO, "Input/output error");
            auto codec = c.type == kZlib ? codec::Codec::Zlib : codec::Codec::Bzip2;
            auto n = codec::decompress_stream(codec, 15, in, *data);
            if (!n || *n != data->size()) return make_error(EIO, "Input/output error");
        }
        cache_.store(key, data);
        return LastUnitCache::Unit(data);
    }

    std::vector<Chunk> chunks_;
    uint64_t size_;
    LastUnitCache cache_;
};

// QEMU's dmg_probe: the name alone.
int dmg_probe(std::span<const uint8_t>, const std::string &filename) {
    return filename.size() > 4 && filename.compare(filename.size() - 4, 4, ".dmg") == 0 ? 2 : 0;
}

// QEMU's dmg_find_koly_offset: the magic within the last 515 bytes.
Result<uint64_t> find_koly(BlockNode &file) {
    uint64_t length = file.length();
    if (length < 512) return make_error(EINVAL, "dmg file must be at least 512 bytes long");
    uint64_t offset = length > 511 + 512 ? length - 511 - 512 : 0;
    std::array<uint8_t, 515> b{};
    size_t n = static_cast<size_t>(std::min<uint64_t>(length, b.size()));
    if (auto r = file.read(offset, b.data(), n); !r)
        return errno_error(r.error().code, "Failed while reading UDIF trailer");
    for (size_t i = 0; i + 3 < n; ++i)
        if (std::memcmp(b.data() + i, "koly", 4) == 0) return offset + i;
    return make_error(EINVAL, "Could not locate UDIF trailer in dmg file");
}

Result<NodePtr> dmg_open(OpenRequest &req) {
    BlockNode &file = *req.file;
    QIMG_ASSIGN(uint64_t koly, find_koly(file));
    std::array<uint8_t, 512> t{};
    QIMG_TRY(read_padded(file, koly, t.data(), t.size()));
    ByteReader r(t);
    uint64_t data_fork = r.be64(0x18);
    if (data_fork > koly) return invalid(file);
    uint64_t rsrc_off = r.be64(0x28), rsrc_len = r.be64(0x30);
    if (rsrc_off >= koly || rsrc_len > koly - rsrc_off) return invalid(file);
    uint64_t xml_off = r.be64(0xd8), xml_len = r.be64(0xe0);
    if (xml_off >= koly || xml_len > koly - xml_off) return invalid(file);
    uint64_t sectors = r.be64(0x1ec);
    if (sectors > uint64_t(INT64_MAX)) return invalid(file);
    // Sizes past 2^63 bytes are QEMU's to wrap; here they cannot be shown.
    if (sectors > uint64_t(INT64_MAX) / 512) return make_error(EFBIG, "Image too large");
    std::vector<Chunk> chunks;
    if (rsrc_len != 0) {
        QIMG_TRY(read_resource_fork(file, rsrc_off, rsrc_len, data_fork, chunks));
    } else if (xml_len != 0) {
        QIMG_TRY(read_plist(file, xml_off, xml_len, data_fork, chunks));
    } else {
        return invalid(file);
    }
    std::stable_sort(chunks.begin(), chunks.end(), [](const Chunk &a, const Chunk &b) { return a.sector < b.sector; });
    return NodePtr(std::make_shared<DmgNode>(req.file, std::move(chunks), sectors * 512));
}

const Driver *make_dmg_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "dmg";
        d.probe = dmg_probe;
        d.open = dmg_open;
        d.read_only = true;  // opening for writing: "Image is read-only", as QEMU
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_dmg_driver);

}  // namespace qimg
