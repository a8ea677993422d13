// seSparse extents: the sparse format of ESXi 6.5+ snapshot deltas on VMFS
// 6 ("SESPARSE" extent lines, createType="seSparse"). VMware does not
// publish it; the layout below is what QEMU 7.2 reads (read-only, with its
// strict header checks, whose messages these are):
//   sector 0  const header: 26 little-endian u64 fields, then zero padding:
//             magic 0xcafebabe, version 0x200000001, capacity (sectors),
//             grain size (sectors, 8), grain table size (sectors, 64),
//             flags (0), 4 reserved (0), then offset/size pairs in sectors
//             of the volatile header, journal header, journal, grain
//             directory, grain tables, free bitmap, backmap and grains
//   volatile header: magic 0xcafecafe, free GT number, next transaction,
//             replay-journal flag (a dirty image: refused), zero padding
//   grain directory: u64 entries; 0 = no table, else 0x1000000000000000 |
//             N, table N of the grain tables region (64 sectors each)
//   grain table: 4096 u64 entries, by top nibble: 0 unallocated (the rest
//             must be 0), 1 unmapped and 2 zero (both read as zeroes),
//             3 allocated: grain index with its low 12 bits in bits 48-59
//             and the rest in bits 0-47; the grain is at grains offset +
//             index * grain size
// An entry of any other shape fails the read that meets it (EIO), as QEMU's.
#include <array>
#include <cstring>

#include "block/table_check.h"
#include "format/vmdk/vmdk.h"
#include "util/bytes.h"
#include "util/checked.h"

namespace qimg::vmdk {
namespace {

constexpr uint64_t kConstMagic = 0xcafebabe, kVolatileMagic = 0xcafecafe;
constexpr uint64_t kVersion = 0x0000000200000001;
constexpr uint64_t kGrainSectors = 8, kGtSectors = 64;
constexpr uint32_t kGtEntries = uint32_t(kGtSectors * 512 / 8);
constexpr size_t kConstFields = 26, kVolatileFields = 4;

// Field indexes of the const header.
enum : size_t {
    kMagic, kVer, kCapacity, kGrainSize, kGtSize, kFlags, kRes1, kRes2, kRes3, kRes4, kVolOff,
    kGdOff = 16, kGdSize, kGtOff, kGtSizeTotal, kGrainsOff = 24,
};

std::string hex16(uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "0x%016llx", (unsigned long long)v);
    return b;
}

bool zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

Result<std::vector<uint64_t>> read_u64s(BlockNode &f, uint64_t off, size_t n) {
    std::vector<uint8_t> raw(n * 8);
    QIMG_TRY(read_padded(f, off, raw.data(), raw.size()));
    std::vector<uint64_t> v(n);
    for (size_t i = 0; i < n; i++) v[i] = le64(raw.data() + 8 * i);
    return v;
}

}  // namespace

Result<Extent> sesparse_extent(NodePtr file, const std::string &type) {
    std::array<uint8_t, 512> b{};
    auto r = read_padded(*file, 0, b.data(), b.size());
    if (!r) return Err(r.error().prepended("Could not read const header from file '" + file->filename() + "': "));
    uint64_t c[kConstFields];
    for (size_t i = 0; i < kConstFields; i++) c[i] = le64(b.data() + 8 * i);
    if (c[kMagic] != kConstMagic) return make_error(EINVAL, "Bad const header magic: " + hex16(c[kMagic]));
    if (c[kVer] != kVersion) return make_error(ENOTSUP, "Unsupported version: " + hex16(c[kVer]));
    if (c[kGrainSize] != kGrainSectors)
        return make_error(ENOTSUP, "Unsupported grain size: " + std::to_string(c[kGrainSize]));
    if (c[kGtSize] != kGtSectors)
        return make_error(ENOTSUP, "Unsupported grain table size: " + std::to_string(c[kGtSize]));
    if (c[kFlags]) return make_error(ENOTSUP, "Unsupported flags: " + hex16(c[kFlags]));
    if (c[kRes1] || c[kRes2] || c[kRes3] || c[kRes4])
        return make_error(ENOTSUP, "Unsupported reserved bits: " + hex16(c[kRes1]) + " " + hex16(c[kRes2]) + " " +
                                       hex16(c[kRes3]) + " " + hex16(c[kRes4]));
    if (!zero(b.data() + 8 * kConstFields, b.size() - 8 * kConstFields))
        return make_error(ENOTSUP, "Unsupported non-zero const header padding");

    // QEMU's product wraps (a huge offset reads the const header, whose
    // magic then fails the check below); a negative one fails the read.
    uint64_t voff = c[kVolOff] * 512;
    if (voff > uint64_t(INT64_MAX))
        return make_error(EIO, "Could not read volatile header from file '" + file->filename() +
                                   "': Input/output error");
    r = read_padded(*file, voff, b.data(), b.size());
    if (!r)
        return Err(r.error().prepended("Could not read volatile header from file '" + file->filename() + "': "));
    uint64_t v[kVolatileFields];
    for (size_t i = 0; i < kVolatileFields; i++) v[i] = le64(b.data() + 8 * i);
    if (v[0] != kVolatileMagic) return make_error(EINVAL, "Bad volatile header magic: " + hex16(v[0]));
    if (v[3]) return make_error(ENOTSUP, "Image is dirty, Replaying journal not supported");
    if (!zero(b.data() + 8 * kVolatileFields, b.size() - 8 * kVolatileFields))
        return make_error(ENOTSUP, "Unsupported non-zero volatile header padding");

    // Directory entries: the directory's sectors of 64 entries each.
    auto l1 = checked_mul<uint64_t>(c[kGdSize], 512 / 8);
    if (!l1 || *l1 > kMaxL1Entries) return make_error(EFBIG, "L1 size too big");
    auto gd = checked_mul<uint64_t>(c[kGdOff], 512);
    if (!gd) return make_error(EINVAL, "Invalid grain directory offset");
    Extent e;
    e.file = std::move(file);
    e.type = type;
    e.sesparse = true;
    e.sectors = c[kCapacity];
    e.gd_offset = *gd;
    e.l1_size = uint32_t(*l1);
    e.l2_size = kGtEntries;
    e.cluster_sectors = kGrainSectors;
    e.l1_entry_sectors = uint64_t(kGtEntries) * kGrainSectors;
    e.se_tables_sector = c[kGtOff];
    e.se_grains_sector = c[kGrainsOff];
    return e;
}

Result<void> sesparse_init_tables(Extent &e) {
    TableCheck tc = check_table(e.gd_offset, e.l1_size, 8, TableLimits{kMaxL1Entries * 8, 1, e.file->length()});
    if (!tc.ok())
        return make_error(EINVAL, "Could not read l1 table from extent '" + e.file->filename() +
                                      "': grain directory beyond the end of the file");
    if (e.gd_offset < 512)
        return make_error(EINVAL, "l1 table of extent '" + e.file->filename() + "' overlaps its header");
    auto gd = read_u64s(*e.file, e.gd_offset, e.l1_size);
    if (!gd) return Err(gd.error().prepended("Could not read l1 table from extent '" + e.file->filename() + "': "));
    e.se_gd = std::move(*gd);
    BlockNode *f = e.file.get();
    TableCache<SeGrainTable>::Io io;
    io.load = [f](uint64_t off) -> Result<std::shared_ptr<SeGrainTable>> {
        QIMG_ASSIGN(auto t, read_u64s(*f, off, kGtEntries));
        return std::make_shared<SeGrainTable>(std::move(t));
    };
    io.store = [](uint64_t, const SeGrainTable &) -> Result<void> {
        return make_error(EROFS, std::string(kSeSparseReadOnly));
    };
    e.se_gts = std::make_unique<TableCache<SeGrainTable>>(16, std::move(io));
    return ok();
}

Result<void> sesparse_map(Extent &e, uint64_t rel, Mapping &m) {
    const auto eio = [] { return make_error(EIO, "Input/output error"); };
    uint64_t sector = rel / 512;
    uint64_t l1 = sector / e.l1_entry_sectors;
    if (l1 >= e.se_gd.size()) return eio();
    uint64_t gde = e.se_gd[l1];
    if (!gde) return ok();
    // Allocated: 0x1 in the top nibble and nothing else in the top half
    // (QEMU's strict reading: 64 TiB of guest needs fewer than 2^32 tables).
    if ((gde >> 32) != 0x10000000) return eio();
    uint64_t gt_sector = e.se_tables_sector + (gde & 0xffffffff) * kGtSectors;
    if (gt_sector < e.se_tables_sector || gt_sector > 0xffffffff) return eio();
    QIMG_ASSIGN(auto t, e.se_gts->get(gt_sector * 512));
    uint64_t gte = (*t)[(sector / e.cluster_sectors) % e.l2_size];
    switch (gte >> 60) {
    case 0:
        if (gte) return eio();
        return ok();
    case 1:  // unmapped by the guest (SCSI UNMAP)
    case 2:  // zero grain
        m.kind = Mapping::Zeroed;
        return ok();
    case 3: {
        // Beyond QEMU: a grain past 2^63 bytes fails here, where QEMU's
        // arithmetic wraps and reads whatever lies at the wrapped offset.
        uint64_t index = ((gte >> 48) & 0xfff) | ((gte & 0x0000ffffffffffff) << 12);
        auto off = checked_mul<uint64_t>(index, e.cluster_sectors);
        if (off) off = checked_add(*off, e.se_grains_sector);
        if (off) off = checked_mul<uint64_t>(*off, 512);
        if (!off || *off > uint64_t(INT64_MAX)) return eio();
        m.kind = Mapping::Allocated;
        m.host = *off;
        return ok();
    }
    default:
        return eio();
    }
}

}  // namespace qimg::vmdk
