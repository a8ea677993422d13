// Throttle groups (see group.h).
#include "filter/throttle/group.h"

#include <chrono>
#include <map>

namespace qimg::throttle {
namespace {

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Registry {
    std::mutex mu;
    std::map<std::string, std::shared_ptr<Group>, std::less<>> groups;
};

Registry &registry() {
    static Registry r;
    return r;
}

}  // namespace

Group::Group(const Config &cfg) {
    state_.cfg = cfg;
    state_.previous_leak_ns = now_ns();
}

void Group::intercept(bool is_write, uint64_t bytes) {
    const int dir = is_write ? 1 : 0;
    std::unique_lock lock(mu_);
    const uint64_t ticket = next_ticket_[dir]++;
    cv_.wait(lock, [&] { return serving_[dir] == ticket; });
    for (;;) {
        const int64_t wait = state_.wait_ns(is_write, now_ns());
        if (wait <= 0) break;
        cv_.wait_for(lock, std::chrono::nanoseconds(wait));
    }
    state_.account(is_write, bytes);
    ++serving_[dir];
    cv_.notify_all();
}

Result<void> add_group(const std::string &name, const Config &cfg) {
    Registry &r = registry();
    std::lock_guard lock(r.mu);
    if (r.groups.count(name)) return make_error(EINVAL, "A group with this name already exists");
    r.groups.emplace(name, std::make_shared<Group>(cfg));
    return ok();
}

std::shared_ptr<Group> find_group(std::string_view name) {
    Registry &r = registry();
    std::lock_guard lock(r.mu);
    auto it = r.groups.find(name);
    return it == r.groups.end() ? nullptr : it->second;
}

}  // namespace qimg::throttle
