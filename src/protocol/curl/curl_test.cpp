// Unit tests of the curl protocols' option checks, node names and response
// header parsing (curl_options.h), with QEMU's messages. The transfers
// themselves are tested against a local server by tests/interop/cases/http.txt.
#include <gtest/gtest.h>

#include "block/driver.h"
#include "protocol/curl/curl_options.h"
#include "util/keyval.h"

namespace qimg {
namespace {

using curl::take_curl_options;

SecretStore store_with(const std::string &id, const std::string &data) {
    SecretStore s;
    auto spec = parse_object("secret,id=" + id + ",data=" + data);
    EXPECT_TRUE(spec) << spec.error().message;
    auto r = s.add(*spec);
    EXPECT_TRUE(r) << r.error().message;
    return s;
}

std::string error_of(OptionMap opts, std::string_view proto = "http", const SecretStore &s = SecretStore()) {
    auto r = take_curl_options(opts, proto, s);
    return r ? std::string("ok") : r.error().message;
}

TEST(CurlOptions, Defaults) {
    OptionMap o{{"url", "http://h/x"}, {"other", "1"}};
    SecretStore s;
    auto r = take_curl_options(o, "http", s);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->url, "http://h/x");
    EXPECT_EQ(r->readahead, 256u * 1024);
    EXPECT_EQ(r->timeout, 5u);
    EXPECT_TRUE(r->sslverify);
    EXPECT_FALSE(r->cookie || r->username || r->password || r->proxy_username || r->proxy_password);
    // What is not the driver's is left for the opener to refuse.
    EXPECT_EQ(o, (OptionMap{{"other", "1"}}));
}

TEST(CurlOptions, FilenameIsTheUrl) {
    OptionMap o{{"filename", "https://h:8443/a/b.qcow2"}};
    SecretStore s;
    auto r = take_curl_options(o, "https", s);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->url, "https://h:8443/a/b.qcow2");
    EXPECT_TRUE(o.empty());
}

TEST(CurlOptions, TypedValues) {
    OptionMap o{{"url", "ftp://h/x"}, {"readahead", "64k"}, {"timeout", "0x10"}, {"sslverify", "off"},
                {"cookie", "a=b; c=d"}, {"username", "u"}, {"proxy-username", "p"}};
    SecretStore s;
    auto r = take_curl_options(o, "ftp", s);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->readahead, 65536u);
    EXPECT_EQ(r->timeout, 16u);
    EXPECT_FALSE(r->sslverify);
    EXPECT_EQ(*r->cookie, "a=b; c=d");
    EXPECT_EQ(*r->username, "u");
    EXPECT_EQ(*r->proxy_username, "p");
}

TEST(CurlOptions, QemuMessages) {
    const std::string url = "http://h/x";
    EXPECT_EQ(error_of({}), "curl block driver requires an 'url' option");
    EXPECT_EQ(error_of({{"url", url}, {"readahead", "1000"}}), "HTTP_READAHEAD_SIZE 1000 is not a multiple of 512");
    EXPECT_EQ(error_of({{"url", url}, {"readahead", "x"}}),
              "Parameter 'readahead' expects a non-negative number below 2^64\n"
              "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
              "and exabytes, respectively.");
    EXPECT_EQ(error_of({{"url", url}, {"timeout", "x"}}), "Parameter 'timeout' expects a number");
    EXPECT_EQ(error_of({{"url", url}, {"timeout", "-1"}}), "timeout parameter is too large or negative");
    EXPECT_EQ(error_of({{"url", url}, {"timeout", "10001"}}), "timeout parameter is too large or negative");
    EXPECT_EQ(error_of({{"url", url}, {"timeout", "10000"}}), "ok");
    EXPECT_EQ(error_of({{"url", url}, {"sslverify", "x"}}), "Parameter 'sslverify' expects 'on' or 'off'");
    EXPECT_EQ(error_of({{"url", url}, {"cookie", "a"}, {"cookie-secret", "s"}}),
              "curl driver cannot handle both cookie and cookie secret");
    EXPECT_EQ(error_of({{"url", url}, {"cookie-secret", "s"}}), "No secret with id 's'");
    EXPECT_EQ(error_of({{"url", url}, {"password-secret", "s"}}), "No secret with id 's'");
    EXPECT_EQ(error_of({{"url", url}, {"proxy-password-secret", "s"}}), "No secret with id 's'");
    EXPECT_EQ(error_of({{"url", url}}, "https"),
              "https curl driver cannot handle the URL 'http://h/x' (does not start with 'https://')");
    EXPECT_EQ(error_of({{"url", "HTTP://h/x"}}),
              "http curl driver cannot handle the URL 'HTTP://h/x' (does not start with 'http://')");
    // The readahead check comes before the URL's.
    EXPECT_EQ(error_of({{"readahead", "1"}}), "HTTP_READAHEAD_SIZE 1 is not a multiple of 512");
}

TEST(CurlOptions, SecretsAreLookedUp) {
    SecretStore s = store_with("sec0", "hunter2");
    OptionMap o{{"url", "http://h/x"}, {"cookie-secret", "sec0"}, {"password-secret", "sec0"},
                {"proxy-password-secret", "sec0"}};
    auto r = take_curl_options(o, "http", s);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*r->cookie, "hunter2");
    EXPECT_EQ(*r->password, "hunter2");
    EXPECT_EQ(*r->proxy_password, "hunter2");
}

TEST(CurlOptions, PlainName) {
    using J = nlohmann::ordered_json;
    EXPECT_EQ(curl::curl_plain_name(J{{"driver", "http"}, {"url", "http://h/x"}}), "http://h/x");
    EXPECT_EQ(curl::curl_plain_name(J{{"driver", "http"}, {"filename", "http://h/y"}}), "http://h/y");
    EXPECT_EQ(curl::curl_plain_name(J{{"url", "http://h/x"}, {"sslverify", "on"}}), "http://h/x");
    EXPECT_EQ(curl::curl_plain_name(J{{"url", "http://h/x"}, {"sslverify", true}}), "http://h/x");
    EXPECT_EQ(curl::curl_plain_name(J{{"url", "http://h/x"}, {"sslverify", "off"}}), "");
    EXPECT_EQ(curl::curl_plain_name(J{{"url", "http://h/x"}, {"sslverify", false}}), "");
    for (const char *k : {"cookie", "cookie-secret", "username", "password-secret", "proxy-username",
                          "proxy-password-secret"})
        EXPECT_EQ(curl::curl_plain_name(J{{"url", "http://h/x"}, {k, "v"}}), "") << k;
}

TEST(CurlHeaders, AcceptRanges) {
    EXPECT_TRUE(curl::is_accept_ranges_bytes("Accept-Ranges: bytes\r\n"));
    EXPECT_TRUE(curl::is_accept_ranges_bytes("accept-ranges:bytes"));
    EXPECT_TRUE(curl::is_accept_ranges_bytes("ACCEPT-RANGES: \t bytes \r\n"));
    EXPECT_FALSE(curl::is_accept_ranges_bytes("Accept-Ranges: none\r\n"));
    EXPECT_FALSE(curl::is_accept_ranges_bytes("Accept-Ranges: bytes, other\r\n"));
    EXPECT_FALSE(curl::is_accept_ranges_bytes("Accept-Ranges: Bytes\r\n"));
    EXPECT_FALSE(curl::is_accept_ranges_bytes("Accept-Range: bytes\r\n"));
    EXPECT_FALSE(curl::is_accept_ranges_bytes("Accept-Ranges:"));
    EXPECT_FALSE(curl::is_accept_ranges_bytes(""));
}

TEST(CurlHeaders, ContentRange) {
    auto r = curl::parse_content_range("Content-Range: bytes 100-199/1000\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->first, 100u);
    EXPECT_EQ(r->last, 199u);
    r = curl::parse_content_range("content-range: bytes 0-0/*");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->last, 0u);
    for (const char *bad : {"Content-Range: bytes */1000", "Content-Range: bytes 5-4/10", "Content-Range: items 0-1/2",
                            "Content-Range: bytes 0-1", "Content-Range: bytes -1-2/3", "Content-Range: bytes 0-x/3",
                            "Content-Range: bytes 0-99999999999999999999/3", "Content-Length: 5", ""})
        EXPECT_FALSE(curl::parse_content_range(bad)) << bad;
}

TEST(CurlHeaders, StatusLine) {
    EXPECT_EQ(curl::parse_status_line("HTTP/1.1 206 Partial Content\r\n"), 206);
    EXPECT_EQ(curl::parse_status_line("HTTP/2 200\r\n"), 200);
    EXPECT_FALSE(curl::parse_status_line("Content-Length: 5\r\n"));
    EXPECT_FALSE(curl::parse_status_line("HTTP/1.1 2x6 Odd\r\n"));
    EXPECT_FALSE(curl::parse_status_line("HTTP/1.1\r\n"));
}

TEST(CurlDrivers, Registered) {
    for (const char *name : {"http", "https", "ftp", "ftps"}) {
        const Driver *d = find_driver(name);
        ASSERT_NE(d, nullptr) << name;
        EXPECT_TRUE(d->is_protocol);
        EXPECT_FALSE(d->can_create());
        auto p = find_protocol_driver(std::string(name) + "://h/x");
        ASSERT_TRUE(p);
        EXPECT_EQ(*p, d);
    }
}

}  // namespace
}  // namespace qimg
