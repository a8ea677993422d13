// throttle: QEMU's I/O throttling filter (block/throttle.c in QEMU's tree,
// docs/throttle.txt), over one child "file", with the limits of the
// `--object throttle-group` its "throttle-group" option names:
//   --object throttle-group,id=tg0,x-bps-total=1000000
//   --image-opts driver=throttle,throttle-group=tg0,file.driver=qcow2,file.file.filename=a.qcow2
// Every read, write, zero write and discard waits in the group's leaky
// buckets (limits.h, group.h) before it passes on; flushes and metadata
// do not.
//
// Concurrency: the node itself is immutable after open; its group guards
// the buckets with its own mutex (group.h), so any number of the copy
// engine's threads may call at once.
#include <fmt/format.h>

#include "block/driver.h"
#include "block/filter.h"
#include "block/object_types.h"
#include "block/open.h"
#include "filter/throttle/group.h"
#include "filter/throttle/limits.h"

namespace qimg {
namespace {

using throttle::Group;

class ThrottleNode final : public QemuFilterNode {
public:
    ThrottleNode(NodePtr child, std::shared_ptr<Group> group)
        : QemuFilterNode(std::move(child)), group_(std::move(group)) {}

    std::string_view driver_name() const override { return "throttle"; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        group_->intercept(false, len);
        return FilterNode::read(off, buf, len);
    }
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        group_->intercept(true, len);
        return FilterNode::write(off, buf, len);
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        group_->intercept(true, len);
        return FilterNode::write_zeroes(off, len, flags);
    }
    Result<void> discard(uint64_t off, uint64_t len) override {
        group_->intercept(true, len);
        return FilterNode::discard(off, len);
    }
    Result<void> write_compressed(uint64_t off, const void *buf, size_t len) override {
        group_->intercept(true, len);
        return FilterNode::write_compressed(off, buf, len);
    }
    Result<void> write_compressed_data(uint64_t off, std::span<const uint8_t> data, const void *raw,
                                       size_t len) override {
        group_->intercept(true, len);
        return FilterNode::write_compressed_data(off, data, raw, len);
    }

private:
    std::shared_ptr<Group> group_;
};

// throttle_open(): the child first (the opener, req.file), then the group.
Result<NodePtr> throttle_open(OpenRequest &req) {
    auto it = req.options.find("throttle-group");
    if (it == req.options.end()) return make_error(EINVAL, "Please specify a throttle group");
    std::shared_ptr<Group> group = throttle::find_group(it->second);
    if (!group) return make_error(EINVAL, fmt::format("Throttle group '{}' does not exist", it->second));
    req.options.erase(it);
    return NodePtr(std::make_shared<ThrottleNode>(req.file, std::move(group)));
}

const Driver *make_throttle_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "throttle";
        d.is_filter = true;
        d.open = throttle_open;
        d.strong_options = {"throttle-group"};
        d.file_child_perms = [](const OptionMap &, Perms parent, const OpenFlags &f) {
            return child_perms(kRoleFiltered, parent, f.read_write, f.no_io);
        };
        return d;
    }();
    return &d;
}

// `--object throttle-group,...`: properties, then the id, then the checks
// of the whole (QEMU's throttle_group_obj_complete).
const ObjectType *make_throttle_group_type() {
    static ObjectType t{"throttle-group", [](const ObjectSpec &spec, const std::function<Result<void>()> &add_id) -> Result<void> {
                            QIMG_ASSIGN(throttle::Config cfg, throttle::config_from_properties(spec.props));
                            QIMG_TRY(add_id());
                            QIMG_TRY(throttle::validate(cfg));
                            return throttle::add_group(spec.id, cfg);
                        }};
    return &t;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_throttle_driver);
static ObjectTypeRegistrar g_throttle_group_type{make_throttle_group_type()};

}  // namespace qimg
