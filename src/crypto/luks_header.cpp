// LUKS1 header parsing and validation (see luks_header.h). The checks follow
// QEMU's crypto/block-luks.c in order and wording so that a damaged header
// gets the message qemu-img gives, including QEMU's 32-bit arithmetic in the
// key slot layout checks (see check_layout). Nothing here reads key
// material; whoever does must bound it by the header area it reads from.
#include "crypto/luks_header.h"

#include "crypto/sector_cipher.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "util/endian.h"

namespace qimg::crypto {
namespace {

constexpr uint8_t kLuksMagic[kLuksMagicLen] = {'L', 'U', 'K', 'S', 0xBA, 0xBE};

// Byte offsets in the phdr (LUKS1 on-disk format, "Table 1").
constexpr size_t kOffVersion = 6, kOffCipherName = 8, kOffCipherMode = 40, kOffHashSpec = 72;
constexpr size_t kOffPayload = 104, kOffKeyBytes = 108, kOffMkDigest = 112, kOffMkDigestSalt = 132;
constexpr size_t kOffMkDigestIter = 164, kOffUuid = 168, kOffKeySlots = 208, kKeySlotSize = 48;
constexpr size_t kNameLen = 32, kUuidLen = 40;

// QCryptoCipherAlgorithm members a LUKS cipher name can resolve to, with
// their key sizes (qcrypto_block_luks_cipher_name_map).
struct CipherSize {
    const char *name;      // LUKS name
    uint32_t key_bytes;    // per cipher (half of an XTS key)
    const char *alg;       // QAPI name
};
constexpr CipherSize kCiphers[] = {
    {"aes", 16, "aes-128"},         {"aes", 24, "aes-192"},         {"aes", 32, "aes-256"},
    {"cast5", 16, "cast5-128"},     {"serpent", 16, "serpent-128"}, {"serpent", 24, "serpent-192"},
    {"serpent", 32, "serpent-256"}, {"twofish", 16, "twofish-128"}, {"twofish", 24, "twofish-192"},
    {"twofish", 32, "twofish-256"},
};

constexpr const char *kCipherModes[] = {"ecb", "cbc", "xts", "ctr"};
constexpr const char *kIvGens[] = {"plain", "plain64", "essiv"};

template <class Range>
bool has_name(const Range &r, std::string_view name) {
    return std::any_of(std::begin(r), std::end(r), [&](const auto &e) { return name == e; });
}

// A fixed-size name field: must hold its NUL ("LUKS header <what> is not NUL
// terminated").
Result<std::string> name_field(const uint8_t *p, size_t len, const char *what) {
    const void *nul = std::memchr(p, 0, len);
    if (!nul) return make_error(EINVAL, fmt::format("LUKS header {} is not NUL terminated", what));
    return std::string(reinterpret_cast<const char *>(p), static_cast<const uint8_t *>(nul) - p);
}

// QCryptoHashAlgorithm names: those the sector cipher layer knows.
Result<std::string> hash_lookup(const std::string &name) {
    if (hash_digest_len_of(name) != 0) return name;
    return make_error(EINVAL, fmt::format("Hash algorithm '{}' not supported", name));
}

const CipherSize *cipher_by_alg(std::string_view alg) {
    for (const CipherSize &c : kCiphers)
        if (alg == c.alg) return &c;
    return nullptr;
}

// qcrypto_block_luks_essiv_cipher(): ESSIV encrypts the sector number with
// the same cipher family keyed by hash(master key), so the digest size picks
// the key size.
Result<std::string> essiv_cipher(const std::string &cipher_alg, const std::string &hash) {
    const CipherSize *c = cipher_by_alg(cipher_alg);
    const uint32_t digest = hash_digest_len_of(hash);
    if (c->key_bytes == digest) return cipher_alg;
    const std::string_view family = c->name;
    if (family == "cast5") return make_error(EINVAL, fmt::format("Cipher {} not supported with essiv", cipher_alg));
    for (const CipherSize &e : kCiphers)
        if (family == e.name && e.key_bytes == digest) return std::string(e.alg);
    const char *label = family == "aes" ? "AES" : family == "serpent" ? "Serpent" : "Twofish";
    return make_error(EINVAL, fmt::format("No {} cipher with key size {} available", label, digest));
}

LuksKeySlot read_key_slot(const uint8_t *p) {
    LuksKeySlot s;
    s.active = be32(p);
    s.iterations = be32(p + 4);
    std::memcpy(s.salt.data(), p + 8, s.salt.size());
    s.key_offset_sector = be32(p + 40);
    s.stripes = be32(p + 44);
    return s;
}

// qcrypto_block_luks_splitkeylen_sectors() with QEMU's types: the product
// and the sums of the callers are 32-bit and may wrap, so that a slot at the
// top of the sector range passes the checks (and qemu-img info shows it).
// Kept for the same answers as qemu-img; LuksHeader::key_material_sectors()
// is the exact size.
uint32_t qemu_key_material_sectors(const LuksHeader &h, uint32_t stripes) {
    constexpr uint32_t kHeaderSectors = kLuksKeySlotOffset / kLuksSectorSize;
    const uint32_t bytes = h.master_key_len * stripes;
    const uint64_t sectors = (uint64_t{bytes} + kLuksSectorSize - 1) / kLuksSectorSize;
    return uint32_t((sectors + kHeaderSectors - 1) / kHeaderSectors * kHeaderSectors);
}

// qcrypto_block_luks_check_header() after the names.
Result<void> check_layout(const LuksHeader &h) {
    constexpr uint64_t kHeaderSectors = kLuksKeySlotOffset / kLuksSectorSize;
    if (h.payload_offset_sector < kHeaderSectors)
        return make_error(EINVAL, "LUKS payload is overlapping with the header");
    if (h.mk_digest_iterations == 0) return make_error(EINVAL, "LUKS key iteration count is zero");
    for (size_t i = 0; i < kLuksNumKeySlots; i++) {
        const LuksKeySlot &s1 = h.key_slots[i];
        if (s1.stripes != kLuksStripes)
            return make_error(EINVAL, fmt::format("Keyslot {} is corrupted (stripes {} != {})", i,
                                                  static_cast<int32_t>(s1.stripes), kLuksStripes));
        if (s1.active != kLuksKeySlotDisabled && s1.active != kLuksKeySlotEnabled)
            return make_error(EINVAL, fmt::format("Keyslot {} state (active/disable) is corrupted", i));
        if (s1.enabled() && s1.iterations == 0)
            return make_error(EINVAL, fmt::format("Keyslot {} iteration count is zero", i));
        const uint32_t start1 = s1.key_offset_sector, len1 = qemu_key_material_sectors(h, s1.stripes);
        if (start1 < kHeaderSectors)
            return make_error(EINVAL, fmt::format("Keyslot {} is overlapping with the LUKS header", i));
        if (uint32_t(start1 + len1) > h.payload_offset_sector)
            return make_error(EINVAL, fmt::format("Keyslot {} is overlapping with the encrypted payload", i));
        for (size_t j = i + 1; j < kLuksNumKeySlots; j++) {
            const uint32_t start2 = h.key_slots[j].key_offset_sector;
            const uint32_t len2 = qemu_key_material_sectors(h, h.key_slots[j].stripes);
            if (uint32_t(start1 + len1) > start2 && uint32_t(start2 + len2) > start1)
                return make_error(EINVAL, fmt::format("Keyslots {} and {} are overlapping in the header", i, j));
        }
    }
    return ok();
}

// qcrypto_block_luks_parse_header(): "<mode>-<ivgen>[:<ivhash>]", the
// cipher by name and key size, the hash.
Result<void> resolve_algorithms(LuksHeader &h) {
    const size_t dash = h.cipher_mode.find('-');
    if (dash == std::string::npos)
        return make_error(EINVAL, fmt::format("Unexpected cipher mode string format '{}'", h.cipher_mode));
    h.mode = h.cipher_mode.substr(0, dash);
    std::string ivgen = h.cipher_mode.substr(dash + 1);
    if (const size_t colon = ivgen.find(':'); colon != std::string::npos) {
        QIMG_ASSIGN(std::string ivhash, hash_lookup(ivgen.substr(colon + 1)));
        h.ivgen_hash_alg = ivhash;
        ivgen.resize(colon);
    }
    if (!has_name(kCipherModes, h.mode))
        return make_error(EINVAL, fmt::format("Cipher mode '{}' not supported", h.mode));
    // An XTS key is two cipher keys.
    const uint32_t key_bytes = h.mode == "xts" ? h.master_key_len / 2 : h.master_key_len;
    const auto c = std::find_if(std::begin(kCiphers), std::end(kCiphers), [&](const CipherSize &e) {
        return h.cipher_name == e.name && e.key_bytes == key_bytes;
    });
    if (c == std::end(kCiphers))
        return make_error(EINVAL, fmt::format("Algorithm '{}' with key size {} bytes not supported", h.cipher_name,
                                              static_cast<int32_t>(key_bytes)));
    h.cipher_alg = c->alg;
    QIMG_ASSIGN(h.hash_alg, hash_lookup(h.hash_spec));
    if (!has_name(kIvGens, ivgen)) return make_error(EINVAL, fmt::format("IV generator '{}' not supported", ivgen));
    h.ivgen_alg = ivgen;
    if (ivgen == "essiv") {
        if (!h.ivgen_hash_alg) return make_error(EINVAL, "Missing IV generator hash specification");
        QIMG_ASSIGN(h.ivgen_cipher_alg, essiv_cipher(h.cipher_alg, *h.ivgen_hash_alg));
    } else {
        // A hash after plain/plain64 is ignored, as dm-crypt does.
        h.ivgen_cipher_alg = h.cipher_alg;
    }
    return ok();
}

}  // namespace

uint64_t LuksHeader::key_material_sectors(uint32_t stripes) const {
    constexpr uint64_t kHeaderSectors = kLuksKeySlotOffset / kLuksSectorSize;
    const uint64_t bytes = uint64_t{master_key_len} * stripes;
    const uint64_t sectors = (bytes + kLuksSectorSize - 1) / kLuksSectorSize;
    return (sectors + kHeaderSectors - 1) / kHeaderSectors * kHeaderSectors;
}

bool is_luks_header(std::span<const uint8_t> bytes) {
    return bytes.size() >= kOffCipherName && std::memcmp(bytes.data(), kLuksMagic, kLuksMagicLen) == 0 &&
           be16(bytes.data() + kOffVersion) == kLuksVersion;
}

Result<LuksHeader> parse_luks_header(std::span<const uint8_t> bytes) {
    if (bytes.size() < kLuksHeaderSize) return make_error(EINVAL, "LUKS header truncated");
    const uint8_t *b = bytes.data();
    LuksHeader h;
    if (std::memcmp(b, kLuksMagic, kLuksMagicLen) != 0) return make_error(EINVAL, "Volume is not in LUKS format");
    h.version = be16(b + kOffVersion);
    if (h.version != kLuksVersion)
        return make_error(ENOTSUP, fmt::format("LUKS version {} is not supported", h.version));
    QIMG_ASSIGN(h.cipher_name, name_field(b + kOffCipherName, kNameLen, "cipher name"));
    QIMG_ASSIGN(h.cipher_mode, name_field(b + kOffCipherMode, kNameLen, "cipher mode"));
    QIMG_ASSIGN(h.hash_spec, name_field(b + kOffHashSpec, kNameLen, "hash spec"));
    h.payload_offset_sector = be32(b + kOffPayload);
    h.master_key_len = be32(b + kOffKeyBytes);
    std::memcpy(h.mk_digest.data(), b + kOffMkDigest, h.mk_digest.size());
    std::memcpy(h.mk_digest_salt.data(), b + kOffMkDigestSalt, h.mk_digest_salt.size());
    h.mk_digest_iterations = be32(b + kOffMkDigestIter);
    const char *uuid = reinterpret_cast<const char *>(b + kOffUuid);
    h.uuid.assign(uuid, strnlen(uuid, kUuidLen));
    for (size_t i = 0; i < kLuksNumKeySlots; i++) h.key_slots[i] = read_key_slot(b + kOffKeySlots + i * kKeySlotSize);
    QIMG_TRY(check_layout(h));
    QIMG_TRY(resolve_algorithms(h));
    return h;
}

std::vector<uint8_t> serialize_luks_header(const LuksHeader &h) {
    std::vector<uint8_t> out(kLuksHeaderSize, 0);
    uint8_t *b = out.data();
    std::memcpy(b, kLuksMagic, kLuksMagicLen);
    put_be16(b + kOffVersion, h.version);
    // Names are cut to leave their NUL, as the parser requires.
    auto name = [](uint8_t *dst, const std::string &s, size_t len) {
        std::memcpy(dst, s.data(), std::min(s.size(), len - 1));
    };
    name(b + kOffCipherName, h.cipher_name, kNameLen);
    name(b + kOffCipherMode, h.cipher_mode, kNameLen);
    name(b + kOffHashSpec, h.hash_spec, kNameLen);
    put_be32(b + kOffPayload, h.payload_offset_sector);
    put_be32(b + kOffKeyBytes, h.master_key_len);
    std::memcpy(b + kOffMkDigest, h.mk_digest.data(), h.mk_digest.size());
    std::memcpy(b + kOffMkDigestSalt, h.mk_digest_salt.data(), h.mk_digest_salt.size());
    put_be32(b + kOffMkDigestIter, h.mk_digest_iterations);
    std::memcpy(b + kOffUuid, h.uuid.data(), std::min(h.uuid.size(), kUuidLen - 1));
    for (size_t i = 0; i < kLuksNumKeySlots; i++) {
        uint8_t *p = b + kOffKeySlots + i * kKeySlotSize;
        const LuksKeySlot &s = h.key_slots[i];
        put_be32(p, s.active);
        put_be32(p + 4, s.iterations);
        std::memcpy(p + 8, s.salt.data(), s.salt.size());
        put_be32(p + 40, s.key_offset_sector);
        put_be32(p + 44, s.stripes);
    }
    return out;
}

nlohmann::ordered_json luks_info_json(const LuksHeader &h) {
    nlohmann::ordered_json j;
    j["cipher-alg"] = h.cipher_alg;
    j["cipher-mode"] = h.mode;
    j["ivgen-alg"] = h.ivgen_alg;
    // qcrypto_block_luks_get_info(): the IV hash only for ESSIV.
    if (h.ivgen_alg == "essiv") j["ivgen-hash-alg"] = *h.ivgen_hash_alg;
    j["hash-alg"] = h.hash_alg;
    j["payload-offset"] = h.payload_offset();
    j["master-key-iters"] = h.mk_digest_iterations;
    j["uuid"] = h.uuid;
    nlohmann::ordered_json slots = nlohmann::ordered_json::array();
    for (const LuksKeySlot &s : h.key_slots) {
        nlohmann::ordered_json e;
        e["active"] = s.enabled();
        if (s.enabled()) {
            e["iters"] = s.iterations;
            e["stripes"] = s.stripes;
        }
        e["key-offset"] = uint64_t{s.key_offset_sector} * kLuksSectorSize;
        slots.push_back(e);
    }
    j["slots"] = slots;
    return j;
}

}  // namespace qimg::crypto
