// Throttle groups: the `--object throttle-group` objects by id, each one
// leaky-bucket State (limits.h) shared by every throttle node that names it.
//
// Concurrency: a group's state is guarded by its mutex. Requests of one
// direction (reads, writes) start in arrival order: a thread takes a
// ticket and sleeps until its ticket is served and the buckets allow it
// (QEMU queues its coroutines the same way and wakes them from a timer).
// The registry has its own mutex.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "filter/throttle/limits.h"

namespace qimg::throttle {

class Group {
public:
    explicit Group(const Config &cfg);
    // Waits until a request of `bytes` may start, then counts it.
    void intercept(bool is_write, uint64_t bytes);

private:
    std::mutex mu_;
    std::condition_variable cv_;
    State state_;
    uint64_t next_ticket_[2] = {0, 0};
    uint64_t serving_[2] = {0, 0};
};

// throttle_group_obj_complete(): the group becomes visible to drivers.
Result<void> add_group(const std::string &name, const Config &cfg);
// nullptr when no group has this name.
std::shared_ptr<Group> find_group(std::string_view name);

}  // namespace qimg::throttle
