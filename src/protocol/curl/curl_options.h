// The curl protocols' options and the HTTP answers they read, without any
// libcurl: what `url=`, `readahead=`, `timeout=`, `sslverify=`, the cookie
// and the credentials (from --object secrets) become, checked in QEMU's
// order and words (block/curl.c, curl_open), the name a node shows, and the
// parsing of the response headers a range read relies on. Unit-tested in
// curl_test.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "crypto/secret.h"
#include "util/json_filename.h"
#include "util/result.h"

namespace qimg::curl {

constexpr uint64_t kDefaultReadahead = 256 * 1024;  // QEMU's default
constexpr uint64_t kDefaultTimeout = 5;              // seconds, QEMU's default
constexpr uint64_t kMaxTimeout = 10000;              // QEMU's CURL_TIMEOUT_MAX

struct CurlOptions {
    std::string url;
    uint64_t readahead = kDefaultReadahead;
    uint64_t timeout = kDefaultTimeout;  // seconds; 0: no limit on the transfer
    bool sslverify = true;
    std::optional<std::string> cookie;   // given, or read from cookie-secret
    std::optional<std::string> username, password;
    std::optional<std::string> proxy_username, proxy_password;

    // Whether the URL alone reads what these options read (curl_plain_name):
    // otherwise the node has no plain name, and a relative backing file name
    // has no directory to be resolved against (QEMU's bdrv_dirname:
    // "Cannot generate a base directory for https nodes").
    bool url_says_all() const {
        return sslverify && !cookie && !username && !password && !proxy_username && !proxy_password;
    }
};

// Takes the driver's options out of `opts` (leaving anything else for the
// opener to refuse) and checks them as QEMU's curl_open does, for the
// protocol `protocol` ("http", "https", "ftp", "ftps"). The URL is `url=`,
// or the filename the node was named by. Secrets are looked up in `secrets`.
Result<CurlOptions> take_curl_options(OptionMap &opts, std::string_view protocol, const SecretStore &secrets);

// QEMU's curl_refresh_filename: the URL while the options leave what is
// read as anyone would read the URL, "" (a json: name) once sslverify is off
// or a cookie or credentials are given. `full` is the node's options as the
// opener rebuilds them (driver, filename, strong options).
std::string curl_plain_name(const nlohmann::ordered_json &full);

// One response header line ("Name: value\r\n"): whether it is
// "Accept-Ranges: bytes" (the name in any case, the value exactly "bytes"
// between white space, as QEMU's curl_header_cb).
bool is_accept_ranges_bytes(std::string_view line);

// "Content-Range: bytes FIRST-LAST/TOTAL" (TOTAL may be "*"): FIRST and
// LAST, or nullopt for another header or a malformed value.
struct ContentRange {
    uint64_t first = 0, last = 0;
};
std::optional<ContentRange> parse_content_range(std::string_view line);

// The status code of a status line ("HTTP/1.1 206 Partial Content"), or
// nullopt for another header line.
std::optional<long> parse_status_line(std::string_view line);

}  // namespace qimg::curl
