// The VHDX log: search for the active sequence and its replay (log.h).
#include "format/vhdx/log.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "block/table_check.h"
#include "util/checked.h"
#include "util/crc32c.h"

namespace qimg::vhdx {
namespace {

namespace entry {
constexpr Le32 signature{0};
constexpr Le32 checksum{4};
constexpr Le32 length{8};
constexpr Le64 sequence{16};
constexpr Le32 descriptors{24};
constexpr size_t log_guid = 32;
constexpr Le64 flushed_offset{48};
constexpr Le64 last_offset{56};
}  // namespace entry
namespace desc {
constexpr Le32 signature{0};
constexpr Le32 trailing{4};
constexpr Le64 leading{8};  // a zero descriptor: the zeroed length
constexpr Le64 file_offset{16};
constexpr Le64 sequence{24};
}  // namespace desc

Error inval() { return Error{EINVAL, "Invalid argument"}; }

struct EntryHeader {
    uint32_t checksum = 0, length = 0, descriptors = 0;
    uint64_t sequence = 0, flushed_offset = 0, last_offset = 0;
    bool valid = false;  // QEMU's vhdx_log_hdr_is_valid
};

struct Descriptor {
    uint32_t signature = 0, trailing = 0;
    uint64_t leading = 0, file_offset = 0, sequence = 0;
};

// Sectors holding the header and `n` descriptors (126 in the first
// sector, 128 in each next one); at least one.
uint64_t desc_sectors(uint32_t n) { return div_round_up(uint64_t(n) + 2, uint64_t(128)); }

class LogWalker {
public:
    LogWalker(BlockNode &file, const LogPlace &log) : file_(file), log_(log) {}

    uint32_t pos = 0;  // the read position, a multiple of the sector size

    void advance() { pos = next(pos); }
    uint32_t next(uint32_t p) const {
        uint64_t n = uint64_t(p) + kLogSectorSize;
        return n >= log_.length ? 0 : uint32_t(n);
    }
    Result<void> read_sector(uint8_t *buf) {
        QIMG_TRY(read_padded(file_, log_.offset + pos, buf, kLogSectorSize));
        advance();
        return ok();
    }
    Result<EntryHeader> peek_header() {
        // Past the end of the file the log reads as zeroes: no entry there
        // (a hostile 4 GiB log beyond a small file is skipped without I/O).
        if (log_.offset + pos >= file_.length()) return EntryHeader{};
        uint8_t b[kLogHeaderSize];
        QIMG_TRY(read_padded(file_, log_.offset + pos, b, sizeof b));
        ByteReader r(std::span<const uint8_t>(b, sizeof b));
        EntryHeader h;
        h.checksum = r.get(entry::checksum);
        h.length = r.get(entry::length);
        h.sequence = r.get(entry::sequence);
        h.descriptors = r.get(entry::descriptors);
        h.flushed_offset = r.get(entry::flushed_offset);
        h.last_offset = r.get(entry::last_offset);
        h.valid = r.get(entry::signature) == kLogEntrySignature && h.length <= log_.length &&
                  h.length % kLogSectorSize == 0 && h.sequence != 0 &&
                  std::memcmp(b + entry::log_guid, log_.guid.data(), 16) == 0 &&
                  uint64_t(h.descriptors) * kLogDescSize <= h.length;
        return h;
    }
    // Reads the header and descriptor sectors of the entry at pos (moving
    // past them) and checks every descriptor: an invalid one fails the
    // whole open (EINVAL), as in QEMU.
    Result<std::vector<uint8_t>> read_descriptors(const EntryHeader &h) {
        uint64_t n = desc_sectors(h.descriptors);
        if (n * kLogSectorSize > kMaxLogDescBytes)
            return make_error(EINVAL, "VHDX log entry has too many descriptors (" + std::to_string(h.descriptors) + ")");
        std::vector<uint8_t> buf(n * kLogSectorSize);
        for (uint64_t i = 0; i < n; ++i) QIMG_TRY(read_sector(buf.data() + i * kLogSectorSize));
        for (uint32_t i = 0; i < h.descriptors; ++i) {
            Descriptor d = descriptor(buf, i);
            bool ok = d.sequence == h.sequence && d.file_offset % kLogSectorSize == 0 &&
                      ((d.signature == kLogZeroSignature && d.leading % kLogSectorSize == 0) ||
                       d.signature == kLogDescSignature);
            if (!ok) return Err(inval());
        }
        return buf;
    }
    static Descriptor descriptor(const std::vector<uint8_t> &buf, uint32_t i) {
        ByteReader r(std::span<const uint8_t>(buf).subspan(kLogHeaderSize + size_t(i) * kLogDescSize, kLogDescSize));
        return Descriptor{r.get(desc::signature), r.get(desc::trailing), r.get(desc::leading),
                          r.get(desc::file_offset), r.get(desc::sequence)};
    }

    // QEMU's vhdx_validate_log_entry: whether a valid entry following
    // `prev_seq` (0: any) starts at pos. Moves past what it read; one
    // sector when there is no entry header at all.
    Result<std::optional<EntryHeader>> validate(uint64_t prev_seq) {
        QIMG_ASSIGN(EntryHeader h, peek_header());
        if (!h.valid || (prev_seq > 0 && h.sequence != prev_seq + 1)) {
            advance();
            return std::optional<EntryHeader>();
        }
        QIMG_ASSIGN(std::vector<uint8_t> d, read_descriptors(h));
        uint32_t crc = checksum(d, entry::checksum.offset);
        uint64_t total = h.length / kLogSectorSize;
        uint64_t ndesc = d.size() / kLogSectorSize;
        std::vector<uint8_t> sector(kLogSectorSize);
        for (uint64_t i = ndesc; i < total; ++i) {
            QIMG_TRY(read_sector(sector.data()));
            crc = crc32c(sector, crc);
        }
        if (crc != h.checksum) return std::optional<EntryHeader>();
        return std::optional<EntryHeader>(h);
    }

private:
    BlockNode &file_;
    const LogPlace &log_;
};

}  // namespace

Result<bool> log_present(const Header &h) {
    if (h.log_offset < kLogMinSize || h.log_offset % kLogMinSize) return Err(inval());
    if (h.log_version != 0) return Err(inval());
    if (is_zero(h.log_guid) || h.log_length == 0) return false;
    if (h.log_length % kLogMinSize) return Err(inval());
    return true;
}

Result<std::optional<LogSequence>> find_log_sequence(BlockNode &file, const LogPlace &log) {
    LogWalker w(file, log);
    std::optional<LogSequence> best;
    // Every step moves the position on by at least one sector; the search
    // ends once it has come back to or before where a step began (QEMU
    // stops only strictly before it, so an entry spanning the whole log
    // would keep it going round).
    uint64_t rounds = 0, sectors = log.length / kLogSectorSize;
    for (;;) {
        uint32_t tail = w.pos;
        QIMG_ASSIGN(auto first, w.validate(0));
        if (first) {
            LogSequence cur{tail, w.pos, 1, first->sequence};
            uint64_t seq = 0;  // as QEMU: the entry right after the first is not chained by number
            uint64_t steps = 0;
            for (;;) {
                uint32_t before = w.pos;
                QIMG_ASSIGN(auto e, w.validate(seq));
                if (!e) break;
                cur.end = w.pos;
                cur.count++;
                seq = e->sequence;
                // Strictly increasing numbers cannot go round more than
                // once; the bound stops a log of identical copies.
                if (++steps > log.length / kLogSectorSize || w.pos == before) break;
            }
            if (!best || cur.first_sequence > best->first_sequence) best = cur;
        }
        if (w.pos <= tail || ++rounds > sectors) break;
    }
    return best;
}

Result<void> replay_log(BlockNode &file, const LogPlace &log, const LogSequence &seq) {
    LogWalker w(file, log);
    w.pos = seq.start;
    std::vector<uint8_t> data(kLogSectorSize), out(kLogSectorSize);
    for (uint32_t n = 0; n < seq.count; ++n) {
        uint64_t flen = file.length();
        QIMG_ASSIGN(EntryHeader h, w.peek_header());
        // A log that says the file was longer than it is: truncated.
        if (h.flushed_offset > flen) return Err(inval());
        if (!h.valid) return Err(inval());
        QIMG_ASSIGN(std::vector<uint8_t> d, w.read_descriptors(h));
        uint64_t limit = std::max(flen, checked_align_up(h.last_offset, MiB).value_or(UINT64_MAX));
        limit = std::min<uint64_t>(limit, uint64_t(INT64_MAX));
        for (uint32_t i = 0; i < h.descriptors; ++i) {
            Descriptor dc = LogWalker::descriptor(d, i);
            uint64_t len = dc.signature == kLogZeroSignature ? dc.leading : kLogSectorSize;
            if (!range_fits(dc.file_offset, len, limit) || dc.file_offset < kRegionTableOffset ||
                extents_overlap(dc.file_offset, len, log.offset, log.length))
                return make_error(EINVAL, "VHDX log entry " + std::to_string(h.sequence) +
                                              " writes outside the image's data and metadata area");
            if (dc.signature == kLogZeroSignature) {
                if (len) QIMG_TRY(file.write_zeroes(dc.file_offset, len, 0));
                continue;
            }
            QIMG_TRY(w.read_sector(data.data()));
            uint64_t dseq = (uint64_t(le32(data.data() + 4)) << 32) | le32(data.data() + kLogSectorSize - 4);
            if (dseq != dc.sequence) return Err(inval());
            put_le64(out.data(), dc.leading);
            std::memcpy(out.data() + 8, data.data() + 8, kLogSectorSize - 12);
            put_le32(out.data() + kLogSectorSize - 4, dc.trailing);
            QIMG_TRY(file.write(dc.file_offset, out.data(), out.size()));
        }
        QIMG_TRY(file.flush());
        if (flen < h.last_offset) {
            auto size = checked_align_up(h.last_offset, MiB);
            if (!size || *size > uint64_t(INT64_MAX)) return Err(inval());
            if (file.length() < *size) QIMG_TRY(file.truncate(*size, Prealloc::Off, false));
        }
    }
    return file.flush();
}

}  // namespace qimg::vhdx
