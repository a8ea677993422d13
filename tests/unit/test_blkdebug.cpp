// Unit tests of blkdebug's config parser and rule engine
// (src/filter/blkdebug/rules.h) and of the request padding of
// block/limits.h that its `align` option relies on.
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include <gtest/gtest.h>

#include "block/limits.h"
#include "filter/blkdebug/rules.h"

namespace qimg::blkdebug {
namespace {

std::vector<Rule> rules_of(std::string_view text) {
    auto s = parse_config(text);
    EXPECT_TRUE(s) << s.error().message;
    auto r = make_rules(*s);
    EXPECT_TRUE(r) << r.error().message;
    return *r;
}

std::string config_error(std::string_view text) {
    auto s = parse_config(text);
    if (!s) return s.error().message;
    auto r = make_rules(*s);
    return r ? "" : r.error().message;
}

std::string options_error(OptionMap o) {
    auto s = sections_from_options(o);
    if (!s) return s.error().message;
    auto r = make_rules(*s);
    return r ? "" : r.error().message;
}

TEST(BlkdebugConfig, SectionsKeysAndDefaults) {
    auto rules = rules_of(
        "# comment\n"
        "[inject-error]\n"
        "  event   =   \"read_aio\"\n"
        "\n"
        "[set-state]\n"
        "event = \"write_aio\"\n"
        "state = \"1\"\n"
        "new_state = \"2\"\n"
        "[inject-error \"named\"]\n"
        "event = \"l2_update\"\n"
        "errno = \"28\"\n"
        "sector = \"3\"\n"
        "once = \"on\"\n"
        "iotype = \"write-zeroes\"\n");
    ASSERT_EQ(rules.size(), 3u);
    // inject-error rules first, in file order, then set-state.
    EXPECT_EQ(rules[0].event, BlkdebugEvent::ReadAio);
    EXPECT_EQ(rules[0].error, EIO);
    EXPECT_EQ(rules[0].offset, -1);
    EXPECT_FALSE(rules[0].once);
    EXPECT_EQ(rules[0].iotype_mask & (1u << int(IoType::BlockStatus)), 0u);
    EXPECT_EQ(rules[1].event, BlkdebugEvent::L2Update);
    EXPECT_EQ(rules[1].error, 28);
    EXPECT_EQ(rules[1].offset, 3 * 512);
    EXPECT_TRUE(rules[1].once);
    EXPECT_EQ(rules[1].iotype_mask, 1u << int(IoType::WriteZeroes));
    EXPECT_EQ(rules[2].action, Rule::Action::SetState);
    EXPECT_EQ(rules[2].state, 1);
    EXPECT_EQ(rules[2].new_state, 2);
}

TEST(BlkdebugConfig, QemuMessages) {
    EXPECT_EQ(config_error("[foo]\nevent = \"read_aio\"\n"), "There is no option group 'foo'");
    EXPECT_EQ(config_error("event = \"read_aio\"\n"), "no group defined");
    EXPECT_EQ(config_error("[inject-error]\n\t\n"), "parse error");
    // sscanf(" %63s = \"...\"") takes any first word as a key, with an empty
    // value when the rest does not fit.
    EXPECT_EQ(config_error("[inject-error]\nevent = read_aio\n"), "invalid parameter value: ");
    EXPECT_EQ(config_error("[inject-error]\nstate=\"\"\n"), "Invalid parameter 'state=\"\"'");
    EXPECT_EQ(config_error("[inject-error]\nbogus = \"1\"\n"), "Invalid parameter 'bogus'");
    EXPECT_EQ(config_error("[inject-error]\nevent = \"nope\"\n"), "invalid parameter value: nope");
    EXPECT_EQ(config_error("[inject-error]\nerrno = \"5\"\n"), "Missing event name for rule");
    EXPECT_EQ(config_error("[inject-error]\nevent = \"read_aio\"\nerrno = \"x\"\n"),
              "Parameter 'errno' expects a number");
    EXPECT_EQ(config_error("[inject-error]\nevent = \"read_aio\"\niotype = \"bad\"\n"), "invalid parameter value: bad");
    EXPECT_EQ(config_error("[set-state]\nevent = \"read_aio\"\nerrno = \"1\"\n"), "Invalid parameter 'errno'");
    EXPECT_EQ(config_error(""), "");
    EXPECT_EQ(config_error("[inject-error]\nevent = \"read_aio"), "");  // the closing quote is optional
}

TEST(BlkdebugOptions, IndexedAndPlainSections) {
    OptionMap o = {{"inject-error.0.event", "read_aio"}, {"inject-error.1.event", "write_aio"},
                   {"inject-error.1.errno", "28"},      {"set-state.event", "flush_to_os"},
                   {"set-state.new_state", "3"},        {"align", "512"}};
    auto s = sections_from_options(o);
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(o.size(), 1u);  // only "align" is left for the node
    auto r = make_rules(*s);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->size(), 3u);
    EXPECT_EQ((*r)[1].error, 28);
    EXPECT_EQ((*r)[2].new_state, 3);

    EXPECT_EQ(options_error({{"inject-error.0.event", "read_aio"}, {"inject-error.0.bogus", "1"}}),
              "[inject-error] section doesn't support the option 'bogus'");
    EXPECT_EQ(options_error({{"inject-error.bogus", "1"}}), "Unused option 'bogus' for [inject-error]");
    EXPECT_EQ(options_error({{"inject-error.0.event", "read_aio"}, {"inject-error.2.event", "read_aio"}}),
              "Unused option '2.event' for [inject-error]");
    EXPECT_EQ(options_error({{"inject-error.0.event", "read_aio"}, {"inject-error.event", "write_aio"}}),
              "Unknown option '0.event' for [inject-error]");
    EXPECT_EQ(options_error({{"inject-error.0", "x"}}), "[inject-error] section (index 0) does not consist of keys");
    EXPECT_EQ(options_error({{"set-state.0.event", "read_aio"}, {"set-state.0.new_state", "x"}}),
              "Parameter 'new_state' expects a number");
    EXPECT_EQ(options_error({{"inject-error.0.event", "read_aio"}, {"inject-error.0.once", "maybe"}}),
              "Parameter 'once' expects 'on' or 'off'");
}

TEST(BlkdebugEngine, ArmedByEventsMatchedBySectorAndType) {
    Engine e(rules_of("[inject-error]\nevent = \"read_aio\"\nsector = \"2\"\niotype = \"read\"\n"));
    EXPECT_EQ(e.check(0, 4096, IoType::Read), 0);  // not armed yet
    e.event(BlkdebugEvent::WriteAio);
    EXPECT_EQ(e.check(0, 4096, IoType::Read), 0);
    e.event(BlkdebugEvent::ReadAio);
    EXPECT_EQ(e.check(0, 1024, IoType::Read), 0);      // ends before sector 2
    EXPECT_EQ(e.check(1024, 512, IoType::Read), EIO);  // covers it
    EXPECT_EQ(e.check(1024, 512, IoType::Write), 0);   // another kind
    EXPECT_EQ(e.check(1024, 512, IoType::Read), EIO);  // stays armed without `once`
}

TEST(BlkdebugEngine, OnceAndReplacement) {
    Engine e(rules_of("[inject-error]\nevent = \"read_aio\"\nerrno = \"28\"\nonce = \"on\"\n"
                      "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\n"));
    e.event(BlkdebugEvent::ReadAio);
    EXPECT_EQ(e.check(0, 512, IoType::Write), 28);
    EXPECT_EQ(e.check(0, 512, IoType::Write), 0);  // fired once, gone for good
    e.event(BlkdebugEvent::ReadAio);
    EXPECT_EQ(e.check(0, 512, IoType::Write), 0);
    e.event(BlkdebugEvent::WriteAio);  // arms the write_aio rule in place of the others
    EXPECT_EQ(e.check(0, 512, IoType::Flush), EIO);
}

TEST(BlkdebugEngine, StateTransitions) {
    // The second write_aio fails: the first moves the state from 1 to 2.
    Engine e(rules_of("[set-state]\nevent = \"write_aio\"\nstate = \"1\"\nnew_state = \"2\"\n"
                      "[inject-error]\nevent = \"write_aio\"\nstate = \"2\"\nerrno = \"5\"\n"));
    EXPECT_EQ(e.state(), 1);
    e.event(BlkdebugEvent::WriteAio);
    EXPECT_EQ(e.state(), 2);
    EXPECT_EQ(e.check(0, 512, IoType::Write), 0);
    e.event(BlkdebugEvent::WriteAio);
    EXPECT_EQ(e.check(0, 512, IoType::Write), EIO);
    // Of two set-state rules of one event, the first defined wins.
    Engine f(rules_of("[set-state]\nevent = \"none\"\nnew_state = \"7\"\n"
                      "[set-state]\nevent = \"none\"\nnew_state = \"9\"\n"));
    f.event(BlkdebugEvent::None);
    EXPECT_EQ(f.state(), 7);
}

}  // namespace
}  // namespace qimg::blkdebug

namespace qimg {
namespace {

// A byte array behind aligned-only callbacks that record each call.
struct Disk {
    std::vector<uint8_t> bytes = std::vector<uint8_t>(16384, 0xee);
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    uint64_t align = 512;
    LimitedRead reader() {
        return [this](uint64_t o, void *b, size_t n) -> Result<void> {
            EXPECT_EQ(o % align, 0u);
            EXPECT_EQ(n % align, 0u);
            calls.emplace_back(o, n);
            std::memcpy(b, bytes.data() + o, n);
            return ok();
        };
    }
    LimitedWrite writer() {
        return [this](uint64_t o, const void *b, size_t n) -> Result<void> {
            EXPECT_EQ(o % align, 0u);
            EXPECT_EQ(n % align, 0u);
            calls.emplace_back(o, n);
            std::memcpy(bytes.data() + o, b, n);
            return ok();
        };
    }
};

TEST(Limits, UnalignedReadsAndWritesArePaddedAndSplit) {
    Disk d;
    IoLimits lim{512, 1024, 0, 0};
    std::mutex m;
    std::vector<uint8_t> data(1000, 0x42);
    ASSERT_TRUE(limited_write(lim, 100, data.data(), data.size(), d.reader(), d.writer(), m));
    EXPECT_EQ(d.bytes[99], 0xee);
    EXPECT_EQ(d.bytes[100], 0x42);
    EXPECT_EQ(d.bytes[1099], 0x42);
    EXPECT_EQ(d.bytes[1100], 0xee);
    for (auto [o, n] : d.calls) EXPECT_LE(n, 1024u);
    std::vector<uint8_t> back(1000);
    d.calls.clear();
    ASSERT_TRUE(limited_read(lim, 100, back.data(), back.size(), d.reader()));
    EXPECT_EQ(back, data);
    ASSERT_EQ(d.calls.size(), 2u);  // 0..1024 and 1024..1536
    EXPECT_EQ(d.calls[1], (std::pair<uint64_t, uint64_t>{1024, 512}));
}

TEST(Limits, ZeroesAndDiscards) {
    Disk d;
    IoLimits lim{512, 0, 1024, 1024};
    std::mutex m;
    std::vector<std::pair<uint64_t, uint64_t>> zeroed, discarded;
    auto zero = [&](uint64_t o, uint64_t n) -> Result<void> {
        zeroed.emplace_back(o, n);
        return ok();
    };
    ASSERT_TRUE(limited_write_zeroes(lim, 256, 3000, d.reader(), d.writer(), zero, m));
    EXPECT_EQ(d.bytes[256], 0);    // head written as zeroes
    EXPECT_EQ(d.bytes[255], 0xee);
    EXPECT_EQ(d.bytes[3255], 0);   // tail too
    EXPECT_EQ(d.bytes[3256], 0xee);
    EXPECT_EQ(zeroed, (std::vector<std::pair<uint64_t, uint64_t>>{{512, 1024}, {1536, 1024}, {2560, 512}}));
    auto discard = [&](uint64_t o, uint64_t n) -> Result<void> {
        discarded.emplace_back(o, n);
        return ok();
    };
    ASSERT_TRUE(limited_discard(lim, 100, 300, discard));  // no whole block
    EXPECT_TRUE(discarded.empty());
    ASSERT_TRUE(limited_discard(lim, 100, 2000, discard));
    EXPECT_EQ(discarded, (std::vector<std::pair<uint64_t, uint64_t>>{{512, 1024}, {1536, 512}}));
}

}  // namespace
}  // namespace qimg
