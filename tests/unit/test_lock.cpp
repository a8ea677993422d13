// Unit tests for QEMU's permission model (block/perm.h) and the file
// protocol's lock bytes (protocol/file/lock.h). Two descriptors of one file
// stand for two processes: OFD locks of different open file descriptions
// conflict even within one process.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "block/perm.h"
#include "protocol/file/lock.h"

namespace qimg {
namespace {

constexpr uint8_t CR = kPermConsistentRead, W = kPermWrite, WU = kPermWriteUnchanged, R = kPermResize;

TEST(Perm, RootPermsFollowOpenFlags) {
    EXPECT_EQ(root_perms(false, false, false, false), (Perms{CR, kPermAll}));
    EXPECT_EQ(root_perms(true, false, false, false), (Perms{CR | W, kPermAll}));
    EXPECT_EQ(root_perms(true, false, true, false), (Perms{CR | W | R, kPermAll}));
    EXPECT_EQ(root_perms(false, true, false, false), (Perms{0, kPermAll}));        // info
    EXPECT_EQ(root_perms(false, false, false, true), (Perms{CR, CR | WU}));        // convert source
}

TEST(Perm, FormatOverFileTakesMetadataPerms) {
    // qcow2 read-only: consistent read, write and resize not shared (201, 203).
    EXPECT_EQ(child_perms(kRoleImage, Perms{CR, kPermAll}, false, false), (Perms{CR, CR | WU}));
    // read-write: write and resize too (100, 101, 103 + 201, 203).
    EXPECT_EQ(child_perms(kRoleImage, Perms{CR | W, kPermAll}, true, false), (Perms{CR | W | R, CR | WU}));
    // info (no I/O): only the unshared bytes.
    EXPECT_EQ(child_perms(kRoleImage, Perms{0, kPermAll}, false, true), (Perms{0, CR | WU}));
}

TEST(Perm, BackingAndFilterChildren) {
    // A backing file is only read, and shares writes when its child does.
    EXPECT_EQ(child_perms(kRoleCow, Perms{CR | W, kPermAll}, true, false), (Perms{CR, kPermAll}));
    EXPECT_EQ(child_perms(kRoleCow, Perms{CR, CR | WU}, false, false), (Perms{CR, CR | WU}));
    // raw without a window passes everything through.
    EXPECT_EQ(child_perms(kRoleFiltered, Perms{CR | W, kPermAll}, true, false), (Perms{CR | W, kPermAll}));
    // a data child must not be resized by others and resizes when written.
    EXPECT_EQ(child_perms(kRoleData, Perms{CR | W, kPermAll}, true, false), (Perms{CR | W | R, W | CR | WU}));
}

TEST(Perm, Names) {
    EXPECT_STREQ(perm_name(CR), "consistent read");
    EXPECT_STREQ(perm_name(W), "write");
    EXPECT_STREQ(perm_name(WU), "write unchanged");
    EXPECT_STREQ(perm_name(R), "resize");
}

class LockTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!filelock::have_ofd_locks()) GTEST_SKIP() << "no OFD locks";
        char tmpl[] = "/tmp/qimg-lock-XXXXXX";
        int fd = mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        ::close(fd);
        path_ = tmpl;
        a_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
        b_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
        ASSERT_GE(a_, 0);
        ASSERT_GE(b_, 0);
    }
    void TearDown() override {
        if (a_ >= 0) ::close(a_);
        if (b_ >= 0) ::close(b_);
        if (!path_.empty()) ::unlink(path_.c_str());
    }
    std::string path_;
    int a_ = -1, b_ = -1;
};

const Perms kQcow2Rw{CR | W | R, CR | WU};
const Perms kQcow2Ro{CR, CR | WU};
const Perms kRawRw{CR | W, kPermAll};
const Perms kRawRo{CR, kPermAll};

TEST_F(LockTest, WriterBlocksOtherWritersWithQemuMessage) {
    filelock::LockState a, b;
    ASSERT_TRUE(a.set_perm(a_, kQcow2Rw, "x.qcow2"));
    auto r = b.set_perm(b_, kQcow2Rw, "x.qcow2");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Failed to get \"write\" lock\nIs another process using the image [x.qcow2]?");
    r = b.set_perm(b_, kQcow2Ro, "x.qcow2");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Failed to get shared \"write\" lock\nIs another process using the image [x.qcow2]?");
    // A failed attempt leaves no locks behind.
    EXPECT_EQ(b.perms(), Perms{});
    EXPECT_TRUE(filelock::check(a_, kQcow2Rw));
}

TEST_F(LockTest, ReadersShareAndForceShareReads) {
    filelock::LockState a, b;
    ASSERT_TRUE(a.set_perm(a_, kQcow2Ro, "x"));
    ASSERT_TRUE(b.set_perm(b_, kQcow2Ro, "x"));
    // -U: sharing everything reads next to a writer.
    filelock::LockState c, d;
    ::close(a_);
    a_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    ::close(b_);
    b_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_TRUE(c.set_perm(a_, kQcow2Rw, "x"));
    EXPECT_TRUE(d.set_perm(b_, Perms{CR, kPermAll}, "x"));
}

TEST_F(LockTest, RawSharesEverything) {
    filelock::LockState a, b;
    ASSERT_TRUE(a.set_perm(a_, kRawRw, "r"));
    EXPECT_TRUE(b.set_perm(b_, kRawRw, "r"));
}

TEST_F(LockTest, DroppingPermissionsReleasesBytes) {
    filelock::LockState a, b;
    ASSERT_TRUE(a.set_perm(a_, kQcow2Rw, "x"));
    ASSERT_TRUE(a.set_perm(a_, kRawRo, "x"));
    EXPECT_TRUE(b.set_perm(b_, kQcow2Rw, "x"));
}

TEST_F(LockTest, ParseMode) {
    EXPECT_EQ(*filelock::parse_mode("on"), filelock::Mode::On);
    EXPECT_EQ(*filelock::parse_mode("off"), filelock::Mode::Off);
    EXPECT_EQ(*filelock::parse_mode("auto"), filelock::Mode::Auto);
    auto r = filelock::parse_mode("yes");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "invalid parameter value: yes");
}

}  // namespace
}  // namespace qimg
