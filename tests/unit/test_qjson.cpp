// QEMU's JSON dialect: parse errors as `qemu-img info 'json:...'` reports
// them, and the writer byte-for-byte against qemu-img 7.2 --output=json.
#include <gtest/gtest.h>

#include "util/qjson.h"

namespace qimg {
namespace {

using Json = nlohmann::ordered_json;

std::string parse_error(std::string_view text) {
    auto r = parse_qemu_json(text);
    EXPECT_FALSE(r) << text;
    return r ? "" : r.error().message;
}

TEST(QemuJsonParse, Values) {
    auto r = parse_qemu_json(R"({"a": 1, "b": [true, false, null], "c": {"d": "e"}, "f": -5, "g": 1.5})");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ((*r)["a"].get<int64_t>(), 1);
    EXPECT_TRUE((*r)["b"][0].get<bool>());
    EXPECT_TRUE((*r)["b"][2].is_null());
    EXPECT_EQ((*r)["c"]["d"], "e");
    EXPECT_EQ((*r)["f"].get<int64_t>(), -5);
    EXPECT_DOUBLE_EQ((*r)["g"].get<double>(), 1.5);
    // Insertion order is kept.
    EXPECT_EQ(r->begin().key(), "a");
}

TEST(QemuJsonParse, Numbers) {
    auto i = parse_qemu_json("9223372036854775807");
    ASSERT_TRUE(i);
    EXPECT_TRUE(i->is_number_integer() && !i->is_number_unsigned());
    auto u = parse_qemu_json("18446744073709551615");
    ASSERT_TRUE(u);
    EXPECT_TRUE(u->is_number_unsigned());
    EXPECT_EQ(u->get<uint64_t>(), UINT64_MAX);
    auto d = parse_qemu_json("18446744073709551616");
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->is_number_float());
    auto neg = parse_qemu_json("-9223372036854775809");
    ASSERT_TRUE(neg);
    EXPECT_TRUE(neg->is_number_float());
    auto inf = parse_qemu_json("1e400");
    ASSERT_TRUE(inf);
    EXPECT_TRUE(std::isinf(inf->get<double>()));
    auto z = parse_qemu_json("-0");
    ASSERT_TRUE(z);
    EXPECT_TRUE(z->is_number_integer());
}

TEST(QemuJsonParse, StringsAndEscapes) {
    auto r = parse_qemu_json(R"(['a\'b', "\"\\\/\b\f\n\r\t", "\u00e9\uD83D\uDE00", "\u0000"])");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ((*r)[0], "a'b");
    EXPECT_EQ((*r)[1], "\"\\/\b\f\n\r\t");
    EXPECT_EQ((*r)[2], "\xc3\xa9\xf0\x9f\x98\x80");
    EXPECT_EQ((*r)[3], "\xc0\x80");  // QEMU's modified UTF-8 NUL
    auto raw = parse_qemu_json("\"\xc3\xa9\xc0\x80\"");
    ASSERT_TRUE(raw);
    EXPECT_EQ(*raw, "\xc3\xa9\xc0\x80");
}

TEST(QemuJsonParse, ErrorsMatchQemu) {
    EXPECT_EQ(parse_error("{"), "JSON parse error, premature EOI");
    EXPECT_EQ(parse_error(""), "Expecting a JSON value");
    EXPECT_EQ(parse_error("  "), "Expecting a JSON value");
    EXPECT_EQ(parse_error(R"({"a":1} x)"), "Expecting at most one JSON value");
    EXPECT_EQ(parse_error(R"({"a":1}{)"), "Expecting at most one JSON value");
    EXPECT_EQ(parse_error(R"({"a":1}})"), "Expecting at most one JSON value");
    EXPECT_EQ(parse_error("1 2"), "Expecting at most one JSON value");
    EXPECT_EQ(parse_error("1 }"), "Expecting at most one JSON value");
    EXPECT_EQ(parse_error(R"({"a":1,"a":2})"), "JSON parse error, duplicate key");
    EXPECT_EQ(parse_error(R"({"a":tru})"), "JSON parse error, invalid keyword 'tru'");
    EXPECT_EQ(parse_error(R"({"a":nul})"), "JSON parse error, invalid keyword 'nul'");
    EXPECT_EQ(parse_error(R"({"a" 1})"), "JSON parse error, missing : in object pair");
    EXPECT_EQ(parse_error(R"({"a"})"), "JSON parse error, missing : in object pair");
    EXPECT_EQ(parse_error(R"({"a":1,})"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error(R"({"a" : 1 , })"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error(R"({,})"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error(R"({"a":[1,]})"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error(R"({"a":})"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error(R"({"a":[})"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error("}"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error("]"), "JSON parse error, expecting value");
    EXPECT_EQ(parse_error(R"({"a":1 "b":2})"), "JSON parse error, expected separator in dict");
    EXPECT_EQ(parse_error("[1 2]"), "JSON parse error, expected separator in list");
    EXPECT_EQ(parse_error("{1:2}"), "JSON parse error, key is not a string in object");
    EXPECT_EQ(parse_error(R"({"a":"\x"})"), "JSON parse error, invalid escape sequence in string");
    EXPECT_EQ(parse_error(R"({"a":01})"), "JSON parse error, stray '01'");
    EXPECT_EQ(parse_error(R"({"a":-01})"), "JSON parse error, stray '-01'");
    EXPECT_EQ(parse_error(R"({"a":-})"), "JSON parse error, stray '-}'");
    EXPECT_EQ(parse_error(R"({"a":1.})"), "JSON parse error, stray '1.}'");
    EXPECT_EQ(parse_error(R"({"a":1e})"), "JSON parse error, stray '1e}'");
    EXPECT_EQ(parse_error(R"({"a":1e+})"), "JSON parse error, stray '1e+}'");
    EXPECT_EQ(parse_error(R"({"a":.5})"), "JSON parse error, stray '.'");
    EXPECT_EQ(parse_error(R"({"a":True})"), "JSON parse error, stray 'T'");
    EXPECT_EQ(parse_error(R"({"a":@})"), "JSON parse error, stray '@'");
    EXPECT_EQ(parse_error(R"("abc)"), "JSON parse error, stray '\"abc'");
    EXPECT_EQ(parse_error("{\"a\":\"x\ty\"}"), "JSON parse error, stray '\"x\t'");
    EXPECT_EQ(parse_error("{\"a\":\"\xff\"}"), "JSON parse error, stray '\"\xff'");
    EXPECT_EQ(parse_error("{\"a\":\"\xed\xa0\x80\"}"), "JSON parse error, invalid UTF-8 sequence in string");
    EXPECT_EQ(parse_error("{\"a\":\"\xef\xbf\xbe\"}"), "JSON parse error, invalid UTF-8 sequence in string");
    EXPECT_EQ(parse_error(R"({"a":"\uD800"})"), "JSON parse error, \\uD800 is not a valid Unicode character");
    EXPECT_EQ(parse_error(R"({"a":"\uDC00"})"), "JSON parse error, \\uDC00 is not a valid Unicode character");
    EXPECT_EQ(parse_error(R"({"a":"\uFFFF"})"), "JSON parse error, \\uFFFF is not a valid Unicode character");
    EXPECT_EQ(parse_error(R"({"a":"\u12"})"), "JSON parse error, \\u12\" is not a valid Unicode character");
    EXPECT_EQ(parse_error(R"({"a":"\uD800\u"})"), "JSON parse error, \\uD800 is not a valid Unicode character");
    EXPECT_EQ(parse_error(R"({"a":[1,2)"), "JSON parse error, premature EOI");
    EXPECT_EQ(parse_error("["), "JSON parse error, premature EOI");
    EXPECT_EQ(parse_error(R"({"a":{"b":1})"), "JSON parse error, premature EOI");
}

TEST(QemuJsonParse, NestingLimit) {
    EXPECT_EQ(parse_error(std::string(1025, '[') + std::string(1025, ']')), "JSON nesting depth limit exceeded");
    auto ok = parse_qemu_json("{\"a\":" + std::string(1023, '[') + std::string(1023, ']') + "}");
    EXPECT_TRUE(ok) << ok.error().message;
}

TEST(QemuJsonParse, StopsAtNul) {
    auto r = parse_qemu_json(std::string_view("{\"a\":1}\0garbage", 15));
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["a"].get<int64_t>(), 1);
}

TEST(QdictOrder, MatchesQemuImgInfo) {
    // qemu-img info --output=json prints these keys in this order.
    Json j = Json::object();
    for (const char *k : {"filename", "format", "dirty-flag", "actual-size", "virtual-size", "cluster-size",
                          "backing-filename", "full-backing-filename", "backing-filename-format",
                          "format-specific", "snapshots"}) {
        j[k] = 0;
    }
    const std::vector<std::string> expected = {"backing-filename-format", "snapshots", "virtual-size",
                                               "filename",        "cluster-size",            "format",
                                               "actual-size",     "format-specific",         "full-backing-filename",
                                               "backing-filename", "dirty-flag"};
    EXPECT_EQ(qdict_order(j), expected);
    EXPECT_EQ(qdict_bucket("virtual-size"), 309u);
    EXPECT_EQ(qdict_bucket("data"), 505u);
}

TEST(QdictOrder, SameBucketNewestFirst) {
    // Find two keys sharing a bucket; the later-inserted one iterates first.
    std::string a = "k0", b;
    for (int i = 1; b.empty(); ++i) {
        std::string k = "k" + std::to_string(i);
        if (qdict_bucket(k) == qdict_bucket(a)) b = k;
    }
    Json j = Json::object();
    j[a] = 1;
    j[b] = 2;
    EXPECT_EQ(qdict_order(j), (std::vector<std::string>{b, a}));
}

const char *const kQcow2Info = R"({
    "virtual-size": 1048576,
    "filename": "dq.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 266240,
    "format-specific": {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": false,
            "refcount-bits": 16,
            "data-file": "dd.raw",
            "data-file-raw": true,
            "corrupt": false,
            "extended-l2": false
        }
    },
    "dirty-flag": false
})";

const char *const kSnapshotInfo = R"({
    "snapshots": [
        {
            "icount": 0,
            "vm-clock-nsec": 0,
            "name": "s1",
            "date-sec": 1795601698,
            "date-nsec": 238402000,
            "vm-clock-sec": 0,
            "id": "1",
            "vm-state-size": 0
        }
    ],
    "virtual-size": 1048576,
    "filename": "sn.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 208896,
    "format-specific": {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": false,
            "refcount-bits": 16,
            "corrupt": false,
            "extended-l2": false
        }
    },
    "dirty-flag": false
})";

const char *const kChainInfo = R"([
    {
        "virtual-size": 1048576,
        "filename": "a.img",
        "format": "raw",
        "actual-size": 4096,
        "dirty-flag": false
    }
])";

const char *const kCheck = R"({
    "image-end-offset": 262144,
    "total-clusters": 16,
    "check-errors": 0,
    "filename": "base.qcow2",
    "format": "qcow2"
})";

TEST(QemuJsonWrite, RoundTripsQemuImgOutput) {
    for (const char *golden : {kQcow2Info, kSnapshotInfo, kChainInfo, kCheck}) {
        auto j = parse_qemu_json(golden);
        ASSERT_TRUE(j) << j.error().message;
        EXPECT_EQ(to_qemu_json(*j, true, false), golden);
        EXPECT_EQ(to_qemu_json(*j), golden);  // these orders are QDict orders already
    }
}

TEST(QemuJsonWrite, ReordersLikeQdict) {
    Json j = Json::object();
    j["filename"] = "base.qcow2";
    j["format"] = "qcow2";
    j["check-errors"] = 0;
    j["image-end-offset"] = 262144;
    j["total-clusters"] = 16;
    EXPECT_EQ(to_qemu_json(j), kCheck);
}

TEST(QemuJsonWrite, StringEscapes) {
    // qemu-img info --output=json on the file "d/o\x01\x7f\t\\\"é😀\xff\xc0\x80z.img".
    Json j = "d/o\x01\x7f\t\\\"\xc3\xa9\xf0\x9f\x98\x80\xff\xc0\x80z.img";
    EXPECT_EQ(to_qemu_json(j), R"("d/o\u0001\u007F\t\\\"\u00E9\uD83D\uDE00\uFFFD\u0000z.img")");
    EXPECT_EQ(to_qemu_json(Json("\b\f\n\r")), R"("\b\f\n\r")");
    EXPECT_EQ(to_qemu_json(Json(std::string("ab\0cd", 5))), R"("ab")");  // C string
    EXPECT_EQ(to_qemu_json(Json("\xe2\x82")), R"("\uFFFD")");              // truncated sequence
    EXPECT_EQ(to_qemu_json(Json("\x80x")), R"("\uFFFDx")");
}

TEST(QemuJsonWrite, CompactFormAsInJsonFilenames) {
    // The image filename qemu-img shows for
    // json:{"driver":"raw","offset":512,"file":{"driver":"file","filename":"a.img"}}
    Json j = Json::object();
    j["driver"] = "raw";
    j["offset"] = 512;
    j["file"] = Json::object({{"driver", "file"}, {"filename", "a.img"}});
    EXPECT_EQ(to_qemu_json(j, false),
              R"({"offset": 512, "driver": "raw", "file": {"driver": "file", "filename": "a.img"}})");
    EXPECT_EQ(to_qemu_json(Json::array({1, 2}), false), "[1, 2]");
    EXPECT_EQ(to_qemu_json(Json::object(), false), "{}");
    EXPECT_EQ(to_qemu_json(Json::array(), false), "[]");
}

TEST(QemuJsonWrite, EmptyContainersAndScalars) {
    EXPECT_EQ(to_qemu_json(Json::object()), "{\n}");
    EXPECT_EQ(to_qemu_json(Json::array()), "[\n]");
    Json j = Json::object();
    j["a"] = Json::array();
    EXPECT_EQ(to_qemu_json(j), "{\n    \"a\": [\n    ]\n}");
    EXPECT_EQ(to_qemu_json(Json(nullptr)), "null");
    EXPECT_EQ(to_qemu_json(Json(true)), "true");
    EXPECT_EQ(to_qemu_json(Json(int64_t{-5})), "-5");
    EXPECT_EQ(to_qemu_json(Json(UINT64_MAX)), "18446744073709551615");
    EXPECT_EQ(to_qemu_json(Json(INT64_MIN)), "-9223372036854775808");
    EXPECT_EQ(to_qemu_json(Json(0.1)), "0.10000000000000001");
    EXPECT_EQ(to_qemu_json(Json(1.5)), "1.5");
    EXPECT_EQ(to_qemu_json(Json(100.0)), "100");
}

}  // namespace
}  // namespace qimg
