// NBD names and options: the filename syntaxes QEMU's nbd driver parses
// into options (nbd_parse_filename: URIs and the legacy "nbd:" form), the
// option set it takes (nbd_process_options: server.*, the legacy
// host/port/path, export, x-dirty-bitmap, ...) and the name an opened node
// shows (nbd_refresh_filename). No I/O and no libnbd here: what the unit
// tests check without a server.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "util/json_filename.h"
#include "util/result.h"

namespace qimg::nbd {

inline constexpr const char *kDefaultPort = "10809";
inline constexpr size_t kMaxStringSize = 4096;  // NBD_MAX_STRING_SIZE

// QEMU's SocketAddress, the kinds qimg connects to.
struct ServerAddress {
    enum class Type { Inet, Unix };
    Type type = Type::Unix;
    std::string host, port;  // Inet
    std::string path;        // Unix
    // Inet options.
    bool ipv4 = false, ipv6 = false;  // given explicitly (restrict the family when on)
    bool ipv4_set = false, ipv6_set = false, to_set = false;
    // Unix options.
    bool abstract = false, tight = true;
};

struct Config {
    ServerAddress server;
    std::optional<std::string> export_name;
    std::optional<std::string> tls_creds, tls_hostname;
    std::optional<std::string> x_dirty_bitmap;
    uint64_t reconnect_delay = 0, open_timeout = 0;
};

// QEMU's nbd_parse_filename: the options a filename given as a string
// stands for, added to `opts` ("server.type", "server.path" or
// "server.host"/"server.port", "export"). Errors in QEMU's words ("No valid
// URL specified", "File name string for NBD must start with 'nbd:'",
// "error parsing address 'x'", ...).
Result<void> parse_filename(const std::string &filename, OptionMap &opts);

// QEMU's nbd_process_options: takes the driver's options out of `opts`
// (what is left over is refused by the caller) and checks them.
Result<Config> take_config(OptionMap &opts);

// QEMU's nbd_refresh_filename: "nbd+unix:///EXPORT?socket=PATH",
// "nbd://HOST:PORT/EXPORT" (without "/EXPORT" when there is no export), or
// "" when the address cannot be written as such a name.
std::string canonical_name(const ServerAddress &a, const std::optional<std::string> &export_name);

// canonical_name() of a node's options as given (json:, --image-opts, or a
// string name in "filename"), "" when they do not parse.
std::string canonical_name_of(OptionMap opts);

}  // namespace qimg::nbd
