// The secrets of `--object secret,...`: each one is loaded and validated when
// it is defined, as QEMU completes a secret object at creation, and later
// code (encrypted formats: encrypt.key-secret, key-secret) looks it up by id.
// No format knowledge here.
//
// Concurrency: the CLI fills the store while it parses the command line,
// before any image is opened; after that it is only read, from any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "util/keyval.h"
#include "util/result.h"

namespace qimg {

class SecretStore {
public:
    // user_creatable_add_type() for a parsed --object (not a help request):
    // the id must be new ("attempt to add duplicate property '<id>' to object
    // (type 'container')"); a secret is then loaded by load(). A failed
    // object is not kept. Objects of other types only reserve their id (and
    // answer "Object with id '<id>' is not a secret" to a lookup).
    Result<void> add(const ObjectSpec &spec);

    // qcrypto_secret_complete(): the bytes of a secret object, in QEMU's
    // order and words: data= or the contents of file= ("Unable to read
    // <file>: <reason>"), then either base64-decoded (format=base64:
    // "Base64 data contains invalid characters") or, with keyid=, checked for
    // decryption with the secret <keyid> ("No secret with id", "Key should be
    // 32 bytes in length", "IV is required to decrypt secret", "IV should be
    // 16 bytes in length not N", "Length N must be a multiple of block size
    // 16"), then AES-256-CBC decrypted and its padding dropped ("Incorrect
    // number of padding bytes (N) found on decrypted data"). keyid= is
    // resolved in this store.
    Result<std::string> load(const ObjectSpec &spec) const;

    // qcrypto_secret_lookup(): "No secret with id '<id>'", "Object with id
    // '<id>' is not a secret".
    Result<std::string> lookup(std::string_view id) const;
    // qcrypto_secret_lookup_as_utf8(): also "Data from secret <id> is not
    // valid UTF-8". What passphrases (LUKS key-secret) go through.
    Result<std::string> lookup_utf8(std::string_view id) const;

    // The store --object fills (the command line's objects).
    static SecretStore &global();

private:
    struct Entry {
        bool is_secret = false;
        // Unset while a secret is being loaded (a keyid= naming itself sees
        // "Secret with id '<id>' has no data", as in QEMU).
        std::optional<std::string> data;
    };
    std::map<std::string, Entry, std::less<>> objects_;
};

// The bytes of one secret object as load() gives them in an empty store
// (keyid= then names a missing secret).
Result<std::string> secret_value(const ObjectSpec &spec);

}  // namespace qimg
