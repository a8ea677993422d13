// The shared option layer of the subcommands (cli/options.h): shared and own
// options in one getopt_long loop, with qemu-img's getopt conventions.
#include <getopt.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli/options.h"

namespace qimg::cli {
namespace {

// Runs parse_options over `args` (args[0] the subcommand name).
struct Argv {
    explicit Argv(std::vector<std::string> a) : args(std::move(a)) {
        for (std::string &s : args) ptrs.push_back(s.data());
        ptrs.push_back(nullptr);
    }
    int argc() const { return static_cast<int>(args.size()); }
    char **argv() { return ptrs.data(); }
    std::vector<std::string> args;
    std::vector<char *> ptrs;
};

int parse(Argv &a, SharedOptions &so, unsigned shared, std::vector<Option> own = {}) {
    optind = 0;  // a fresh getopt state, as main() gives each subcommand
    return parse_options(a.argc(), a.argv(), so, shared, std::move(own));
}

TEST(CliOptions, SharedOptionsAreStoredAndProgressFollowsQuiet) {
    Argv a({"check", "-f", "qcow2", "--image-opts", "-U", "-q", "-p", "-T", "none", "--output=json", "img"});
    SharedOptions so;
    ASSERT_EQ(parse(a, so,
                    kOptFormat | kOptImageOpts | kOptForceShare | kOptQuiet | kOptProgress | kOptSrcCache | kOptOutput),
              0);
    EXPECT_EQ(so.format, "qcow2");
    EXPECT_TRUE(so.image_opts);
    EXPECT_TRUE(so.force_share);
    EXPECT_TRUE(so.quiet);
    EXPECT_FALSE(so.progress);  // -q silences -p
    EXPECT_EQ(so.src_cache, "none");
    EXPECT_EQ(so.cache, "writeback");
    OutputFormat out;
    EXPECT_TRUE(so.output_format(out));
    EXPECT_EQ(out, OutputFormat::Json);
    EXPECT_EQ(one_filename(a.argc(), a.argv()), "img");
}

TEST(CliOptions, CreationOptionsAccumulate) {
    Argv a({"create", "-o", "cluster_size=4k", "-o", "lazy_refcounts=on", "x"});
    SharedOptions so;
    ASSERT_EQ(parse(a, so, kOptCreateOptions), 0);
    EXPECT_EQ(so.options, "cluster_size=4k,lazy_refcounts=on");
}

TEST(CliOptions, OwnOptionsRunInCommandLineOrder) {
    Argv a({"bitmap", "--add", "-b", "src", "--merge", "m", "--add", "img", "bm"});
    SharedOptions so;
    std::vector<std::string> seen;
    std::optional<std::string> src;
    auto note = [&seen](const char *what) {
        return [&seen, what](const char *arg) { return seen.push_back(std::string(what) + (arg ? arg : "")), true; };
    };
    ASSERT_EQ(parse(a, so, kOptFormat,
                    {{0, "add", false, note("add")}, {0, "merge", true, note("merge:")}, value('b', "source-file", src)}),
              0);
    EXPECT_EQ(seen, (std::vector<std::string>{"add", "merge:m", "add"}));
    EXPECT_EQ(src, "src");
    EXPECT_EQ(optind, 7);
}

TEST(CliOptions, AFailingHandlerStopsWithStatus1) {
    Argv a({"map", "-s", "nonsense", "img"});
    SharedOptions so;
    int64_t start = 0;
    testing::internal::CaptureStderr();
    EXPECT_EQ(parse(a, so, kOptFormat, {number('s', "start-offset", "start offset", start)}), 1);
    EXPECT_NE(testing::internal::GetCapturedStderr().find("start offset"), std::string::npos);
}

TEST(CliOptions, UnknownOptionAndMissingArgumentAreQemuImgErrors) {
    SharedOptions so;
    EXPECT_EXIT(
        {
            Argv a({"info", "--nope", "img"});
            parse(a, so, kOptFormat);
        },
        testing::ExitedWithCode(1), "unrecognized option '--nope'");
    EXPECT_EXIT(
        {
            Argv a({"info", "img", "-f"});
            parse(a, so, kOptFormat);
        },
        testing::ExitedWithCode(1), "missing argument for option '-f'");
    // A shared option the subcommand does not take is unknown.
    EXPECT_EXIT(
        {
            Argv a({"info", "-q", "img"});
            parse(a, so, kOptFormat);
        },
        testing::ExitedWithCode(1), "unrecognized option '-q'");
}

TEST(CliOptions, CacheModeErrorsNameTheOption) {
    EXPECT_FALSE(cache_mode_error("none", false));
    EXPECT_EQ(cache_mode_error("bogus", false), "Invalid cache option: bogus");
    EXPECT_EQ(cache_mode_error("bogus", true), "Invalid source cache option: bogus");
}

}  // namespace
}  // namespace qimg::cli
