// The VHDX log: a circular buffer of 4 KiB sectors holding entries (a
// header "loge", descriptors "desc"/"zero", data sectors "data") that
// describe metadata writes. An image whose active header names a log GUID
// may have a sequence of valid entries that must be written to the file
// before its metadata is read ("replayed"). As QEMU: the log is searched
// for the valid sequence whose first entry has the highest sequence
// number; a read-only open refuses such an image, a read-write open
// replays it and empties the log.
//
// Beyond QEMU (a hostile log gets an error, never a hang or a write
// anywhere): the search stops once it has gone round the buffer (QEMU
// loops forever on an entry as long as the whole log), a descriptor area
// is bounded, and replayed writes must stay out of the file identifier,
// headers, region tables and the log itself, and end below the larger of
// the file's end and the entry's last file offset.
#pragma once

#include <cstdint>
#include <optional>

#include "block/node.h"
#include "format/vhdx/format.h"

namespace qimg::vhdx {

constexpr uint32_t kLogEntrySignature = 0x65676f6c;  // "loge"
constexpr uint32_t kLogDescSignature = 0x63736564;   // "desc"
constexpr uint32_t kLogZeroSignature = 0x6f72657a;   // "zero"
constexpr uint32_t kLogDataSignature = 0x61746164;   // "data"
constexpr size_t kLogHeaderSize = 64, kLogDescSize = 32;
// Largest descriptor area accepted (QEMU allocates what the entry says).
constexpr uint64_t kMaxLogDescBytes = 32 * MiB;

struct LogPlace {
    uint64_t offset = 0;  // of the log in the file
    uint32_t length = 0;  // a multiple of 1 MiB
    Guid guid{};          // the active header's log GUID
};

// The active sequence: `count` entries from `start` (a log position).
struct LogSequence {
    uint32_t start = 0, end = 0;
    uint32_t count = 0;
    uint64_t first_sequence = 0;
};

// Validates where the header puts the log (EINVAL as QEMU) and whether
// there is one at all: false when the GUID or the length is zero.
Result<bool> log_present(const Header &h);

// Searches the log; nullopt when no valid entry is in it.
Result<std::optional<LogSequence>> find_log_sequence(BlockNode &file, const LogPlace &log);

// Writes the sequence's entries into the file and flushes (the caller then
// empties the log by rewriting the headers with a zero log GUID).
Result<void> replay_log(BlockNode &file, const LogPlace &log, const LogSequence &seq);

}  // namespace qimg::vhdx
