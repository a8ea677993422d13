// blkdebug's rules (QEMU docs/devel/blkdebug.txt): what a config file
// ([inject-error] and [set-state] sections) and the node's options
// ("inject-error.N.KEY", "set-state.N.KEY") describe, and the engine that
// arms rules on debug events and fails the requests they match.
//
// Kept apart from the node (blkdebug.cpp) so that the parser can be unit
// tested and fuzzed on its own (tests/unit/test_blkdebug.cpp,
// tests/fuzz/fuzz_blkdebug_config.cpp).
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "block/debug_event.h"
#include "util/json_filename.h"
#include "util/result.h"

namespace qimg::blkdebug {

// QEMU's BlkdebugIOType: what kind of request a rule fails.
enum class IoType { Read, Write, WriteZeroes, Discard, Flush, BlockStatus };

struct Rule {
    enum class Action { InjectError, SetState };
    Action action = Action::InjectError;
    BlkdebugEvent event = BlkdebugEvent::None;
    int64_t state = 0;  // 0: any state
    // inject-error
    int error = EIO;                // 0: the rule matches but fails nothing
    bool once = false;              // removed after its first failure
    bool immediately = false;       // QEMU's synchronous failure; the same here
    int64_t offset = -1;            // byte offset ("sector" * 512) a request must cover, or -1
    uint32_t iotype_mask = 0;       // bit per IoType
    // set-state
    int64_t new_state = 0;
};

// One section as written ([inject-error] or [set-state], or an options
// group), keys in the order given; the values are still text.
struct Section {
    std::string group;
    std::vector<std::pair<std::string, std::string>> keys;
};

// Parses a config file's text as QEMU's qemu_config_parse() reads it:
// "[group]" or "[group \"id\"]" headers, `key = "value"` lines, '#'
// comments. Type errors of the values are found here, in file order, as in
// QEMU ("Parameter 'errno' expects a number", "Invalid parameter 'x'",
// "There is no option group 'x'", "no group defined", "parse error").
Result<std::vector<Section>> parse_config(std::string_view text);
// The sections the node's options give: "inject-error.KEY" (one section) or
// "inject-error.N.KEY" (N = 0, 1, ...), the same for set-state; the keys
// are removed from `opts`.
Result<std::vector<Section>> sections_from_options(OptionMap &opts);
// Builds the rules of all sections: every inject-error section first, then
// every set-state one, each in the order given (QEMU's read_config).
Result<std::vector<Rule>> make_rules(const std::vector<Section> &sections);

// The rule engine of one node. Thread-safe (one mutex; rules are few).
class Engine {
public:
    explicit Engine(std::vector<Rule> rules) : rules_(std::move(rules)) {}
    // A debug event: arms the inject-error rules of `e` that match the
    // current state (they replace the armed ones, if any match), and moves
    // to the new state of the first set-state rule of `e` that matches it.
    void event(BlkdebugEvent e);
    // The errno to fail a request of `type` over [off, off+len) with, or 0.
    // The first armed rule that covers it decides; a `once` rule is then
    // dropped for good.
    int check(uint64_t off, uint64_t len, IoType type);
    int64_t state() const;

private:
    bool removed_(size_t i) const { return removed_flags_.count(i) != 0; }
    mutable std::mutex mutex_;
    std::vector<Rule> rules_;          // definition order
    std::set<size_t> removed_flags_;   // `once` rules that fired: never armed again
    std::vector<size_t> armed_;        // indexes into rules_, in definition order
    int64_t state_ = 1;          // blkdebug starts in state 1
};

}  // namespace qimg::blkdebug
