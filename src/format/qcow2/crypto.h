// qcow2 encryption at open time (QEMU's qcow2_update_options and the crypto
// parts of qcow2_do_open): the encrypt.* open options, the LUKS header the
// "full disk encryption header pointer" extension names, and the encrypt
// block of `qemu-img info`. Opening without I/O (qemu-img info) needs no
// key; any other open needs encrypt.key-secret and then fails, since qimg
// cannot decrypt guest data yet.
#pragma once

#include <optional>

#include <nlohmann/json.hpp>

#include "block/node.h"
#include "crypto/luks_header.h"
#include "crypto/secret.h"
#include "format/qcow2/header.h"
#include "util/json_filename.h"

namespace qimg::qcow2 {

struct Encryption {
    uint32_t method = kCryptNone;
    // The parsed LUKS header (method kCryptLuks with the extension present).
    std::optional<crypto::LuksHeader> luks;
};

// Takes the encrypt.* members out of `options` (as QEMU extracts them) and
// opens the encryption layer of the image `h` on `file`. Messages as QEMU's:
// "No encryption in image header, but options specified format 'x'",
// "Header reported 'luks' encryption format but options specify 'x'",
// "Parameter 'x' is unexpected", "Parameter 'encrypt.key-secret' is
// required for cipher", secret lookup errors, "Missing CRYPTO header for
// crypt method 2", "Request for data outside of extension header", the LUKS
// header checks (crypto/luks_header.h).
Result<Encryption> open_encryption(const Header &h, BlockNode &file, OptionMap &options, bool no_io,
                                   const SecretStore &secrets);

// ImageInfoSpecificQCow2Encryption ("encrypt" in the format-specific info),
// null when the image has no encryption layer open.
nlohmann::ordered_json encryption_info_json(const Encryption &e);

}  // namespace qimg::qcow2
