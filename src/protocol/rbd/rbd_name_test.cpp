// Unit tests of the RBD filename and option parser (rbd_name.h), against
// what qemu-img 7.2 makes of the same names (its messages were taken from
// `qemu-img info NAME` and `qemu-img info --image-opts OPTS` runs).
#include <gtest/gtest.h>

#include "protocol/rbd/rbd_name.h"

namespace qimg::rbd {
namespace {

struct Parsed {
    OptionMap opts;
    KeyPairs keypairs;
};

Parsed parsed(const std::string &name) {
    Parsed p;
    auto r = parse_filename(name, p.opts, p.keypairs);
    EXPECT_TRUE(r) << name << ": " << r.error().message;
    return p;
}

std::string parse_error(const std::string &name) {
    OptionMap o;
    KeyPairs k;
    auto r = parse_filename(name, o, k);
    return r ? std::string("(parsed)") : r.error().message;
}

std::string location_error(OptionMap o) {
    auto r = take_location(o);
    return r ? std::string("(ok)") : r.error().message;
}

TEST(RbdName, PoolAndImage) {
    EXPECT_EQ(parsed("rbd:rbd/img").opts, (OptionMap{{"pool", "rbd"}, {"namespace", ""}, {"image", "img"}}));
}

TEST(RbdName, NamespaceSnapshotAndKeys) {
    Parsed p = parsed("rbd:p/ns/img@snap:conf=/etc/c.conf:id=admin:mon_host=1.2.3.4\\:6789:rbd_cache=false");
    EXPECT_EQ(p.opts, (OptionMap{{"pool", "p"},
                                 {"namespace", "ns"},
                                 {"image", "img"},
                                 {"snapshot", "snap"},
                                 {"conf", "/etc/c.conf"},
                                 {"user", "admin"}}));
    EXPECT_EQ(p.keypairs, (KeyPairs{{"mon_host", "1.2.3.4:6789"}, {"rbd_cache", "false"}}));
}

TEST(RbdName, Escapes) {
    Parsed p = parsed("rbd:p\\/q/im\\:g\\@x");
    EXPECT_EQ(p.opts.at("pool"), "p/q");
    EXPECT_EQ(p.opts.at("image"), "im:g@x");
    EXPECT_EQ(p.opts.count("snapshot"), 0u);
    EXPECT_EQ(unescape("a\\"), "a\\");  // a lone trailing backslash stays
    EXPECT_EQ(unescape("\\\\x"), "\\x");
}

TEST(RbdName, AtInOptionsEndsTheImageName) {
    // QEMU looks for '@' in the whole rest, options included.
    Parsed p = parsed("rbd:p/img:mon_host=a@b");
    EXPECT_EQ(p.opts.at("image"), "img:mon_host=a");
    EXPECT_EQ(p.opts.at("snapshot"), "b");
}

TEST(RbdName, EmptyParts) {
    EXPECT_EQ(parsed("rbd:p/").opts.at("image"), "");
    EXPECT_EQ(parsed("rbd:/i").opts.at("pool"), "");
    EXPECT_EQ(parsed("rbd:p/i@").opts.at("snapshot"), "");
}

TEST(RbdName, Errors) {
    EXPECT_EQ(parse_error("rbd:"), "Pool name is required");
    EXPECT_EQ(parse_error("rbd:pool"), "Pool name is required");
    EXPECT_EQ(parse_error("rbd:pool\\/x"), "Pool name is required");
    EXPECT_EQ(parse_error("rbd:pool/img:foo"), "conf option foo has no value");
    EXPECT_EQ(parse_error("rbd:pool/img:a=b:c"), "conf option c has no value");
    EXPECT_EQ(parse_error("nbd:x"), "File name must start with 'rbd:'");
}

TEST(RbdName, MalformedNamesNeverCrash) {
    const std::string pieces[] = {"rbd:", "/", "@", ":", "=", "\\", "a", "\\:", "\\\\", ""};
    for (const auto &a : pieces)
        for (const auto &b : pieces)
            for (const auto &c : pieces)
                for (const auto &d : pieces) {
                    OptionMap o;
                    KeyPairs k;
                    (void)parse_filename("rbd:" + a + b + c + d, o, k);
                    (void)string_name("rbd:" + a + b + c + d);
                }
}

TEST(RbdOptions, Required) {
    EXPECT_EQ(location_error({}), "Parameter 'pool' is missing");
    EXPECT_EQ(location_error({{"pool", "p"}}), "Parameter 'image' is missing");
    EXPECT_EQ(location_error({{"image", "i"}, {"bogus", "1"}}), "Parameter 'pool' is missing");
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}}), "(ok)");
}

TEST(RbdOptions, Unexpected) {
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"bogus", "1"}}), "Parameter 'bogus' is unexpected");
    // QDict order, as QEMU's visitor reports the first left over.
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"bogus", "1"}, {"bogus2", "2"}}),
              "Parameter 'bogus2' is unexpected");
}

TEST(RbdOptions, Servers) {
    OptionMap o{{"pool", "p"}, {"image", "i"}, {"server.0.host", "h"}, {"server.0.port", "1"},
                {"server.1.host", "::1"}, {"server.1.port", "2"}};
    auto r = take_location(o);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(mon_host(r->server), "h:1;[::1]:2");
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"server.0.host", "h"}}),
              "Parameter 'server.0.port' is missing");
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"server.1.host", "h"}, {"server.1.port", "1"}}),
              "List indices are not contiguous, saw 1 elements but 1 largest index");
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"server", "x"}}),
              "Invalid parameter type for 'server', expected: array");
    EXPECT_EQ(location_error({{"pool", "p"},
                              {"image", "i"},
                              {"server.0.host", "h"},
                              {"server.0.port", "1"},
                              {"server.0.x", "1"}}),
              "Parameter 'server.0.x' is unexpected");
}

TEST(RbdOptions, AuthAndEncrypt) {
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"auth-client-required.0", "x"}}),
              "Parameter 'null' does not accept value 'x'");
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"auth-client-required", "cephx"}}),
              "Invalid parameter type for 'auth-client-required', expected: array");
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"encrypt.format", "bogus"}}),
              "Parameter 'format' does not accept value 'bogus'");
    EXPECT_EQ(location_error({{"pool", "p"}, {"image", "i"}, {"encrypt.format", "luks"}}),
              "Parameter 'encrypt.key-secret' is missing");
    OptionMap o{{"pool", "p"}, {"image", "i"}, {"auth-client-required.0", "cephx"},
                {"auth-client-required.1", "none"}};
    auto r = take_location(o);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r->auth_client_required, (std::vector<std::string>{"cephx", "none"}));
}

std::string encrypt_error(const std::map<std::string, std::string> &o) {
    auto r = encrypt_create_options(o);
    return r ? std::string("(ok)") : r.error().message;
}

TEST(RbdCreateOptions, Encrypt) {
    EXPECT_FALSE(*encrypt_create_options({{"cluster_size", "65536"}}));
    EXPECT_EQ(encrypt_error({{"encrypt.key-secret", "s0"}}), "Parameter 'format' is missing");
    EXPECT_EQ(encrypt_error({{"encrypt.format", "luks3"}}), "Parameter 'format' does not accept value 'luks3'");
    EXPECT_EQ(encrypt_error({{"encrypt.format", "luks"}}), "Parameter 'key-secret' is missing");
    EXPECT_EQ(encrypt_error({{"encrypt.format", "luks"}, {"encrypt.key-secret", "s"}, {"encrypt.cipher-alg", "x"}}),
              "Parameter 'cipher-alg' does not accept value 'x'");
    auto r = encrypt_create_options(
        {{"encrypt.format", "luks2"}, {"encrypt.key-secret", "s"}, {"encrypt.cipher-alg", "twofish-128"}});
    ASSERT_TRUE(r && *r);
    EXPECT_EQ((*r)->format, "luks2");
    EXPECT_EQ((*r)->cipher_alg, 9);  // QEMU's "unknown encryption algorithm: 9"
}

TEST(RbdName, StringName) {
    // As qemu-img info shows the node of "rbd:rbd/img1".
    EXPECT_EQ(string_name("rbd:rbd/img1"), R"(json:{"pool": "rbd", "image": "img1", "driver": "rbd", "namespace": ""})");
    EXPECT_EQ(string_name("rbd:rbd/img1@s1"),
              R"(json:{"pool": "rbd", "image": "img1", "snapshot": "s1", "driver": "rbd", "namespace": ""})");
    EXPECT_EQ(string_name("rbd:x"), "");
}

}  // namespace
}  // namespace qimg::rbd
