// util/shared_library.h: loading on demand, and the errors a driver shows
// when its client library is missing or too old.
#include <gtest/gtest.h>

#include "util/shared_library.h"

namespace qimg {
namespace {

TEST(SharedLibrary, LoadsAndBindsASymbol) {
    // libz is always there: qimg links it.
    auto h = open_shared_library("libz.so.1");
    ASSERT_TRUE(h) << h.error().message;
    const char *(*version)() = nullptr;
    ASSERT_TRUE(bind_symbol(*h, "libz.so.1", "zlibVersion", version));
    ASSERT_NE(version, nullptr);
    EXPECT_EQ(version()[0], '1');
}

TEST(SharedLibrary, MissingLibraryIsAnErrorNamingIt) {
    auto h = open_shared_library("libqimg-no-such-library.so.7");
    ASSERT_FALSE(h);
    EXPECT_EQ(h.error().message.rfind("Could not load libqimg-no-such-library.so.7: ", 0), 0u) << h.error().message;
}

TEST(SharedLibrary, MissingSymbolIsAnErrorNamingIt) {
    auto h = open_shared_library("libz.so.1");
    ASSERT_TRUE(h);
    void (*fn)() = nullptr;
    auto r = bind_symbol(*h, "libz.so.1", "qimg_no_such_symbol", fn);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message.rfind("Could not find qimg_no_such_symbol in libz.so.1: ", 0), 0u) << r.error().message;
    EXPECT_EQ(fn, nullptr);
}

}  // namespace
}  // namespace qimg
