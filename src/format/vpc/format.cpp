// VHD footer, dynamic header checksum and CHS geometry (see format.h).
#include "format/vpc/format.h"

#include <algorithm>
#include <cstring>

namespace qimg::vpc {

uint32_t checksum(std::span<const uint8_t> b, size_t checksum_at) {
    uint32_t sum = 0;
    for (size_t i = 0; i < b.size(); ++i)
        if (i < checksum_at || i >= checksum_at + 4) sum += b[i];
    return ~sum;
}

bool has_footer_cookie(std::span<const uint8_t> b) {
    return b.size() >= 8 && std::memcmp(b.data(), "conectix", 8) == 0;
}

Result<Footer> parse_footer(std::span<const uint8_t> b) {
    ByteReader r(b);
    Footer f;
    uint32_t sum = r.get(footer::checksum);
    f.data_offset = r.get(footer::data_offset);
    f.current_size = r.get(footer::current_size);
    f.cylinders = r.get(footer::cylinders);
    f.heads = r.get(footer::heads);
    f.sectors = r.get(footer::sectors);
    f.disk_type = r.get(footer::disk_type);
    auto app = r.bytes(footer::creator_app, 4);
    if (!r || b.size() != kFooterSize) return make_error(EINVAL, "File too small for a VHD header");
    std::memcpy(f.creator_app.data(), app.data(), 4);
    if (checksum(b, footer::checksum.offset) != sum) return make_error(EINVAL, "Incorrect header checksum");
    return f;
}

Geometry geometry_for(uint64_t total_sectors) {
    total_sectors = std::min(total_sectors, kMaxGeometry);
    Geometry g;
    uint32_t cyls_times_heads;
    if (total_sectors >= 65535ull * 16 * 63) {
        g.sectors = 255;
        g.heads = 16;
        cyls_times_heads = uint32_t(total_sectors / g.sectors);
    } else {
        g.sectors = 17;
        cyls_times_heads = uint32_t(total_sectors / g.sectors);
        // The heads field is a byte: a count past 255 wraps as in QEMU
        // (either way the next test moves on to 31 sectors).
        g.heads = uint8_t((cyls_times_heads + 1023) / 1024);
        if (g.heads < 4) g.heads = 4;
        if (cyls_times_heads >= uint32_t(g.heads) * 1024 || g.heads > 16) {
            g.sectors = 31;
            g.heads = 16;
            cyls_times_heads = uint32_t(total_sectors / g.sectors);
        }
        if (cyls_times_heads >= uint32_t(g.heads) * 1024) {
            g.sectors = 63;
            g.heads = 16;
            cyls_times_heads = uint32_t(total_sectors / g.sectors);
        }
    }
    g.cylinders = uint16_t(cyls_times_heads / g.heads);
    return g;
}

uint64_t disk_sectors(const Footer &f, const std::string &calc) {
    Geometry g{f.cylinders, f.heads, f.sectors};
    uint64_t sectors = g.total();
    auto app_is = [&](const char *a) { return std::memcmp(f.creator_app.data(), a, 4) == 0; };
    bool by_size = app_is("win ") || app_is("qem2") || app_is("d2v ") || app_is("CTXS") || app_is("tap\0");
    bool use_chs = !by_size || calc == "chs";
    if (!use_chs || sectors == kMaxGeometry || calc == "current_size") sectors = f.current_size / 512;
    return sectors;
}

Result<Rounded> rounded_size(uint64_t size, bool force_size) {
    Rounded r;
    if (force_size) {
        r.geo = Geometry{uint16_t(kChsMaxC), uint8_t(kChsMaxH), uint8_t(kChsMaxS)};
    } else {
        // Grow the request until the geometry covers it, so that a copy
        // into a new image is never cut short.
        uint64_t want = std::min(kMaxGeometry, size / 512);
        for (uint64_t i = 0; want > r.geo.total(); ++i) r.geo = geometry_for(want + i);
    }
    if (r.geo.total() == kMaxGeometry) {
        r.sectors = size / 512;
        if (r.sectors > kMaxSectors) return make_error(EFBIG, "Disk size is too large, max size is 2040 GiB");
    } else {
        r.sectors = r.geo.total();
    }
    return r;
}

}  // namespace qimg::vpc
