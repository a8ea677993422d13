// The legacy "qcow" AES encryption of qcow v1 and qcow2 crypt_method 1
// (QEMU's crypto/block-qcow.c): AES-128-CBC, each 512-byte sector with a
// plain64 IV of its sector number, keyed directly by the passphrase (its
// bytes up to the first NUL, truncated or zero-padded to 16 bytes; no key
// derivation, no check of the passphrase). Which offset numbers the sectors
// is the container's business (both qcow versions count guest sectors).
#pragma once

#include <memory>
#include <string_view>

#include "crypto/sector_cipher.h"
#include "util/result.h"

namespace qimg::crypto {

inline constexpr size_t kQcowAesKeyLen = 16;

// qcrypto_block_qcow_init(): the 16-byte key of a passphrase.
std::string qcow_aes_key(std::string_view passphrase);

// The sector cipher of a qcow AES image keyed by `passphrase`.
Result<std::shared_ptr<const SectorCipher>> qcow_aes_cipher(std::string_view passphrase);

}  // namespace qimg::crypto
