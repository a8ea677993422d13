// Unit tests of the NBD filename and option parser (nbd_name.h), against
// what qemu-img 7.2 makes of the same names (its messages were taken from
// `qemu-img info NAME` runs).
#include <gtest/gtest.h>

#include "protocol/nbd/nbd_name.h"

namespace qimg::nbd {
namespace {

OptionMap parsed(const std::string &name) {
    OptionMap o;
    auto r = parse_filename(name, o);
    EXPECT_TRUE(r) << name << ": " << r.error().message;
    return o;
}

std::string parse_error(const std::string &name) {
    OptionMap o;
    auto r = parse_filename(name, o);
    return r ? std::string("(parsed)") : r.error().message;
}

std::string config_error(OptionMap o) {
    auto r = take_config(o);
    return r ? std::string("(ok)") : r.error().message;
}

TEST(NbdName, UnixUri) {
    EXPECT_EQ(parsed("nbd+unix:///?socket=s"), (OptionMap{{"server.type", "unix"}, {"server.path", "s"}}));
    EXPECT_EQ(parsed("nbd+unix://?socket=/tmp/s"), (OptionMap{{"server.type", "unix"}, {"server.path", "/tmp/s"}}));
    EXPECT_EQ(parsed("nbd+unix:///exp?socket=s"),
              (OptionMap{{"export", "exp"}, {"server.type", "unix"}, {"server.path", "s"}}));
    // Unescaped once: path and query values.
    EXPECT_EQ(parsed("nbd+unix:///%2F?socket=%2573").at("export"), "/");
    EXPECT_EQ(parsed("nbd+unix:///?socket=%2573").at("server.path"), "%73");
    EXPECT_EQ(parsed("nbd+unix:///?socket=a%00b").at("server.path"), "a");
    EXPECT_EQ(parsed("nbd+unix:///a/b?socket=s").at("export"), "a/b");
    // Empty sections and "=value" are skipped; a fragment is ignored.
    EXPECT_EQ(parsed("nbd+unix:///?=x&socket=s&").at("server.path"), "s");
    EXPECT_EQ(parsed("nbd+unix:///?socket=s#x").at("server.path"), "s");
    EXPECT_EQ(parsed("nbd+unix:///?socket=a/b?c").at("server.path"), "a/b?c");
    EXPECT_EQ(parsed("nbd+unix:///?socket=").at("server.path"), "");
}

TEST(NbdName, TcpUri) {
    EXPECT_EQ(parsed("nbd://localhost"),
              (OptionMap{{"server.type", "inet"}, {"server.host", "localhost"}, {"server.port", "10809"}}));
    EXPECT_EQ(parsed("nbd+tcp://h:1/e"),
              (OptionMap{{"export", "e"}, {"server.type", "inet"}, {"server.host", "h"}, {"server.port", "1"}}));
    EXPECT_EQ(parsed("nbd://localhost:0/").at("server.port"), "10809");
    EXPECT_EQ(parsed("nbd://[::1]:1/x").at("server.host"), "::1");
    EXPECT_EQ(parsed("nbd://a%20b:1/").at("server.host"), "a b");
    EXPECT_EQ(parsed("nbd://user@localhost:1/").at("server.host"), "localhost");
    EXPECT_EQ(parsed("nbd://h:65535/").at("server.port"), "65535");
}

TEST(NbdName, InvalidUris) {
    for (const char *name :
         {"nbd+unix:///", "nbd+unix:///?socket=s&a=b", "nbd://", "nbd:///x", "nbd://h:x/", "nbd://h:99999/",
          "nbd://h:65536/", "nbd://h:/", "nbd+unix://h/?socket=s", "nbd+unix:///?sock=s", "nbd://h?x=1",
          "nbd+unix:///?socket=a b", "nbd+unix:///a b?socket=s", "nbd+unix:///?socket=%zz", "nbd+unix:///%zz?socket=s",
          "nbd+unix:///?socket=s;x=1", "nbd+unix:///?socket=s&socket=t", "nbd://[::1/", "nbd://ho|st:1/",
          "nbd+unix:///?socket=a[b", "nbd+unix:///?socket", "nbd+foo://x"})
        EXPECT_EQ(parse_error(name), "No valid URL specified") << name;
}

TEST(NbdName, Legacy) {
    EXPECT_EQ(parsed("nbd:unix:s"), (OptionMap{{"server.type", "unix"}, {"server.path", "s"}}));
    EXPECT_EQ(parsed("nbd:unix:"), (OptionMap{{"server.type", "unix"}, {"server.path", ""}}));
    EXPECT_EQ(parsed("nbd:unix:s:exportname=foo"),
              (OptionMap{{"export", "foo"}, {"server.type", "unix"}, {"server.path", "s"}}));
    EXPECT_EQ(parsed("nbd:unix:s:exportname").at("server.path"), "s:exportname");
    EXPECT_EQ(parsed("nbd:localhost:1"),
              (OptionMap{{"server.type", "inet"}, {"server.host", "localhost"}, {"server.port", "1"}}));
    EXPECT_EQ(parsed("nbd:[::1]:1").at("server.host"), "::1");
    EXPECT_EQ(parsed("nbd::1"), (OptionMap{{"server.type", "inet"}, {"server.host", ""}, {"server.port", "1"}}));
    EXPECT_EQ(parsed("nbd:localhost:1:exportname=foo").at("export"), "foo");
    // No address: the open fails later with "NBD server address missing".
    EXPECT_EQ(parsed("nbd:"), OptionMap{});
    EXPECT_EQ(parsed("nbd:unix:s:exportname="), OptionMap{});
    EXPECT_EQ(parse_error("nbd:localhost"), "error parsing address 'localhost'");
    EXPECT_EQ(parse_error("nbd:localhost:"), "error parsing address 'localhost:'");
    EXPECT_EQ(parse_error("nbd:foo:exportname=x:unix:s"), "error parsing address 'foo'");
    EXPECT_EQ(parse_error("nbd+unix:x"), "File name string for NBD must start with 'nbd:'");
    OptionMap with_host{{"host", "h"}};
    EXPECT_EQ(parse_filename("nbd:unix:s", with_host).error().message,
              "host/port/path and a file name may not be specified at the same time");
}

TEST(NbdName, Options) {
    EXPECT_EQ(config_error({}), "NBD server address missing");
    EXPECT_EQ(config_error({{"server.type", "inet"}}), "Parameter 'host' is missing");
    EXPECT_EQ(config_error({{"server.type", "inet"}, {"server.host", "h"}}), "Parameter 'port' is missing");
    EXPECT_EQ(config_error({{"server.type", "unix"}}), "Parameter 'path' is missing");
    EXPECT_EQ(config_error({{"server.type", "foo"}}), "Parameter 'type' does not accept value 'foo'");
    EXPECT_EQ(config_error({{"server.path", "s"}}), "Parameter 'type' is missing");
    EXPECT_EQ(config_error({{"server.type", "unix"}, {"server.path", "s"}, {"server.foo", "1"}}),
              "Parameter 'foo' is unexpected");
    EXPECT_EQ(config_error({{"path", "s"}, {"port", "1"}}), "port may not be used without host");
    EXPECT_EQ(config_error({{"path", "s"}, {"host", "h"}}), "path and host may not be used at the same time");
    EXPECT_EQ(config_error({{"host", "h"}, {"server.type", "unix"}}),
              "Cannot use 'server' and path/host/port at the same time");
    EXPECT_EQ(config_error({{"path", "s"}, {"reconnect-delay", "x"}}), "Parameter 'reconnect-delay' expects a number");
    EXPECT_EQ(config_error({{"path", "s"}, {"export", std::string(4097, 'e')}}),
              "export name too long to send to server");

    OptionMap o{{"host", "h"}, {"export", "e"}, {"x-dirty-bitmap", "qemu:allocation-depth"}, {"foo", "1"}};
    auto c = take_config(o);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->server.host, "h");
    EXPECT_EQ(c->server.port, "10809");
    EXPECT_EQ(*c->x_dirty_bitmap, "qemu:allocation-depth");
    EXPECT_EQ(o, (OptionMap{{"foo", "1"}}));  // left over for the caller to refuse
}

TEST(NbdName, CanonicalNames) {
    EXPECT_EQ(canonical_name_of({{"filename", "nbd+unix:///?socket=s"}}), "nbd+unix://?socket=s");
    EXPECT_EQ(canonical_name_of({{"filename", "nbd:unix:s:exportname=e"}}), "nbd+unix:///e?socket=s");
    EXPECT_EQ(canonical_name_of({{"filename", "nbd:localhost:1"}}), "nbd://localhost:1");
    EXPECT_EQ(canonical_name_of({{"filename", "nbd://[::1]/x"}}), "nbd://::1:10809/x");
    EXPECT_EQ(canonical_name_of({{"server.type", "unix"}, {"server.path", "s"}, {"export", ""}}),
              "nbd+unix:///?socket=s");
    EXPECT_EQ(canonical_name_of({{"server.type", "inet"}, {"server.host", "h"}, {"server.port", "1"},
                                 {"server.ipv4", "on"}}),
              "");
    EXPECT_EQ(canonical_name_of({{"filename", "nbd:"}}), "");
}

}  // namespace
}  // namespace qimg::nbd
