// TLS credential objects (tls_creds.h): properties set in QEMU's order (their
// values, then anything unexpected), then the object completed as QEMU's
// qcrypto_tls_creds_*_load checks it.
#include "protocol/nbd/tls_creds.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "block/object_types.h"
#include "crypto/secret.h"
#include "util/keyval.h"

namespace qimg::nbd {
namespace {

std::map<std::string, TlsCreds> &registry() {
    static std::map<std::string, TlsCreds> r;
    return r;
}

// QEMU's qcrypto_tls_creds_get_path: DIR/NAME, which must be readable when
// `required`; "" when it is optional and absent.
Result<std::string> creds_path(const std::string &dir, const char *name, bool required) {
    std::string path = dir + "/" + name;
    if (access(path.c_str(), R_OK) == 0) return path;
    if (!required && errno == ENOENT) return std::string();
    return make_error(errno, fmt::format("Unable to access credentials {}: {}", path, std::strerror(errno)));
}

// The client's identity must have a key in the PSK file ("name:hexkey" lines).
Result<void> check_psk_user(const std::string &file, const std::string &user) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line))
        if (line.size() > user.size() && line.compare(0, user.size(), user) == 0 && line[user.size()] == ':')
            return ok();
    return make_error(EINVAL, fmt::format("Username {} not found in PSK file {}", user, file));
}

Result<void> create(TlsCreds::Kind kind, const ObjectSpec &spec, const std::function<Result<void>()> &add_id) {
    std::set<std::string> known = {"dir", "endpoint", "verify-peer", "priority"};
    if (kind == TlsCreds::Kind::X509) known.insert({"sanity-check", "passwordid"});
    if (kind == TlsCreds::Kind::Psk) known.insert("username");
    TlsCreds c;
    c.kind = kind;
    const auto &p = spec.props;
    auto get = [&p](const char *k) -> const std::string * {
        auto it = p.find(k);
        return it == p.end() ? nullptr : &it->second;
    };
    if (const std::string *v = get("endpoint")) {
        if (*v != "client" && *v != "server")
            return make_error(EINVAL, fmt::format("Parameter 'endpoint' does not accept value '{}'", *v));
        c.client = *v == "client";
    }
    if (const std::string *v = get("verify-peer")) {
        QIMG_ASSIGN(c.verify_peer, parse_bool_opt("verify-peer", *v));
    }
    if (const std::string *v = get("sanity-check")) QIMG_TRY(parse_bool_opt("sanity-check", *v));
    if (const std::string *v = get("dir")) c.dir = *v;
    for (const auto &[k, v] : p)
        if (!known.count(k)) return make_error(EINVAL, fmt::format("Parameter '{}' is unexpected", k));
    QIMG_TRY(add_id());

    // Completion: what the endpoint must have in its directory.
    if (kind != TlsCreds::Kind::Anon && !get("dir")) return make_error(EINVAL, "Missing 'dir' property value");
    if (kind == TlsCreds::Kind::X509) {
        QIMG_TRY(creds_path(c.dir, "ca-cert.pem", true));
        QIMG_TRY(creds_path(c.dir, "ca-crl.pem", false));
        const char *cert = c.client ? "client-cert.pem" : "server-cert.pem";
        const char *key = c.client ? "client-key.pem" : "server-key.pem";
        QIMG_TRY(creds_path(c.dir, cert, !c.client));
        QIMG_TRY(creds_path(c.dir, key, !c.client));
        if (const std::string *id = get("passwordid")) QIMG_TRY(SecretStore::global().lookup_utf8(*id));
    } else if (kind == TlsCreds::Kind::Psk) {
        QIMG_ASSIGN(std::string file, creds_path(c.dir, "keys.psk", true));
        const std::string *user = get("username");
        c.username = user ? *user : "qemu";
        if (c.client) QIMG_TRY(check_psk_user(file, c.username));
    }
    registry()[spec.id] = std::move(c);
    return ok();
}

template <TlsCreds::Kind K>
const ObjectType *make_type(const char *name) {
    static ObjectType t{name, [](const ObjectSpec &spec, const std::function<Result<void>()> &add_id) {
                            return create(K, spec, add_id);
                        }};
    return &t;
}

ObjectTypeRegistrar g_x509{make_type<TlsCreds::Kind::X509>("tls-creds-x509")};
ObjectTypeRegistrar g_psk{make_type<TlsCreds::Kind::Psk>("tls-creds-psk")};
ObjectTypeRegistrar g_anon{make_type<TlsCreds::Kind::Anon>("tls-creds-anon")};

}  // namespace

std::optional<TlsCreds> find_tls_creds(const std::string &id) {
    auto it = registry().find(id);
    if (it == registry().end()) return std::nullopt;
    return it->second;
}

}  // namespace qimg::nbd
