// json: filenames and --image-opts strings as flat option maps; messages as
// `qemu-img info 'json:...'` and `qemu-img info --image-opts ...` print them.
#include <gtest/gtest.h>

#include "util/json_filename.h"

namespace qimg {
namespace {

OptionMap json_ok(std::string_view s) {
    auto r = parse_json_filename(s);
    EXPECT_TRUE(r) << s << ": " << (r ? "" : r.error().message);
    return r ? *r : OptionMap{};
}

std::string json_error(std::string_view s) {
    auto r = parse_json_filename(s);
    EXPECT_FALSE(r) << s;
    return r ? "" : r.error().message;
}

TEST(JsonFilename, Detection) {
    EXPECT_TRUE(is_json_filename("json:{}"));
    EXPECT_TRUE(is_json_filename("json:"));
    EXPECT_FALSE(is_json_filename("JSON:{}"));
    EXPECT_FALSE(is_json_filename("a.img"));
    EXPECT_FALSE(is_json_filename(" json:{}"));
}

TEST(JsonFilename, Flattening) {
    EXPECT_EQ(json_ok(R"(json:{"driver":"raw","file":{"driver":"file","filename":"a.img"}})"),
              (OptionMap{{"driver", "raw"}, {"file.driver", "file"}, {"file.filename", "a.img"}}));
    EXPECT_EQ(json_ok(R"(json:{"driver":"raw","file.driver":"file","file.filename":"a.img"})"),
              (OptionMap{{"driver", "raw"}, {"file.driver", "file"}, {"file.filename", "a.img"}}));
    EXPECT_EQ(json_ok("json:{'driver':'raw','file':{'driver':'file','filename':'a.img'}}"),
              (OptionMap{{"driver", "raw"}, {"file.driver", "file"}, {"file.filename", "a.img"}}));
    EXPECT_EQ(json_ok(R"(json: {"backing":{"file":{"filename":"b"}}})"),
              (OptionMap{{"backing.file.filename", "b"}}));
    EXPECT_EQ(json_ok(R"(json:{"x":[1,2,{"c":3}]})"), (OptionMap{{"x.0", "1"}, {"x.1", "2"}, {"x.2.c", "3"}}));
    EXPECT_EQ(json_ok("json:{}"), OptionMap{});
}

TEST(JsonFilename, NestedBeatsDottedKey) {
    // qemu-img opens a.img for this, not b.
    EXPECT_EQ(json_ok(R"(json:{"file":{"filename":"a.img"},"file.filename":"b"})").at("file.filename"), "a.img");
    EXPECT_EQ(json_ok(R"(json:{"file.filename":"b","file":{"filename":"a.img"}})").at("file.filename"), "a.img");
}

TEST(JsonFilename, ScalarConversion) {
    OptionMap m = json_ok(
        R"(json:{"i":512,"n":-1,"u":18446744073709551615,"d":1.5,"t":true,"f":false,"z":null,"s":"512","e":{},"a":[],"big":1e400})");
    EXPECT_EQ(m.at("i"), "512");
    EXPECT_EQ(m.at("n"), "-1");
    EXPECT_EQ(m.at("u"), "18446744073709551615");
    EXPECT_EQ(m.at("d"), "1.5");
    EXPECT_EQ(m.at("t"), "on");
    EXPECT_EQ(m.at("f"), "off");
    EXPECT_EQ(m.count("z"), 0u);
    EXPECT_EQ(m.at("s"), "512");
    EXPECT_EQ(m.at("e"), "{}");
    EXPECT_EQ(m.at("a"), "[]");
    EXPECT_EQ(m.at("big"), "inf");
    EXPECT_EQ(json_ok(R"(json:{"a":"\u0000"})").at("a"), "\xc0\x80");
}

TEST(JsonFilename, ErrorsMatchQemu) {
    EXPECT_EQ(json_error("json:{"), "Could not parse the JSON options: JSON parse error, premature EOI");
    EXPECT_EQ(json_error("json:"), "Could not parse the JSON options: Expecting a JSON value");
    EXPECT_EQ(json_error(R"(json:{"a":1} x)"), "Could not parse the JSON options: Expecting at most one JSON value");
    EXPECT_EQ(json_error(R"(json:{"a":1,"a":2})"), "Could not parse the JSON options: JSON parse error, duplicate key");
    EXPECT_EQ(json_error(R"(json:{"a":tru})"),
              "Could not parse the JSON options: JSON parse error, invalid keyword 'tru'");
    EXPECT_EQ(json_error(R"(json:{"a":01})"), "Could not parse the JSON options: JSON parse error, stray '01'");
    EXPECT_EQ(json_error("json:[]"), "Invalid JSON object given");
    EXPECT_EQ(json_error("json:1"), "Invalid JSON object given");
    EXPECT_EQ(json_error(R"(json:"x")"), "Invalid JSON object given");
    EXPECT_EQ(json_error("json:null"), "Invalid JSON object given");
}

TEST(JsonFilename, TreeKeepsTypes) {
    auto t = parse_json_filename_tree(R"(json:{"offset":512,"file":{"filename":"a"}})");
    ASSERT_TRUE(t);
    EXPECT_TRUE((*t)["offset"].is_number_integer());
    EXPECT_EQ((*t)["file"]["filename"], "a");
}

OptionMap image_opts_ok(std::string_view s, std::vector<std::string> *w = nullptr) {
    auto r = parse_image_opts(s, w);
    EXPECT_TRUE(r) << s << ": " << (r ? "" : r.error().message);
    return r ? *r : OptionMap{};
}

TEST(ImageOpts, Parsing) {
    EXPECT_EQ(image_opts_ok("driver=raw,file.filename=a.img,offset=512"),
              (OptionMap{{"driver", "raw"}, {"file.filename", "a.img"}, {"offset", "512"}}));
    EXPECT_EQ(image_opts_ok("a.img"), (OptionMap{{"file", "a.img"}}));
    EXPECT_EQ(image_opts_ok("a,,b.img,driver=raw"), (OptionMap{{"file", "a,b.img"}, {"driver", "raw"}}));
    EXPECT_EQ(image_opts_ok("driver=raw,file.filename=a.img,"),
              (OptionMap{{"driver", "raw"}, {"file.filename", "a.img"}}));
    EXPECT_EQ(image_opts_ok("driver=raw,,file.filename=a.img"), (OptionMap{{"driver", "raw,file.filename=a.img"}}));
    EXPECT_EQ(image_opts_ok(""), OptionMap{});
    EXPECT_EQ(image_opts_ok(","), (OptionMap{{"file", ""}}));
    EXPECT_EQ(image_opts_ok("driver=qcow2,file.filename=a.img,driver=raw").at("driver"), "raw");
    EXPECT_EQ(image_opts_ok("driver=raw,help").at("help"), "on");
    EXPECT_EQ(image_opts_ok("help"), (OptionMap{{"file", "help"}}));
    EXPECT_EQ(image_opts_ok("driver=raw,id=x,id=y").at("id"), "x");
}

TEST(ImageOpts, WarningsAndIdCheck) {
    std::vector<std::string> w;
    EXPECT_EQ(image_opts_ok("driver=raw,file.filename=a.img,nofoo", &w).at("foo"), "off");
    EXPECT_EQ(w, (std::vector<std::string>{"short-form boolean option 'nofoo' deprecated\nPlease use foo=off instead"}));
    auto bad = parse_image_opts("driver=raw,file.filename=a.img,id=0x");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message,
              "Parameter 'id' expects an identifier\n"
              "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
}

TEST(ExtractPrefix, MovesSubOptions) {
    OptionMap m{{"driver", "qcow2"},
                {"file.driver", "file"},
                {"file.filename", "a"},
                {"filex", "keep"},
                {"file", "keep2"},
                {"backing.file.filename", "b"}};
    OptionMap file = extract_prefix(m, "file");
    EXPECT_EQ(file, (OptionMap{{"driver", "file"}, {"filename", "a"}}));
    EXPECT_EQ(m, (OptionMap{{"driver", "qcow2"}, {"filex", "keep"}, {"file", "keep2"}, {"backing.file.filename", "b"}}));
    OptionMap backing = extract_prefix(m, "backing");
    EXPECT_EQ(backing, (OptionMap{{"file.filename", "b"}}));
    EXPECT_EQ(extract_prefix(m, "none"), OptionMap{});
}

}  // namespace
}  // namespace qimg
