// QemuOpts lists, typed option values, keyval and --object, with the
// behaviour and messages observed from qemu-img 7.2 (`create -o`,
// `info --image-opts`, `info --object`).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <unistd.h>

#include "util/keyval.h"

namespace qimg {
namespace {

using Json = nlohmann::ordered_json;

OptList opts(std::string_view s, std::string_view implied = {}) {
    auto r = parse_opts(s, implied);
    EXPECT_TRUE(r);
    return r ? *r : OptList{};
}

TEST(ParseOpts, KeyValueAndEscapes) {
    EXPECT_EQ(opts("size=1M"), (OptList{{"size", "1M"}}));
    EXPECT_EQ(opts("a=1,b=2"), (OptList{{"a", "1"}, {"b", "2"}}));
    EXPECT_EQ(opts("a=1,b=2,"), (OptList{{"a", "1"}, {"b", "2"}}));
    EXPECT_EQ(opts("size=1M,,foo"), (OptList{{"size", "1M,foo"}}));
    EXPECT_EQ(opts("size=1M,,"), (OptList{{"size", "1M,"}}));
    EXPECT_EQ(opts("a=1,,,b=2"), (OptList{{"a", "1,"}, {"b", "2"}}));
    EXPECT_EQ(opts("a=x=y"), (OptList{{"a", "x=y"}}));
    EXPECT_EQ(opts("a="), (OptList{{"a", ""}}));
    EXPECT_EQ(opts("=1"), (OptList{{"", "1"}}));
    EXPECT_EQ(opts("size=1M,size=2M"), (OptList{{"size", "1M"}, {"size", "2M"}}));
    EXPECT_EQ(opts("id=x,a=1"), (OptList{{"id", "x"}, {"a", "1"}}));
    EXPECT_EQ(opts(""), OptList{});
    EXPECT_EQ(opts(std::string_view("a=1\0,b=2", 8)), (OptList{{"a", "1"}}));
}

TEST(ParseOpts, Flags) {
    EXPECT_EQ(opts("lazy_refcounts"), (OptList{{"lazy_refcounts", "on"}}));
    EXPECT_EQ(opts("nopreallocation"), (OptList{{"preallocation", "off"}}));
    EXPECT_EQ(opts("size"), (OptList{{"size", "on"}}));
    EXPECT_EQ(opts("no"), (OptList{{"", "off"}}));
    EXPECT_EQ(opts(","), (OptList{{"", "on"}}));
    EXPECT_EQ(opts("a,,b"), (OptList{{"a", "on"}, {"", "on"}, {"b", "on"}}));
    EXPECT_EQ(opts("help,size=1"), (OptList{{"help", "on"}, {"size", "1"}}));
}

TEST(ParseOpts, ImpliedKey) {
    EXPECT_EQ(opts("a.img", "file"), (OptList{{"file", "a.img"}}));
    EXPECT_EQ(opts("a,,b.img,driver=raw", "file"), (OptList{{"file", "a,b.img"}, {"driver", "raw"}}));
    EXPECT_EQ(opts("nofoo", "file"), (OptList{{"file", "nofoo"}}));
    EXPECT_EQ(opts("driver=raw,x", "file"), (OptList{{"driver", "raw"}, {"x", "on"}}));
    EXPECT_EQ(opts(",", "file"), (OptList{{"file", ""}}));
}

TEST(ParseOpts, FlagWarnings) {
    std::vector<std::string> w;
    auto r = parse_opts("driver=raw,nofoo,foo,help,delay,nodelay", {}, &w);
    ASSERT_TRUE(r);
    EXPECT_EQ(w, (std::vector<std::string>{
                     "short-form boolean option 'nofoo' deprecated\nPlease use foo=off instead",
                     "short-form boolean option 'foo' deprecated\nPlease use foo=on instead",
                     "short-form boolean option 'delay' deprecated\nPlease use nodelay=off instead",
                     "short-form boolean option 'nodelay' deprecated\nPlease use nodelay=on instead",
                 }));
}

TEST(ParseOpts, ItemsKeepOrderFlagsAndHelp) {
    auto items = parse_opt_items("snapshot.id=1,,x,nofoo,?,id=a");
    ASSERT_EQ(items.size(), 4u);
    EXPECT_EQ(items[0].name, "snapshot.id");
    EXPECT_EQ(items[0].value, "1,x");
    EXPECT_TRUE(items[0].flag_warning.empty());
    EXPECT_EQ(items[1].name, "foo");
    EXPECT_EQ(items[1].value, "off");
    EXPECT_EQ(items[1].flag_warning, "short-form boolean option 'nofoo' deprecated\nPlease use foo=off instead");
    EXPECT_TRUE(items[2].is_help);
    EXPECT_TRUE(items[2].flag_warning.empty());
    EXPECT_EQ(items[3].name, "id");
    EXPECT_EQ(items[3].value, "a");
}

TEST(IdWellformed, QemuIdentifiers) {
    EXPECT_TRUE(id_wellformed("x"));
    EXPECT_TRUE(id_wellformed("a-b.c_d9"));
    EXPECT_FALSE(id_wellformed(""));
    EXPECT_FALSE(id_wellformed("1x"));
    EXPECT_FALSE(id_wellformed("_x"));
    EXPECT_FALSE(id_wellformed("a b"));
}

TEST(HelpOption, Detection) {
    EXPECT_TRUE(is_help_option("help"));
    EXPECT_TRUE(is_help_option("?"));
    EXPECT_FALSE(is_help_option("HELP"));
    EXPECT_FALSE(is_help_option("help "));
    EXPECT_TRUE(has_help_option("help"));
    EXPECT_TRUE(has_help_option("help,size=1"));
    EXPECT_TRUE(has_help_option("size=1,help"));
    EXPECT_TRUE(has_help_option("size=1,?"));
    EXPECT_FALSE(has_help_option("help=1"));
    EXPECT_FALSE(has_help_option("nohelp"));
    EXPECT_FALSE(has_help_option("x=help"));
    EXPECT_FALSE(has_help_option("x=a,,help"));
    EXPECT_FALSE(has_help_option(""));
}

TEST(AccumulateOptions, JoinsAndValidates) {
    EXPECT_TRUE(is_valid_option_list("size=1M"));
    EXPECT_TRUE(is_valid_option_list("size=1M,,"));
    EXPECT_FALSE(is_valid_option_list(""));
    EXPECT_FALSE(is_valid_option_list(","));
    EXPECT_FALSE(is_valid_option_list(",a=1"));
    EXPECT_FALSE(is_valid_option_list("size=1M,"));
    EXPECT_FALSE(is_valid_option_list("size=1M,,,"));
    EXPECT_EQ(*accumulate_options("", "a=1"), "a=1");
    EXPECT_EQ(*accumulate_options("a=1", "b=2"), "a=1,b=2");
    EXPECT_EQ(*accumulate_options("a=1,,", "b=2"), "a=1,,,b=2");
    auto bad = accumulate_options("a=1", "size=1M,,,");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "Invalid option list: size=1M,,,");
    EXPECT_EQ(accumulate_options("", ",").error().message, "Invalid option list: ,");
}

TEST(TypedOpts, Bool) {
    for (const char *t : {"on", "yes", "true", "y"}) EXPECT_TRUE(*parse_bool_opt("x", t)) << t;
    for (const char *f : {"off", "no", "false", "n"}) EXPECT_FALSE(*parse_bool_opt("x", f)) << f;
    for (const char *bad : {"1", "ON", "", "0"}) {
        auto r = parse_bool_opt("lazy_refcounts", bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().message, "Parameter 'lazy_refcounts' expects 'on' or 'off'");
    }
}

TEST(TypedOpts, Size) {
    EXPECT_EQ(*parse_size_opt("size", "1M"), 1u << 20);
    EXPECT_EQ(*parse_size_opt("cluster_size", "1.5k"), 1536u);
    const std::string expects =
        "Parameter 'size' expects a non-negative number below 2^64\n"
        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
        "and exabytes, respectively.";
    for (const char *bad : {"abc", "-1", "", "on", "1M,", "1M,foo"}) {
        auto r = parse_size_opt("size", bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().message, expects) << bad;
    }
    auto big = parse_size_opt("size", "16E");
    ASSERT_FALSE(big);
    EXPECT_EQ(big.error().message, "Value '16E' is out of range for parameter 'size'");
}

TEST(TypedOpts, Number) {
    EXPECT_EQ(*parse_number_opt("refcount_bits", "16"), 16u);
    EXPECT_EQ(*parse_number_opt("refcount_bits", "0x10"), 16u);
    EXPECT_EQ(*parse_number_opt("refcount_bits", "020"), 16u);  // octal, as QEMU
    EXPECT_EQ(*parse_number_opt("refcount_bits", "+16"), 16u);
    EXPECT_EQ(*parse_number_opt("refcount_bits", "-1"), UINT64_MAX);  // wraps, as QEMU
    auto bad = parse_number_opt("refcount_bits", "abc");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "Parameter 'refcount_bits' expects a number");
    EXPECT_FALSE(parse_number_opt("refcount_bits", ""));
    EXPECT_FALSE(parse_number_opt("refcount_bits", "1k"));
    auto big = parse_number_opt("refcount_bits", "99999999999999999999");
    ASSERT_FALSE(big);
    EXPECT_EQ(big.error().message, "Value '99999999999999999999' is too large for parameter 'refcount_bits'");
    EXPECT_EQ(parse_number_opt("x", "99999999999999999999z").error().message, "Parameter 'x' expects a number");
}

std::string keyval_error(std::string_view s, std::string_view implied = "qom-type") {
    bool help = false;
    auto r = keyval_parse(s, implied, &help);
    EXPECT_FALSE(r) << s;
    return r ? "" : r.error().message;
}

TEST(Keyval, Structure) {
    bool help = false;
    auto r = keyval_parse("secret,id=s0,a.b=1,a.c=2,l.1=y,l.0=x,v=a,,b,v=last", "qom-type", &help);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_FALSE(help);
    EXPECT_EQ((*r)["qom-type"], "secret");
    EXPECT_EQ((*r)["a"]["b"], "1");
    EXPECT_EQ((*r)["a"]["c"], "2");
    EXPECT_EQ((*r)["l"], Json::array({"x", "y"}));
    EXPECT_EQ((*r)["v"], "last");  // last one wins
    auto h = keyval_parse("secret,help", "qom-type", &help);
    ASSERT_TRUE(h);
    EXPECT_TRUE(help);
    auto no_help = keyval_parse("a=1,help", {}, nullptr);
    ASSERT_FALSE(no_help);
    EXPECT_EQ(no_help.error().message, "Help is not available for this option");
    auto rfqdn = keyval_parse("__a.b_c=1", {}, nullptr);
    ASSERT_TRUE(rfqdn);
    EXPECT_EQ((*rfqdn)["__a.b_c"], "1");
}

TEST(Keyval, ErrorsMatchQemu) {
    EXPECT_EQ(keyval_error("secret,id=s0,data"), "Expected '=' after parameter 'data'");
    EXPECT_EQ(keyval_error("help,secret"), "Expected '=' after parameter 'secret'");
    EXPECT_EQ(keyval_error("secret,,id=s0"), "Invalid parameter ''");
    EXPECT_EQ(keyval_error(",id=s0"), "Invalid parameter ''");
    EXPECT_EQ(keyval_error("secret,id=s0,=x"), "Invalid parameter ''");
    EXPECT_EQ(keyval_error("secret,id=s0,1=x"), "Invalid parameter '1'");
    EXPECT_EQ(keyval_error("secret,id=s0,_x=1"), "Invalid parameter '_x'");
    EXPECT_EQ(keyval_error("secret,a b=1"), "Invalid parameter 'a b'");
    EXPECT_EQ(keyval_error("secret,a.=1"), "Invalid parameter 'a.'");
    EXPECT_EQ(keyval_error("secret,a.0b=1"), "Invalid parameter 'a.0b'");
    EXPECT_EQ(keyval_error("secret,id=s0,a.0=x,a.b=y"), "Parameters 'a.*' used inconsistently");
    EXPECT_EQ(keyval_error("secret,id=s0,a=x,a.b=y"), "Parameters 'a.*' used inconsistently");
    EXPECT_EQ(keyval_error("secret,id=s0,a.b=y,a=x"), "Parameters 'a.*' used inconsistently");
    EXPECT_EQ(keyval_error("secret,id=s0,a.1=x"), "Parameter 'a.0' missing");
    EXPECT_EQ(keyval_error("secret,a.b.2=x,a.b.0=y"), "Parameter 'a.b.1' missing");
    EXPECT_EQ(keyval_error("secret," + std::string(128, 'k') + "=1"),
              "Parameter '" + std::string(128, 'k') + "' is too long");
    EXPECT_EQ(keyval_error("secret,a." + std::string(128, 'k') + "=1"),
              "Parameter fragment '" + std::string(128, 'k') + "' is too long");
    bool help = false;
    EXPECT_TRUE(keyval_parse("secret," + std::string(127, 'k') + "=1", "qom-type", &help));
}

ObjectSpec object_ok(std::string_view s) {
    auto r = parse_object(s);
    EXPECT_TRUE(r) << s << ": " << (r ? "" : r.error().message);
    return r ? *r : ObjectSpec{};
}

std::string object_error(std::string_view s) {
    auto r = parse_object(s);
    EXPECT_FALSE(r) << s;
    return r ? "" : r.error().message;
}

TEST(ParseObject, SecretForms) {
    ObjectSpec a = object_ok("secret,id=s0,data=x");
    EXPECT_EQ(a.qom_type, "secret");
    EXPECT_EQ(a.id, "s0");
    EXPECT_EQ(a.props, (std::map<std::string, std::string>{{"data", "x"}}));
    ObjectSpec b = object_ok(R"({"qom-type":"secret","id":"s0","data":"x"})");
    EXPECT_EQ(b.id, "s0");
    EXPECT_EQ(b.props.at("data"), "x");
    EXPECT_EQ(object_ok("{'qom-type':'secret','id':'s0','data':'x'}").props.at("data"), "x");
    EXPECT_EQ(object_ok("qom-type=secret,id=s0,data=x").qom_type, "secret");
    EXPECT_EQ(object_ok("secret,id=s0,id=s1,data=x").id, "s1");
    EXPECT_EQ(object_ok("secret,id=s0,data=x,data=y").props.at("data"), "y");
    EXPECT_EQ(object_ok("secret,id=s0,data=x,,y").props.at("data"), "x,y");
    EXPECT_EQ(object_ok("secret,id=s0,data=").props.at("data"), "");
    EXPECT_EQ(object_ok("secret,id=s0,data=x,").props.at("data"), "x");
    EXPECT_EQ(object_ok("secret,id=s0,data=x,format=raw").props.at("format"), "raw");
    EXPECT_EQ(object_ok("secret,id=s0,data=eA==,format=base64").props.at("format"), "base64");
    EXPECT_EQ(object_ok("secret,id=s0,data=x,iv=abc").props.at("iv"), "abc");
    EXPECT_EQ(object_ok("throttle-group,id=t0").qom_type, "throttle-group");
    EXPECT_EQ(object_ok("main-loop,id=m").qom_type, "main-loop");
}

TEST(ParseObject, ErrorsMatchQemuImg) {
    EXPECT_EQ(object_error("secret,data=x"), "Parameter 'id' is missing");
    EXPECT_EQ(object_error("secret,data=x,bogus=1"), "Parameter 'id' is missing");
    EXPECT_EQ(object_error("foo,id=s0"), "Parameter 'qom-type' does not accept value 'foo'");
    EXPECT_EQ(object_error("[]"), "Parameter 'qom-type' does not accept value '[]'");
    EXPECT_EQ(object_error("id=s0,data=x"), "Parameter 'qom-type' is missing");
    EXPECT_EQ(object_error(""), "Parameter 'qom-type' is missing");
    EXPECT_EQ(object_error("secret,id=s0"), "Either 'file' or 'data' must be provided");
    EXPECT_EQ(object_error("secret,id=s0,data=x,file=f"), "'file' and 'data' are mutually exclusive");
    EXPECT_EQ(object_error("secret,id=s0,data=x,format=hex"), "Parameter 'format' does not accept value 'hex'");
    EXPECT_EQ(object_error("secret,id=s0,format=hex,bogus=1"), "Parameter 'format' does not accept value 'hex'");
    EXPECT_EQ(object_error("secret,id=s0,bogus=1,format=hex"), "Parameter 'format' does not accept value 'hex'");
    EXPECT_EQ(object_error("secret,id=s0,loaded=on,data=x,format=hex"),
              "Parameter 'format' does not accept value 'hex'");
    const std::string bad_id =
        "Parameter 'id' expects an identifier\n"
        "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.";
    EXPECT_EQ(object_error("secret,id=0s,data=x"), bad_id);
    EXPECT_EQ(object_error("secret,id=0s"), bad_id);
    EXPECT_EQ(object_error("iothread,id=0x"), bad_id);
    EXPECT_EQ(object_error("secret,id=0s,bogus=1"), "Parameter 'bogus' is unexpected");
    EXPECT_EQ(object_error("secret,id=s0,data=x,bogus=1"), "Parameter 'bogus' is unexpected");
    EXPECT_EQ(object_error("secret,id=s0,data=x,loaded=maybe"), "Parameter 'loaded' expects 'on' or 'off'");
    EXPECT_EQ(object_error("secret,id=s0,data=x,loaded=off"), "Property 'secret.loaded' is not writable");
    EXPECT_EQ(object_error("secret,id=s0,data.0=x"), "Parameters 'data.*' are unexpected");
    EXPECT_EQ(object_error("secret,id.x=s0"), "Parameters 'id.*' are unexpected");
    EXPECT_EQ(object_error("qom-type.x=secret"), "Parameters 'qom-type.*' are unexpected");
    EXPECT_EQ(object_error("secret,id=s0,__a.b_c=1"), "Parameter '__a.b_c' is unexpected");
    EXPECT_EQ(object_error("iothread,id=x"), "invalid object type: iothread");
    EXPECT_EQ(object_error("memory-backend-ram,id=m,size=1M"), "invalid object type: memory-backend-ram");
    EXPECT_EQ(object_error("secret,id=s0,data"), "Expected '=' after parameter 'data'");
    // JSON form
    EXPECT_EQ(object_error(R"({"qom-type":"secret","data":"x"})"), "Parameter 'id' is missing");
    EXPECT_EQ(object_error(R"({"qom-type":"secret","id":"s0","data":1})"),
              "Invalid parameter type for 'data', expected: string");
    EXPECT_EQ(object_error(R"({"qom-type":"secret","id":"s0","data":{"a":1}})"),
              "Invalid parameter type for 'data', expected: string");
    EXPECT_EQ(object_error(R"({"qom-type":5,"id":"s0"})"), "Invalid parameter type for 'qom-type', expected: string");
    EXPECT_EQ(object_error(R"({"qom-type":"secret","id":5,"data":"x"})"),
              "Invalid parameter type for 'id', expected: string");
    EXPECT_EQ(object_error(R"({"qom-type":"secret","id":"s0","data":"x","loaded":"on"})"),
              "Invalid parameter type for 'loaded', expected: boolean");
    EXPECT_EQ(object_error(R"({"qom-type":"secret","id":"s0","data":"x","bogus":1})"),
              "Parameter 'bogus' is unexpected");
    EXPECT_EQ(object_error("{"), "JSON parse error, premature EOI");
    EXPECT_EQ(object_error(R"({"qom-type":"secret","id":"s0"} x)"), "Expecting at most one JSON value");
    EXPECT_EQ(object_error(R"({"qom-type":"secret","id":"s0","data":"x","data":"y"})"),
              "JSON parse error, duplicate key");
}

TEST(ParseObject, Help) {
    ObjectSpec list = object_ok("help");
    EXPECT_TRUE(list.help);
    EXPECT_EQ(object_help(list),
              "List of user creatable objects:\n  authz-list\n  authz-list-file\n  authz-simple\n  main-loop\n"
              "  pr-manager-helper\n  secret\n  secret_keyring\n  thread-context\n  throttle-group\n"
              "  tls-cipher-suites\n  tls-creds-anon\n  tls-creds-psk\n  tls-creds-x509\n");
    ObjectSpec secret = object_ok("secret,help");
    EXPECT_TRUE(secret.help);
    EXPECT_EQ(object_help(secret),
              "secret options:\n  data=<string>\n  file=<string>\n  format=<QCryptoSecretFormat>\n"
              "  iv=<string>\n  keyid=<string>\n");
    EXPECT_TRUE(object_ok("secret,id=s0,data=x,?").help);
    EXPECT_TRUE(object_ok("qom-type=secret,help").help);
    ObjectSpec unknown = object_ok("foo,help");
    EXPECT_EQ(object_help(unknown).substr(0, 31), "List of user creatable objects:");
}

}  // namespace
}  // namespace qimg
