// block/table_cache.h: loads on miss, LRU-half eviction with write-back,
// dirty tracking, before_write ordering, and load/store errors.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "block/table_cache.h"

namespace qimg {
namespace {

using Table = std::vector<int>;

struct FakeDisk {
    std::map<uint64_t, Table> tables;
    std::vector<std::string> log;
    bool fail_load = false, fail_before = false;

    TableCache<Table>::Io io() {
        TableCache<Table>::Io io;
        io.load = [this](uint64_t off) -> Result<std::shared_ptr<Table>> {
            log.push_back("load " + std::to_string(off));
            if (fail_load) return make_error(EIO, "load failed");
            return std::make_shared<Table>(tables[off]);
        };
        io.store = [this](uint64_t off, const Table &t) -> Result<void> {
            log.push_back("store " + std::to_string(off));
            tables[off] = t;
            return ok();
        };
        io.before_write = [this]() -> Result<void> {
            log.push_back("before");
            if (fail_before) return make_error(ENOSPC, "no room");
            return ok();
        };
        return io;
    }
};

TEST(TableCache, LoadsOnceAndWritesBackOnlyDirtyTables) {
    FakeDisk d;
    d.tables[100] = {1, 2};
    d.tables[200] = {3};
    TableCache<Table> c(8, d.io());
    auto a = c.get(100);
    ASSERT_TRUE(a);
    EXPECT_EQ(**a, (Table{1, 2}));
    ASSERT_TRUE(c.get(100));
    ASSERT_TRUE(c.get(200));
    EXPECT_EQ(d.log, (std::vector<std::string>{"load 100", "load 200"}));
    EXPECT_FALSE(c.dirty());
    ASSERT_TRUE(c.write_back());
    EXPECT_EQ(d.log.size(), 2u);  // nothing dirty: not even before_write

    (**a)[0] = 9;
    c.mark_dirty(100);
    c.mark_dirty(999);  // not cached: ignored
    EXPECT_TRUE(c.dirty());
    ASSERT_TRUE(c.write_back());
    EXPECT_EQ(d.log, (std::vector<std::string>{"load 100", "load 200", "before", "store 100"}));
    EXPECT_EQ(d.tables[100], (Table{9, 2}));
    EXPECT_FALSE(c.dirty());
}

TEST(TableCache, EvictsLeastRecentlyUsedHalfAfterWritingBack) {
    FakeDisk d;
    TableCache<Table> c(4, d.io());
    for (uint64_t off : {1, 2, 3, 4}) ASSERT_TRUE(c.get(off));
    ASSERT_TRUE(c.get(1));  // 1 is now the most recent; 2 and 3 the oldest
    auto t4 = *c.get(4);
    t4->push_back(7);
    c.mark_dirty(4);
    d.log.clear();
    ASSERT_TRUE(c.get(5));
    EXPECT_EQ(d.log, (std::vector<std::string>{"before", "store 4", "load 5"}));
    EXPECT_EQ(c.size(), 3u);
    d.log.clear();
    ASSERT_TRUE(c.get(1));
    ASSERT_TRUE(c.get(4));
    EXPECT_TRUE(d.log.empty());
    ASSERT_TRUE(c.get(2));
    EXPECT_EQ(d.log, (std::vector<std::string>{"load 2"}));
    EXPECT_EQ(d.tables[4], (Table{7}));
}

TEST(TableCache, ErrorsPropagateAndLeaveNothingHalfDone) {
    FakeDisk d;
    TableCache<Table> c(2, d.io());
    d.fail_load = true;
    auto r = c.get(1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_EQ(c.size(), 0u);
    d.fail_load = false;

    c.put_new(1, std::make_shared<Table>(Table{5}));
    c.mark_dirty(1);
    ASSERT_TRUE(c.get(2));
    d.fail_before = true;
    auto w = c.get(3);  // full: must write back first, which fails
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().code, ENOSPC);
    EXPECT_TRUE(c.dirty());
    EXPECT_EQ(d.tables.count(1), 0u);
    d.fail_before = false;
    ASSERT_TRUE(c.write_back());
    EXPECT_EQ(d.tables[1], (Table{5}));
}

TEST(TableCache, DropAndClearForgetWithoutWritingAndCapacityHasAFloor) {
    FakeDisk d;
    TableCache<Table> c(0, d.io());
    EXPECT_EQ(c.capacity(), 2u);
    c.put_new(8, std::make_shared<Table>(Table{1}));
    c.mark_dirty(8);
    c.drop(8);
    EXPECT_FALSE(c.dirty());
    c.put_new(7, std::make_shared<Table>(Table{2}));
    c.mark_dirty(7);
    c.clear();
    EXPECT_EQ(c.size(), 0u);
    EXPECT_FALSE(c.dirty());
    ASSERT_TRUE(c.write_table(9, Table{4}));
    EXPECT_EQ(d.tables[9], (Table{4}));
    EXPECT_EQ(d.log, (std::vector<std::string>{"store 9"}));
}

}  // namespace
}  // namespace qimg
