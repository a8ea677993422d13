// qcow2 encryption (QEMU's qcow2_update_options, the crypto parts of
// qcow2_do_open and qcow2_co_create, qcow2_co_encdec): the encrypt.* open
// options, the LUKS header the "full disk encryption header pointer"
// extension names and its unlocking, the legacy AES key, the sector cipher
// guest data clusters go through, and the encrypt block of `qemu-img info`.
// Opening without I/O (qemu-img info) needs no key.
//
// IVs (qcow2.txt "Data encryption"; QEMU's crypt_physical_offset): LUKS
// numbers each 512-byte sector by its HOST offset in the image file, legacy
// AES by its GUEST offset.
#pragma once

#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "block/node.h"
#include "crypto/luks_header.h"
#include "crypto/luks_keys.h"
#include "crypto/secret.h"
#include "crypto/sector_cipher.h"
#include "format/qcow2/header.h"
#include "util/json_filename.h"

namespace qimg::qcow2 {

struct Encryption {
    uint32_t method = kCryptNone;
    // The parsed LUKS header (method kCryptLuks with the extension present).
    std::optional<crypto::LuksHeader> luks;
    // The data cipher; null when opened without I/O. Immutable and usable
    // from any thread (crypto/sector_cipher.h).
    std::shared_ptr<const crypto::SectorCipher> cipher;
    // The unlocked LUKS master key and the secrets of the open (for amend:
    // new-secret and old-secret are looked up there).
    std::string master_key;
    const SecretStore *secrets = nullptr;

    bool active() const { return method != kCryptNone; }
    // The sector number of the IV of the sector at `host` (image file) that
    // holds guest offset `guest`.
    uint64_t iv_sector(uint64_t host, uint64_t guest) const {
        return (method == kCryptLuks ? host : guest) / crypto::kCipherSectorSize;
    }
    // Whole 512-byte sectors in place (`host`, `guest` and `len` multiples of 512).
    Result<void> encrypt(uint64_t host, uint64_t guest, uint8_t *buf, size_t len) const;
    Result<void> decrypt(uint64_t host, uint64_t guest, uint8_t *buf, size_t len) const;
};

// Takes the encrypt.* members out of `options` (as QEMU extracts them) and
// opens the encryption layer of the image `h` on `file`: without no_io the
// passphrase, then the LUKS key slots unlocked (key material read inside
// the extension) or the AES key made. Messages as QEMU's:
// "No encryption in image header, but options specified format 'x'",
// "Header reported 'luks' encryption format but options specify 'x'",
// "Parameter 'x' is unexpected", "Parameter 'encrypt.key-secret' is
// required for cipher", secret lookup errors, "Missing CRYPTO header for
// crypt method 2", "Request for data outside of extension header", the LUKS
// header checks (crypto/luks_header.h), "Invalid password, cannot unlock
// any keyslot".
Result<Encryption> open_encryption(const Header &h, BlockNode &file, OptionMap &options, bool no_io,
                                   const SecretStore &secrets);

// What `qemu-img create -o encrypt.*` / `encryption=on` asks for, checked as
// QEMU's qcow2_co_create_opts and qcrypto_block_create check it.
// qcow2_amend_options() for encrypt.*: adds or erases key slots of the
// LUKS header in the crypto extension (crypto/luks_keys.h: QEMU's checks,
// messages and a crash-safe write order), with `o`'s encrypt.* members.
Result<void> amend_encryption(Encryption &e, const CryptoHeaderExtension &ext, BlockNode &file,
                              const std::map<std::string, std::string> &o, bool force);

struct EncryptionCreate {
    uint32_t method = kCryptNone;
    std::string passphrase;
    crypto::LuksCreateParams luks;  // method kCryptLuks
};
Result<EncryptionCreate> encryption_create_options(const std::map<std::string, std::string> &o,
                                                   const SecretStore &secrets);

// A new LUKS volume (header and slot 0) for `c`, laid out as QEMU does
// inside the qcow2 file: the header bytes and the key material at its
// offset, in one buffer of the header's length.
Result<std::vector<uint8_t>> luks_header_area(const EncryptionCreate &c);

// ImageInfoSpecificQCow2Encryption ("encrypt" in the format-specific info),
// null when the image has no encryption layer open.
nlohmann::ordered_json encryption_info_json(const Encryption &e);

}  // namespace qimg::qcow2
