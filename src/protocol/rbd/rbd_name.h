// Ceph RBD names and options as QEMU 7.2's rbd driver takes them: the
// "rbd:pool[/namespace]/image[@snapshot][:key=value...]" filename
// (qemu_rbd_parse_filename, with its '\' escapes), the option set of
// BlockdevOptionsRbd checked in the order and words of QEMU's QAPI visitor,
// and the options an opened node shows in its json: name. No librados here:
// what the unit tests check without a cluster.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/json_filename.h"
#include "util/result.h"

namespace qimg::rbd {

// Ceph configuration keys and values given in the filename (":key=value"),
// passed to rados_conf_set in their order ("conf" and "id" excepted).
using KeyPairs = std::vector<std::pair<std::string, std::string>>;

struct Server {
    std::string host, port;
};

// QEMU's BlockdevOptionsRbd (+ the legacy password-secret).
struct Location {
    std::string pool, image;
    std::optional<std::string> ns;  // "namespace"
    std::optional<std::string> conf, snapshot, user, key_secret, password_secret;
    std::optional<std::vector<std::string>> auth_client_required;  // "cephx" / "none"
    std::vector<Server> server;
    // encrypt.* (RbdEncryptionOptions): librbd's LUKS, loaded at open.
    std::optional<std::string> encrypt_format;      // "luks" / "luks2"
    std::string encrypt_key_secret;                 // its passphrase's secret id
    KeyPairs keypairs;
};

// QEMU's qemu_rbd_parse_filename: the options a name given as a string
// stands for ("pool", "namespace" (always, "" when absent), "image",
// "snapshot", "conf", "user"), added to `opts`, and its other key=value
// pairs. Errors: "File name must start with 'rbd:'", "Pool name is
// required", "conf option NAME has no value".
Result<void> parse_filename(std::string_view filename, OptionMap &opts, KeyPairs &keypairs);

// QEMU's qemu_rbd_strchr/next_tok/unescape, for the tests.
std::string unescape(std::string_view s);

// The options of `opts` (flattened: "server.0.host", "auth-client-required.1")
// as QEMU's QAPI visitor reads BlockdevOptionsRbd: they are all taken out of
// `opts`; errors in its order and words ("Parameter 'pool' is missing",
// "Parameter 'server.0.port' is missing", "Parameter 'x' is unexpected", ...).
Result<Location> take_location(OptionMap &opts);

// The encrypt.* creation options (QEMU's RbdEncryptionCreateOptions, read
// from -o encrypt.format/key-secret/cipher-alg), checked in its visitor's
// order and words ("Parameter 'format' is missing", "Parameter 'key-secret'
// is missing", "Parameter 'cipher-alg' does not accept value 'x'");
// nullopt without any. cipher_alg is QEMU's QCryptoCipherAlgorithm number
// (aes-128 0, aes-256 2, ...), -1 when not given.
struct EncryptCreate {
    std::string format;  // "luks" / "luks2"
    std::string key_secret;
    int cipher_alg = -1;
};
Result<std::optional<EncryptCreate>> encrypt_create_options(const std::map<std::string, std::string> &opts);

// The "mon_host" value for the server list (QEMU's qemu_rbd_mon_host:
// "host:port;[v6]:port"), empty without servers.
std::string mon_host(const std::vector<Server> &servers);

// The options an rbd node opened from a name given as a string shows
// (QEMU's full options after bdrv_refresh_filename): driver, pool, image,
// namespace, and the snapshot, conf and user it names; "json:" of them in
// QDict order is the node's name.
nlohmann::ordered_json string_name_options(const OptionMap &parsed);

// That name, "json:{...}", for a name given as a string; "" when it does
// not parse.
std::string string_name(std::string_view filename);

}  // namespace qimg::rbd
