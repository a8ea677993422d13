// blkdebug: QEMU's error-injection filter (docs/devel/blkdebug.txt), driven
// through qemu-img by QEMU's tests and users' scripts:
//   blkdebug:CONFIG:IMAGE  (CONFIG may be empty: blkdebug::IMAGE)
//   json:{"driver":"blkdebug","image":{...},"config":...,"align":N,
//         "max-transfer":N,"inject-error.0.event":...,"set-state.0.event":...}
// Rules (rules.h) are armed by debug events: the ones the formats above
// announce (BlockNode::debug_event: read_aio, l2_update, ...), flush_to_os
// and flush_to_disk on a flush, and "none" once at open; an armed rule fails
// the requests it covers with its errno. `align` and the max-* options are
// limits the node declares; block/limits.h pads and splits requests to
// them before the rules see them, as QEMU's block layer does.
//
// Concurrency: the rule engine has its own mutex; read-modify-write of
// unaligned writes takes rmw_mutex_; the write generations are atomic; the
// rest is immutable after open.
#include <atomic>
#include <cstdio>
#include <cstring>

#include "block/driver.h"
#include "block/filter.h"
#include "block/limits.h"
#include "block/open.h"
#include "filter/blkdebug/rules.h"
#include "util/keyval.h"

namespace qimg {
namespace {

using blkdebug::Engine;
using blkdebug::IoType;

class BlkdebugNode final : public FilterNode {
public:
    BlkdebugNode(NodePtr image, std::vector<blkdebug::Rule> rules, IoLimits lim, CacheMode cache)
        : FilterNode(std::move(image), "image"), rules_(std::move(rules)), lim_(lim), no_flush_(cache.no_flush),
          writethrough_(cache.writethrough) {}

    std::string_view driver_name() const override { return "blkdebug"; }
    // QEMU's blkdebug is a filter: map, commit and the backing chain look
    // through it to the image below.
    BlockNode *filtered_child() const override { return file_.get(); }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (lim_.trivial()) return checked_read(off, buf, len);
        return limited_read(lim_, off, buf, len, reader());
    }
    // With cache=writethrough every write is followed by a flush that the
    // rules see (QEMU's FUA emulation), so a flush rule fails the write.
    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        if (lim_.trivial()) QIMG_TRY(checked_write(off, buf, len));
        else QIMG_TRY(limited_write(lim_, off, buf, len, reader(), writer(), rmw_mutex_));
        return writethrough_ ? flush() : ok();
    }
    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        auto zero = [this, flags](uint64_t o, uint64_t n) -> Result<void> {
            QIMG_TRY(rule_check(o, n, IoType::WriteZeroes));
            ++write_gen_;
            return FilterNode::write_zeroes(o, n, flags);
        };
        if (lim_.trivial() && !lim_.max_write_zeroes) QIMG_TRY(zero(off, len));
        else QIMG_TRY(limited_write_zeroes(lim_, off, len, reader(), writer(), zero, rmw_mutex_));
        return writethrough_ ? flush() : ok();
    }
    Result<void> discard(uint64_t off, uint64_t len) override {
        return limited_discard(lim_, off, len, [this](uint64_t o, uint64_t n) -> Result<void> {
            QIMG_TRY(rule_check(o, n, IoType::Discard));
            ++write_gen_;
            return FilterNode::discard(o, n);
        });
    }
    // A flush as QEMU 7.2 shows it to qemu-img: flush_to_os is announced
    // first; with cache=unsafe no flush request follows; else, when
    // something was written since the last flush, the flush is checked
    // against the armed rules, and only then is flush_to_disk announced (a
    // rule on flush_to_os fails this flush, one on flush_to_disk the
    // requests after it).
    Result<void> flush() override {
        const uint64_t gen = write_gen_.load();
        const bool to_disk = !no_flush_ && gen != flushed_gen_.load();
        rules_.event(BlkdebugEvent::FlushToOs);
        if (to_disk) {
            QIMG_TRY(rule_check(0, 0, IoType::Flush));
            rules_.event(BlkdebugEvent::FlushToDisk);
        }
        QIMG_TRY(FilterNode::flush());
        flushed_gen_.store(gen);
        return ok();
    }
    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        QIMG_TRY(rule_check(off, len, IoType::BlockStatus));
        return FilterNode::block_status(off, len);
    }
    uint32_t request_alignment() const override {
        return std::max<uint32_t>(uint32_t(lim_.align), FilterNode::request_alignment());
    }
    // Writes must pass the rules: no offloading around them.
    Result<void> copy_range_from(uint64_t, BlockNode &, uint64_t, uint64_t) override {
        return make_error(ENOTSUP, "Copy offloading is not supported");
    }
    Result<void> copy_range_to(BlockNode &, uint64_t, uint64_t, uint64_t) override {
        return make_error(ENOTSUP, "Copy offloading is not supported");
    }
    // QEMU names blkdebug a protocol, which has no allocated size of its
    // own ("disk size: unavailable").
    Result<uint64_t> allocated_size() override { return make_error(ENOTSUP, "allocated size unknown"); }
    nlohmann::ordered_json specific_info() const override { return nullptr; }

    // QEMU's bdrv_check_perm: a node whose size is not a multiple of its
    // alignment cannot be written without being allowed to resize it (the
    // padded last write would grow it).
    Result<void> set_perm(Perms p) override {
        if ((p.perm & kPermWrite) && !(p.perm & kPermResize) && length() % lim_.align != 0)
            return make_error(EPERM, "Cannot get 'write' permission without 'resize': Image size is not a "
                                     "multiple of request alignment");
        return FilterNode::set_perm(p);
    }

    // Events stop here (QEMU's bdrv_debug_event goes down to the first node
    // with a handler).
    void debug_event(BlkdebugEvent e) override { rules_.event(e); }

private:
    Result<void> rule_check(uint64_t off, uint64_t len, IoType type) {
        if (int err = rules_.check(off, len, type)) return make_error(err, std::strerror(err));
        return ok();
    }
    Result<void> checked_read(uint64_t off, void *buf, size_t len) {
        QIMG_TRY(rule_check(off, len, IoType::Read));
        return FilterNode::read(off, buf, len);
    }
    Result<void> checked_write(uint64_t off, const void *buf, size_t len) {
        QIMG_TRY(rule_check(off, len, IoType::Write));
        ++write_gen_;
        return FilterNode::write(off, buf, len);
    }
    LimitedRead reader() {
        return [this](uint64_t o, void *b, size_t n) { return checked_read(o, b, n); };
    }
    LimitedWrite writer() {
        return [this](uint64_t o, const void *b, size_t n) { return checked_write(o, b, n); };
    }

    Engine rules_;
    IoLimits lim_;
    bool no_flush_, writethrough_;
    std::mutex rmw_mutex_;
    // Writes counted since open and at the last flush (QEMU's write_gen
    // and flushed_gen): a flush with nothing new to flush is no request.
    std::atomic<uint64_t> write_gen_{0}, flushed_gen_{0};
};

// QEMU's blkdebug_parse_filename: "blkdebug:CONFIG:IMAGE".
Result<void> parse_filename(OptionMap &o) {
    auto it = o.find("filename");
    if (it == o.end()) return ok();
    std::string f = it->second;
    o.erase(it);
    if (f.empty()) return ok();  // opened by options only
    if (f.rfind("blkdebug:", 0) != 0) return make_error(EINVAL, "File name string must start with 'blkdebug:'");
    f.erase(0, 9);
    size_t colon = f.find(':');
    if (colon == std::string::npos) return make_error(EINVAL, "blkdebug requires both config file and image path");
    if (colon > 0) o["config"] = f.substr(0, colon);
    o["x-image"] = f.substr(colon + 1);
    return ok();
}

Result<std::string> read_file(const std::string &path) {
    FILE *f = std::fopen(path.c_str(), "r");
    if (!f) return errno_error(errno, "Could not read blkdebug config file");
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    bool bad = std::ferror(f);
    std::fclose(f);
    if (bad) return make_error(EIO, "Cannot read config file");
    return text;
}

Result<std::vector<blkdebug::Rule>> read_rules(const std::string *config, OptionMap &o) {
    std::vector<blkdebug::Section> sections;
    if (config) {
        QIMG_ASSIGN(std::string text, read_file(*config));
        QIMG_ASSIGN(sections, blkdebug::parse_config(text));
    }
    QIMG_ASSIGN(auto from_options, blkdebug::sections_from_options(o));
    sections.insert(sections.end(), from_options.begin(), from_options.end());
    return blkdebug::make_rules(sections);
}

// A size option: 0 when absent.
Result<uint64_t> take_size(OptionMap &o, const char *key) {
    auto it = o.find(key);
    if (it == o.end()) return uint64_t{0};
    QIMG_ASSIGN(uint64_t v, parse_size_opt(key, it->second));
    o.erase(it);
    return v;
}

// QEMU's checks of the limits, in its order and words.
Result<void> check_limit(uint64_t v, uint64_t align, const char *name) {
    if (v && (v >= INT32_MAX || v % align != 0))
        return make_error(EINVAL, "Cannot meet constraints with " + std::string(name) + " " + std::to_string(v));
    return ok();
}

Result<NodePtr> blkdebug_open(OpenRequest &req) {
    OptionMap &o = req.options;
    QIMG_TRY(parse_filename(o));
    IoLimits lim;
    uint64_t align = 0, opt_write_zero = 0, opt_discard = 0;
    QIMG_ASSIGN(align, take_size(o, "align"));
    QIMG_ASSIGN(lim.max_transfer, take_size(o, "max-transfer"));
    QIMG_ASSIGN(opt_write_zero, take_size(o, "opt-write-zero"));
    QIMG_ASSIGN(lim.max_write_zeroes, take_size(o, "max-write-zero"));
    QIMG_ASSIGN(opt_discard, take_size(o, "opt-discard"));
    QIMG_ASSIGN(lim.max_discard, take_size(o, "max-discard"));
    std::optional<std::string> config;
    if (auto it = o.find("config"); it != o.end()) {
        config = it->second;
        o.erase(it);
    }
    QIMG_ASSIGN(auto rules, read_rules(config ? &*config : nullptr, o));

    // The image: a filename (from "blkdebug:CONFIG:IMAGE" or x-image) or
    // "image.*" options; a plain "image" string would be a node name.
    std::string image_name;
    if (auto it = o.find("x-image"); it != o.end()) {
        image_name = it->second;
        o.erase(it);
    }
    if (auto it = o.find("image"); it != o.end())
        return make_error(EINVAL, "Cannot find device='" + it->second + "' nor node-name='" + it->second + "'");
    OptionMap image_opts = extract_prefix(o, "image");
    if (image_name.empty() && image_opts.empty())
        return make_error(EINVAL, "A block device must be specified for \"image\"");
    QIMG_ASSIGN(NodePtr image, req.opener->open_filtered(image_name, image_opts, req.flags));

    if (align && (align >= INT32_MAX || (align & (align - 1)) != 0))
        return make_error(EINVAL, "Cannot meet constraints with align " + std::to_string(align));
    const uint64_t eff = std::max<uint64_t>({align, image->request_alignment(), 1});
    QIMG_TRY(check_limit(lim.max_transfer, eff, "max-transfer"));
    QIMG_TRY(check_limit(opt_write_zero, eff, "opt-write-zero"));
    QIMG_TRY(check_limit(lim.max_write_zeroes, std::max(opt_write_zero, eff), "max-write-zero"));
    QIMG_TRY(check_limit(opt_discard, eff, "opt-discard"));
    QIMG_TRY(check_limit(lim.max_discard, std::max(opt_discard, eff), "max-discard"));
    lim.align = std::max<uint64_t>(align, 1);

    auto node = std::make_shared<BlkdebugNode>(std::move(image), std::move(rules), lim, req.flags.cache);
    // Named by a string ("blkdebug:CONFIG:IMAGE"), the node keeps it.
    if (!req.filename.empty()) node->set_filename(req.filename);
    node->debug_event(BlkdebugEvent::None);  // rules on "none" are armed from the start
    return NodePtr(node);
}

const Driver *make_blkdebug_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "blkdebug";
        // QEMU registers it as a protocol ("blkdebug:" names, its messages).
        d.is_protocol = true;
        d.parses_filename = true;  // QEMU's bdrv_parse_filename
        d.protocol_prefixes = {"blkdebug"};
        d.open = blkdebug_open;
        // QEMU's blkdebug strong_runtime_opts and
        // blkdebug_refresh_filename: "blkdebug:CONFIG:IMAGE" while nothing
        // but a config file names what it does.
        d.strong_options = {"config",         "inject-error.", "set-state.",  "align",      "max-transfer",
                            "opt-write-zero", "max-write-zero", "opt-discard", "max-discard"};
        d.refresh_filename = [](const nlohmann::ordered_json &full, const std::string &image) {
            if (image.empty()) return std::string();
            for (auto it = full.begin(); it != full.end(); ++it)
                if (it.key() != "config" && it.key() != "image" && it.key() != "x-image" && it.key() != "driver")
                    return std::string();
            // A config given as a number in json: ({"config": 42}) is named as written.
            std::string config;
            if (auto it = full.find("config"); it != full.end())
                config = it->is_string() ? it->get<std::string>() : it->dump();
            return "blkdebug:" + config + ":" + image;
        };
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_blkdebug_driver);

}  // namespace qimg
