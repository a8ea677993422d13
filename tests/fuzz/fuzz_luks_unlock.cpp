// libFuzzer target: LUKS1 unlock (crypto/luks_keys.h luks_unlock) with the
// fixed passphrase "fuzz" on a header and key material taken from the input:
// bytes [0, 592) are the header, the rest is the volume from the first key
// material offset (4 KiB) on; the header area in between reads as zeros.
// Seeds (tests/fuzz/corpus/fuzz_luks_unlock, tests/fuzz/make_luks_seeds.sh):
// real qemu-img volumes (aes-128 cbc-plain64 and cbc-essiv, iter-time 0)
// cut to the header and slot 0's key material, so the fuzzer starts from
// inputs that unlock.
//
// Iteration counts: luks_unlock accepts up to kLuksMaxIterations (2^28),
// far too slow for a fuzzer; the harness skips headers whose counts exceed
// kCap (the seeds have QEMU's minimum, 1000), so each input runs at most 9 PBKDF2
// derivations of kCap rounds.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "crypto/luks_header.h"
#include "crypto/luks_keys.h"

namespace {
constexpr uint32_t kCap = 4096;
constexpr uint64_t kMaterialStart = qimg::crypto::kLuksKeySlotOffset;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    using namespace qimg::crypto;
    if (size < kLuksHeaderSize) return 0;
    auto h = parse_luks_header(std::span<const uint8_t>(data, kLuksHeaderSize));
    if (!h) return 0;
    if (h->mk_digest_iterations > kCap) return 0;
    for (const LuksKeySlot &s : h->key_slots)
        if (s.enabled() && s.iterations > kCap) return 0;
    const std::span<const uint8_t> rest(data + kLuksHeaderSize, size - kLuksHeaderSize);
    auto read = [&](uint64_t off, void *buf, size_t len) -> qimg::Result<void> {
        auto *out = static_cast<uint8_t *>(buf);
        for (size_t i = 0; i < len; i++) {
            const uint64_t o = off + i;
            if (o < kMaterialStart) {
                out[i] = 0;
            } else if (o - kMaterialStart < rest.size()) {
                out[i] = rest[o - kMaterialStart];
            } else {
                return qimg::make_error(EIO, "read past the end of the volume");
            }
        }
        return qimg::ok();
    };
    if (auto key = luks_unlock(*h, "fuzz", read)) {
        // An opened volume: its payload cipher must build from the key.
        (void)SectorCipher::make(luks_cipher_spec(*h), *key);
    }
    return 0;
}
