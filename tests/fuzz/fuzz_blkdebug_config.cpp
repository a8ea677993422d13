// libFuzzer target for blkdebug's config-file parser and rule builder
// (src/filter/blkdebug/rules.h): any text either parses into rules or fails
// with a message; the engine then takes a few events and checks without
// crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "filter/blkdebug/rules.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    using namespace qimg;
    const std::string_view in(reinterpret_cast<const char *>(data), size);
    auto sections = blkdebug::parse_config(in);
    if (!sections) return 0;
    auto rules = blkdebug::make_rules(*sections);
    if (!rules) return 0;
    blkdebug::Engine e(std::move(*rules));
    for (size_t i = 0; i < kBlkdebugEventCount; ++i) {
        e.event(BlkdebugEvent(i));
        (void)e.check(i * 512, 4096, blkdebug::IoType(i % 6));
    }
    return 0;
}
