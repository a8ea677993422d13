// `--object tls-creds-x509|tls-creds-psk|tls-creds-anon,...`: QEMU's TLS
// credential objects, as far as an NBD client uses them. Creating one checks
// its properties and the files its directory must hold, in QEMU's words
// ("Missing 'dir' property value", "Unable to access credentials
// DIR/ca-cert.pem: No such file or directory", "Username qemu not found in
// PSK file DIR/keys.psk"); the nbd driver finds it by id (tls-creds=ID) and
// hands the directory to libnbd, which reads the same file names (GnuTLS's
// conventions, shared by QEMU and libnbd).
//
// Concurrency: objects are created while the command line is parsed, before
// any image is opened; lookups afterwards only read.
#pragma once

#include <optional>
#include <string>

namespace qimg::nbd {

struct TlsCreds {
    enum class Kind { X509, Psk, Anon } kind = Kind::X509;
    std::string dir;           // "" for anon without dir
    bool client = true;        // endpoint=client (the default)
    bool verify_peer = true;   // x509, anon
    std::string username;      // psk: the identity (QEMU's default "qemu")
};

// The credentials object `id`, or nullopt when no TLS credentials have that
// id (the caller tells "no object" from "another object").
std::optional<TlsCreds> find_tls_creds(const std::string &id);

}  // namespace qimg::nbd
