// The `rbd` protocol driver: a Ceph RADOS block device image through
// librados/librbd's C API, with QEMU 7.2's names and options (rbd_name.h),
// messages, and its reading of allocation (fast-diff's rbd_diff_iterate2,
// whole objects: a missing object reads as zeroes, everything else as data).
// An image named with "@snapshot" is that snapshot, read-only. Images are
// created with rbd_create (`qemu-img create`, convert's target), LUKS
// encrypted by librbd with encrypt.* (and read with them); the
// image's own snapshots are listed, made, applied and removed through it
// (`qemu-img snapshot`, through raw as QEMU's snapshot fallback does).
//
// Concurrency: librbd's image handle takes concurrent requests from any
// thread. The node's only mutable state is the image size, which writes
// past the end grow (as QEMU does before such a write) and truncate sets;
// size_mutex_ orders those resizes, size_ is read atomically.
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>

#include "block/driver.h"
#include "protocol/rbd/rbd_name.h"
#include "util/progname.h"
#include "util/shared_library.h"

namespace qimg {
namespace {

using rbd::Location;

// librados and librbd are loaded when an rbd image is first named
// (util/shared_library.h says why): every call goes through this table,
// typed from the libraries' own headers.
#define QIMG_RBD_FUNCTIONS(X) \
    X(rados_conf_read_file) \
    X(rados_conf_set) \
    X(rados_connect) \
    X(rados_create) \
    X(rados_ioctx_create) \
    X(rados_ioctx_destroy) \
    X(rados_ioctx_set_namespace) \
    X(rados_shutdown) \
    X(rbd_close) \
    X(rbd_create) \
    X(rbd_diff_iterate2) \
    X(rbd_discard) \
    X(rbd_encryption_format) \
    X(rbd_encryption_load) \
    X(rbd_flush) \
    X(rbd_get_features) \
    X(rbd_get_flags) \
    X(rbd_get_parent_info) \
    X(rbd_get_size) \
    X(rbd_namespace_exists) \
    X(rbd_open) \
    X(rbd_read) \
    X(rbd_remove) \
    X(rbd_resize) \
    X(rbd_snap_create) \
    X(rbd_snap_list) \
    X(rbd_snap_list_end) \
    X(rbd_snap_remove) \
    X(rbd_snap_rollback) \
    X(rbd_stat) \
    X(rbd_write) \
    X(rbd_write_zeroes)

// rbd_get_parent_info is deprecated (block_status uses it as QEMU does).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
struct RbdLibrary {
#define QIMG_RBD_MEMBER(f) decltype(&::f) f = nullptr;
    QIMG_RBD_FUNCTIONS(QIMG_RBD_MEMBER)
#undef QIMG_RBD_MEMBER
};
#pragma GCC diagnostic pop
RbdLibrary lib;

// Binds `lib` once per process; every later call answers as the first.
// librbd names librados, so one dlopen brings both.
Result<void> load_rbd_library() {
    static const Result<void> loaded = []() -> Result<void> {
        static constexpr const char *kSoname = "librbd.so.1";
        QIMG_ASSIGN(void *h, open_shared_library(kSoname));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#define QIMG_RBD_BIND(f) QIMG_TRY(bind_symbol(h, kSoname, #f, lib.f));
        QIMG_RBD_FUNCTIONS(QIMG_RBD_BIND)
#pragma GCC diagnostic pop
#undef QIMG_RBD_BIND
        return ok();
    }();
    return loaded;
}

// Returned by the diff callback to stop the iteration early (QEMU's choice
// of a value librbd never returns itself).
constexpr int kStopDiff = -9000;

std::string base64(std::string_view in) {
    static const char kTab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        uint32_t v = uint8_t(in[i]) << 16 | uint8_t(in[i + 1]) << 8 | uint8_t(in[i + 2]);
        for (int s : {18, 12, 6, 0}) out += kTab[(v >> s) & 63];
    }
    if (i + 1 == in.size()) {
        uint32_t v = uint8_t(in[i]) << 16;
        out += kTab[(v >> 18) & 63];
        out += kTab[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        uint32_t v = uint8_t(in[i]) << 16 | uint8_t(in[i + 1]) << 8;
        out += kTab[(v >> 18) & 63];
        out += kTab[(v >> 12) & 63];
        out += kTab[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

// A cluster connection and an I/O context on the image's pool (and
// namespace); closed in reverse order.
struct Connection {
    rados_t cluster = nullptr;
    rados_ioctx_t ioctx = nullptr;
    Connection() = default;
    Connection(const Connection &) = delete;
    Connection &operator=(const Connection &) = delete;
    ~Connection() {
        if (ioctx) lib.rados_ioctx_destroy(ioctx);
        if (cluster) lib.rados_shutdown(cluster);
    }
};

// QEMU's qemu_rbd_set_auth.
Result<void> set_auth(rados_t cluster, const Location &loc, const SecretStore &secrets) {
    if (loc.key_secret) {
        QIMG_ASSIGN(std::string key, secrets.lookup(*loc.key_secret));
        if (int r = lib.rados_conf_set(cluster, "key", base64(key).c_str()); r < 0)
            return Err(errno_error(-r, "Could not set 'key'"));
    }
    if (loc.auth_client_required) {
        std::string acr;
        for (const std::string &m : *loc.auth_client_required) acr += (acr.empty() ? "" : ";") + m;
        if (int r = lib.rados_conf_set(cluster, "auth_client_required", acr.c_str()); r < 0)
            return Err(errno_error(-r, "Could not set 'auth_client_required'"));
    }
    return ok();
}

// QEMU's qemu_rbd_connect: configuration in its order (conf file, the
// name's key=value pairs, servers, authentication, cache), then the pool
// and namespace.
Result<void> connect(Connection &c, Location &loc, bool cache, const SecretStore &secrets) {
    QIMG_TRY(load_rbd_library());
    if (loc.password_secret) {
        if (loc.key_secret) return make_error(EINVAL, "Legacy 'password-secret' clashes with 'key-secret'");
        loc.key_secret = loc.password_secret;
    }
    const std::string mon = rbd::mon_host(loc.server);
    if (int r = lib.rados_create(&c.cluster, loc.user ? loc.user->c_str() : nullptr); r < 0) {
        c.cluster = nullptr;
        return Err(errno_error(-r, "error initializing"));
    }
    // The default locations when no conf is named, failing silently there.
    int r = lib.rados_conf_read_file(c.cluster, loc.conf ? loc.conf->c_str() : nullptr);
    if (loc.conf && r < 0) return Err(errno_error(-r, "error reading conf file " + *loc.conf));
    for (const auto &[key, value] : loc.keypairs) {
        if (r = lib.rados_conf_set(c.cluster, key.c_str(), value.c_str()); r < 0)
            return Err(errno_error(-r, "invalid conf option " + key));
    }
    if (!mon.empty()) {
        // QEMU fails here without a message of its own.
        if (r = lib.rados_conf_set(c.cluster, "mon_host", mon.c_str()); r < 0) return Err(errno_error(-r, "mon_host"));
    }
    QIMG_TRY(set_auth(c.cluster, loc, secrets));
    lib.rados_conf_set(c.cluster, "rbd_cache", cache ? "true" : "false");
    if (r = lib.rados_connect(c.cluster); r < 0) return Err(errno_error(-r, "error connecting"));
    if (r = lib.rados_ioctx_create(c.cluster, loc.pool.c_str(), &c.ioctx); r < 0) {
        c.ioctx = nullptr;
        return Err(errno_error(-r, "error opening pool " + loc.pool));
    }
    if (loc.ns && !loc.ns->empty()) {
        bool exists = false;
        if (r = lib.rbd_namespace_exists(c.ioctx, loc.ns->c_str(), &exists); r < 0)
            return Err(errno_error(-r, "error checking namespace"));
        if (!exists) return make_error(ENOENT, "namespace '" + *loc.ns + "' does not exist");
    }
    lib.rados_ioctx_set_namespace(c.ioctx, loc.ns ? loc.ns->c_str() : nullptr);
    return ok();
}

class RbdNode final : public BlockNode {
public:
    RbdNode(std::unique_ptr<Connection> conn, rbd_image_t image, uint64_t size, uint64_t object_size,
            bool snapshot, CacheMode cache)
        : conn_(std::move(conn)), image_(image), size_(size), object_size_(object_size), snapshot_(snapshot),
          cache_(cache) {}
    ~RbdNode() override { lib.rbd_close(image_); }

    std::string_view driver_name() const override { return "rbd"; }
    uint64_t length() const override { return size_.load(); }
    bool has_zero_init() const override { return true; }  // bdrv_has_zero_init_1
    // QEMU's rbd has no bdrv_get_allocated_file_size: "disk size: unavailable".
    Result<uint64_t> allocated_size() override { return make_error(ENOTSUP, "disk size unavailable"); }
    // qemu_rbd_getinfo: the object size.
    uint32_t cluster_size() const override {
        return object_size_ > UINT32_MAX ? 0 : static_cast<uint32_t>(object_size_);
    }

    // qemu_rbd_get_specific_info: the image's encryption format, told by a
    // LUKS header at its start.
    nlohmann::ordered_json specific_info() const override {
        static const char kLuks1[8] = {'L', 'U', 'K', 'S', '\xba', '\xbe', 0, 1};
        static const char kLuks2[8] = {'L', 'U', 'K', 'S', '\xba', '\xbe', 0, 2};
        nlohmann::ordered_json data = nlohmann::ordered_json::object();
        char head[8] = {};
        if (size_.load() >= sizeof head && lib.rbd_read(image_, 0, sizeof head, head) == sizeof head) {
            if (std::memcmp(head, kLuks1, sizeof head) == 0) data["encryption-format"] = "luks";
            if (std::memcmp(head, kLuks2, sizeof head) == 0) data["encryption-format"] = "luks2";
        }
        return {{"type", "rbd"}, {"data", std::move(data)}};
    }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        auto *p = static_cast<uint8_t *>(buf);
        const uint64_t size = size_.load();
        size_t n = off >= size ? 0 : static_cast<size_t>(std::min<uint64_t>(len, size - off));
        std::memset(p + n, 0, len - n);
        for (size_t done = 0; done < n;) {
            size_t k = std::min<size_t>(n - done, kMaxRequest);
            ssize_t r = lib.rbd_read(image_, off + done, k, reinterpret_cast<char *>(p + done));
            if (r < 0) return Err(errno_error(static_cast<int>(-r), "rbd read failed"));
            // A short read: zeroes, as QEMU pads it.
            if (static_cast<size_t>(r) < k) std::memset(p + done + r, 0, k - r);
            done += k;
        }
        return ok();
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(check_writable());
        if (len == 0) return ok();
        QIMG_TRY(grow_for(off, len));
        auto *p = static_cast<const char *>(buf);
        for (size_t done = 0; done < len;) {
            size_t k = std::min<size_t>(len - done, kMaxRequest);
            ssize_t r = lib.rbd_write(image_, off + done, k, p + done);
            if (r < 0) return Err(errno_error(static_cast<int>(-r), "rbd write failed"));
            done += k;
        }
        return finish_write();
    }

    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        QIMG_TRY(check_writable());
        if (len == 0) return ok();
        QIMG_TRY(grow_for(off, len));
        // Without MAY_UNMAP the zeroes are written out (thick), as QEMU asks.
        int zero_flags = (flags & kZeroMayUnmap) ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
        for (uint64_t done = 0; done < len;) {
            uint64_t k = std::min<uint64_t>(len - done, kMaxRequest);
            ssize_t r = lib.rbd_write_zeroes(image_, off + done, k, zero_flags, 0);
            if (r < 0) return Err(errno_error(static_cast<int>(-r), "rbd write_zeroes failed"));
            done += k;
        }
        return finish_write();
    }

    Result<void> discard(uint64_t off, uint64_t len) override {
        QIMG_TRY(check_writable());
        const uint64_t size = size_.load();
        if (off >= size || len == 0) return ok();
        len = std::min<uint64_t>(len, size - off);
        for (uint64_t done = 0; done < len;) {
            uint64_t k = std::min<uint64_t>(len - done, kMaxRequest);
            if (int r = lib.rbd_discard(image_, off + done, k); r < 0) return Err(errno_error(-r, "rbd discard failed"));
            done += k;
        }
        return ok();
    }

    Result<void> flush() override {
        if (cache_.no_flush) return ok();
        if (int r = lib.rbd_flush(image_); r < 0) return Err(errno_error(-r, "rbd flush failed"));
        return ok();
    }

    // qemu_rbd_co_truncate.
    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool) override {
        if (prealloc != Prealloc::Off)
            return make_error(ENOTSUP, "Unsupported preallocation mode '" + std::string(prealloc_name(prealloc)) + "'");
        std::lock_guard lock(size_mutex_);
        if (int r = lib.rbd_resize(image_, new_size); r < 0) return Err(errno_error(-r, "Failed to resize file"));
        size_ = new_size;
        return ok();
    }

    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override;

    Result<std::vector<SnapshotInfo>> snapshot_list() override;
    Result<void> snapshot_create(const SnapshotInfo &sn) override;
    Result<void> snapshot_goto(const std::string &name) override {
        if (int r = lib.rbd_snap_rollback(image_, name.c_str()); r < 0) return Err(Error{-r, std::strerror(-r)});
        return ok();
    }
    Result<void> snapshot_delete(const std::string &id, const std::string &name) override {
        if (!id.empty() && id != name)
            return make_error(EINVAL, "rbd do not support snapshot id, it should be NULL or equal to snapshot name");
        if (int r = lib.rbd_snap_remove(image_, name.c_str()); r < 0)
            return Err(errno_error(-r, "Failed to remove the snapshot"));
        return ok();
    }

private:
    // librbd takes any length; requests are cut so that the signed byte
    // counts it returns cannot overflow.
    static constexpr size_t kMaxRequest = size_t{1} << 30;

    Result<void> check_writable() const {
        if (snapshot_) return make_error(EROFS, "rbd snapshots are read-only");
        return ok();
    }

    // librbd refuses writes past the end: the image grows first, as in
    // QEMU's qemu_rbd_start_co.
    Result<void> grow_for(uint64_t off, uint64_t len) {
        if (off + len <= size_.load()) return ok();
        std::lock_guard lock(size_mutex_);
        if (off + len <= size_.load()) return ok();
        if (int r = lib.rbd_resize(image_, off + len); r < 0) return Err(errno_error(-r, "rbd resize failed"));
        size_ = off + len;
        return ok();
    }

    Result<void> finish_write() { return cache_.writethrough ? flush() : ok(); }

    std::unique_ptr<Connection> conn_;
    rbd_image_t image_;
    std::atomic<uint64_t> size_;
    uint64_t object_size_;
    bool snapshot_;
    CacheMode cache_;
    std::mutex size_mutex_;
};

// QEMU's qemu_rbd_diff_iterate_cb: the length of the run of allocated (or
// of unallocated) objects that starts at the queried offset.
struct DiffRun {
    uint64_t offs = 0, bytes = 0;
    bool exists = false;
};

int diff_callback(uint64_t offs, size_t len, int exists, void *opaque) {
    auto *run = static_cast<DiffRun *>(opaque);
    if (!exists) return 0;  // a hole is an unallocated area
    if (!run->exists && offs > run->offs) {
        run->bytes = offs - run->offs;  // the unallocated area ends here
        return kStopDiff;
    }
    if (run->exists && offs > run->offs + run->bytes) return kStopDiff;  // an unallocated area follows
    run->bytes += len;
    run->exists = true;
    return 0;
}

// qemu_rbd_co_block_status: data unless fast-diff (valid) says that the
// objects are missing, then zeroes; never unallocated.
Result<BlockStatus> RbdNode::block_status(uint64_t off, uint64_t len) {
    BlockStatus s;
    s.host_node = this;
    s.host_offset = off;
    const uint64_t size = size_.load();
    len = off >= size ? 0 : std::min<uint64_t>(len, size - off);
    s.bytes = len;
    s.flags = kStatusData | kStatusOffsetValid;
    if (len == 0) return s;
    uint64_t features = 0, flags = 0;
    if (lib.rbd_get_features(image_, &features) < 0 || !(features & RBD_FEATURE_FAST_DIFF)) return s;
    if (lib.rbd_get_flags(image_, &flags) < 0 || (flags & RBD_FLAG_FAST_DIFF_INVALID)) return s;
    DiffRun run;
    run.offs = off;
    uint64_t bytes = len, head = 0;
#if LIBRBD_VERSION_CODE < LIBRBD_VERSION(1, 17, 0)
    // librbd before 1.17 reports wrong offsets for a diff that does not
    // start on an object boundary (https://tracker.ceph.com/issues/53784):
    // QEMU starts at the object's start, which holds only for images with
    // default striping and no parent, and answers data for the others.
    if (features & RBD_FEATURE_STRIPINGV2) return s;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    if (lib.rbd_get_parent_info(image_, nullptr, 0, nullptr, 0, nullptr, 0) != -ENOENT) return s;
#pragma GCC diagnostic pop
    if (object_size_ == 0 || (object_size_ & (object_size_ - 1))) return s;
    head = run.offs & (object_size_ - 1);
    run.offs -= head;
    bytes += head;
#endif
    int r = lib.rbd_diff_iterate2(image_, nullptr, run.offs, bytes, 1, 1, diff_callback, &run);
    if (r < 0 && r != kStopDiff) return s;
    if (!run.exists) {
        if (r == 0) run.bytes = bytes;  // no callback at all: nothing allocated
        s.flags = kStatusZero | kStatusOffsetValid;
    }
    run.bytes = std::min(run.bytes, bytes);
    if (run.bytes <= head) {  // librbd answered outside the range: assume data
        s.flags = kStatusData | kStatusOffsetValid;
        return s;
    }
    s.bytes = run.bytes - head;
    return s;
}

// qemu_rbd_snap_list: a snapshot's id is its name, its "VM size" the
// image's size then; no dates.
Result<std::vector<SnapshotInfo>> RbdNode::snapshot_list() {
    std::vector<rbd_snap_info_t> snaps(16);
    int max = static_cast<int>(snaps.size());
    int n;
    while ((n = lib.rbd_snap_list(image_, snaps.data(), &max)) == -ERANGE) snaps.resize(static_cast<size_t>(max));
    std::vector<SnapshotInfo> out;
    if (n <= 0) return out;
    for (int i = 0; i < n; ++i) {
        SnapshotInfo sn;
        sn.id = std::string(snaps[i].name).substr(0, 127);  // QEMUSnapshotInfo.id_str is char[128]
        sn.name = std::string(snaps[i].name).substr(0, 255);
        sn.vm_state_size = snaps[i].size;
        sn.icount = 0;  // QEMU leaves it zeroed
        out.push_back(std::move(sn));
    }
    lib.rbd_snap_list_end(snaps.data());
    return out;
}

// qemu_rbd_snap_create: the name is the snapshot's identity.
Result<void> RbdNode::snapshot_create(const SnapshotInfo &sn) {
    if (sn.name.empty()) return make_error(EINVAL, std::strerror(EINVAL));
    if (!sn.id.empty() && sn.id != sn.name) return make_error(EINVAL, std::strerror(EINVAL));
    if (sn.name.size() >= 128) return make_error(ERANGE, std::strerror(ERANGE));
    if (int r = lib.rbd_snap_create(image_, sn.name.c_str()); r < 0) {
        report_error(std::string("failed to create snap: ") + std::strerror(-r));  // QEMU's error_report
        return make_error(-r, std::strerror(-r));
    }
    return ok();
}

// librbd's LUKS formats (QEMU's qemu_rbd_encryption_load/format).
rbd_encryption_format_t luks_format(const std::string &format) {
    return format == "luks2" ? RBD_ENCRYPTION_FORMAT_LUKS2 : RBD_ENCRYPTION_FORMAT_LUKS1;
}

// Both LUKS option structs have the same members.
static_assert(sizeof(rbd_encryption_luks1_format_options_t) == sizeof(rbd_encryption_luks2_format_options_t));

Result<void> load_encryption(rbd_image_t image, const Location &loc, const SecretStore &secrets) {
    QIMG_ASSIGN(std::string passphrase, secrets.lookup(loc.encrypt_key_secret));
    rbd_encryption_luks1_format_options_t o{};
    o.passphrase = passphrase.data();
    o.passphrase_size = passphrase.size();
    if (int r = lib.rbd_encryption_load(image, luks_format(*loc.encrypt_format), &o, sizeof o); r < 0)
        return Err(errno_error(-r, "encryption load fail"));
    return ok();
}

// Formats a new image and grows it by what the header takes, so that its
// effective size is the one asked for.
Result<void> format_encryption(rbd_image_t image, const rbd::EncryptCreate &e, const SecretStore &secrets) {
    uint64_t raw_size = 0, effective_size = 0;
    if (int r = lib.rbd_get_size(image, &raw_size); r < 0) return Err(errno_error(-r, "cannot get raw image size"));
    QIMG_ASSIGN(std::string passphrase, secrets.lookup(e.key_secret));
    rbd_encryption_luks1_format_options_t o{};
    switch (e.cipher_alg) {
    case -1:
    case 2: o.alg = RBD_ENCRYPTION_ALGORITHM_AES256; break;  // the default, aes-256
    case 0: o.alg = RBD_ENCRYPTION_ALGORITHM_AES128; break;
    default:
        return Err(errno_error(ENOTSUP, "unknown encryption algorithm: " + std::to_string(e.cipher_alg)));
    }
    o.passphrase = passphrase.data();
    o.passphrase_size = passphrase.size();
    if (int r = lib.rbd_encryption_format(image, luks_format(e.format), &o, sizeof o); r < 0)
        return Err(errno_error(-r, "encryption format fail"));
    if (int r = lib.rbd_get_size(image, &effective_size); r < 0)
        return Err(errno_error(-r, "cannot get effective image size"));
    if (int r = lib.rbd_resize(image, raw_size + (raw_size - effective_size)); r < 0)
        return Err(errno_error(-r, "cannot resize image after format"));
    return ok();
}

// The options of an open request as QEMU's rbd driver reads them: a name
// given as a string is parsed strictly; a "filename" option (json:,
// --image-opts) is QEMU's legacy form, parsed over the other options with
// its warning.
Result<Location> take_request_location(OptionMap &o, bool name_is_string) {
    rbd::KeyPairs keypairs;
    auto f = o.find("filename");
    if (f != o.end() && f->second.empty()) {
        o.erase(f);  // the opener's placeholder, not a name
        f = o.end();
    }
    if (f != o.end()) {
        std::string name = f->second;
        o.erase(f);
        if (name_is_string) {
            QIMG_TRY(rbd::parse_filename(name, o, keypairs));
        } else {
            OptionMap first = o;
            first["filename"] = name;
            auto modern = rbd::take_location(first);
            if (modern) return modern;  // cannot happen: "filename" is unexpected there
            report_warning("RBD options encoded in the filename as keyvalue pairs is deprecated");
            OptionMap legacy = o;
            (void)rbd::parse_filename(name, legacy, keypairs);  // best effort, as QEMU
            auto r = rbd::take_location(legacy);
            if (!r) return Err(modern.error());
            o.clear();
            r->keypairs = std::move(keypairs);
            return r;
        }
    }
    QIMG_ASSIGN(Location loc, rbd::take_location(o));
    loc.keypairs = std::move(keypairs);
    return loc;
}

Result<NodePtr> open_rbd(OpenRequest &req) {
    OptionMap &o = req.options;
    const bool string_name = req.name_is_string && o.count("filename") && !o["filename"].empty();
    // QEMU names a node opened from a legacy "filename" option by it.
    const bool legacy_name = !string_name && o.count("filename") && !o["filename"].empty();
    const std::string given_name = o.count("filename") ? o["filename"] : std::string();
    QIMG_ASSIGN(Location loc, take_request_location(o, string_name));
    o.clear();  // all taken (QEMU's visitor accepts nothing else)
    auto conn = std::make_unique<Connection>();
    QIMG_TRY(connect(*conn, loc, !req.flags.cache.direct, *req.secrets));
    rbd_image_t image = nullptr;
    // Always opened read-write, as QEMU does.
    if (int r = lib.rbd_open(conn->ioctx, loc.image.c_str(), &image, loc.snapshot ? loc.snapshot->c_str() : nullptr);
        r < 0)
        return Err(errno_error(-r, "error reading header from " + loc.image));
    if (loc.encrypt_format) {
        if (auto r = load_encryption(image, loc, *req.secrets); !r) {
            lib.rbd_close(image);
            return Err(r.error());
        }
    }
    rbd_image_info_t info;
    if (int r = lib.rbd_stat(image, &info, sizeof info); r < 0) {
        lib.rbd_close(image);
        return Err(errno_error(-r, "error getting image info from " + loc.image));
    }
    // QEMU's bdrv_apply_auto_read_only (qemu-img never asks auto-read-only).
    if (loc.snapshot && req.flags.read_write) {
        lib.rbd_close(image);
        return make_error(EACCES, "rbd snapshots are read-only");
    }
    auto node = std::make_shared<RbdNode>(std::move(conn), image, info.size, info.obj_size, loc.snapshot.has_value(),
                                          req.flags.cache);
    // A name given as a string shows as the options it stands for.
    node->set_filename(string_name ? rbd::string_name(given_name) : legacy_name ? given_name : req.filename);
    node->set_read_only(!req.flags.read_write);
    return NodePtr(node);
}

// qemu_rbd_co_create_opts: the name gives the location, cluster_size the
// object size, encrypt.* a LUKS format.
Result<void> create_rbd(CreateRequest &req) {
    OptionMap o;
    rbd::KeyPairs keypairs;
    QIMG_TRY(rbd::parse_filename(req.filename, o, keypairs));
    QIMG_ASSIGN(std::optional<rbd::EncryptCreate> encrypt, rbd::encrypt_create_options(req.options));
    const uint64_t size = (req.size + 511) / 512 * 512;
    Location loc;
    loc.pool = o["pool"];
    loc.image = o["image"];
    // QEMU's create_opts never passes the snapshot on (its "Can't use
    // snapshot name for image creation" is for blockdev-create): the image
    // of "rbd:pool/img@snap" is created.
    if (auto it = o.find("namespace"); it != o.end()) loc.ns = it->second;
    if (auto it = o.find("conf"); it != o.end()) loc.conf = it->second;
    if (auto it = o.find("user"); it != o.end()) loc.user = it->second;
    if (req.has("password-secret")) loc.password_secret = req.get("password-secret");
    loc.keypairs = std::move(keypairs);
    int order = 0;
    if (req.has("cluster_size")) {
        uint64_t objsize = std::strtoull(req.get("cluster_size").c_str(), nullptr, 10);
        if (objsize != 0) {
            if ((objsize - 1) & objsize) return make_error(EINVAL, "obj size needs to be power of 2");
            if (objsize < 4096) return make_error(EINVAL, "obj size too small");
            order = __builtin_ctzll(objsize);
        }
    }
    Connection c;
    QIMG_TRY(connect(c, loc, false, *req.secrets));
    if (int r = lib.rbd_create(c.ioctx, loc.image.c_str(), size, &order); r < 0)
        return Err(errno_error(-r, "error rbd create"));
    if (encrypt) {
        rbd_image_t image = nullptr;
        if (int r = lib.rbd_open(c.ioctx, loc.image.c_str(), &image, nullptr); r < 0)
            return Err(errno_error(-r, "error opening image '" + loc.image + "' for encryption format"));
        auto formatted = format_encryption(image, *encrypt, *req.secrets);
        lib.rbd_close(image);
        if (!formatted) {
            lib.rbd_remove(c.ioctx, loc.image.c_str());  // as QEMU: no half-made image
            return formatted;
        }
    }
    return ok();
}

// A node opened from json:/--image-opts options is named by a legacy
// "filename" option when there is one (QEMU keeps it as the node's exact
// name, whatever else is given), else by its options (QEMU's strong
// options); one opened from a string shows its parsed options (set by
// open_rbd).
std::string rbd_refresh_filename(const nlohmann::ordered_json &full) {
    auto f = full.find("filename");
    return f != full.end() && f->is_string() ? f->get<std::string>() : std::string();
}

const Driver *make_rbd_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "rbd";
        d.is_protocol = true;
        d.protocol_prefixes = {"rbd"};
        // No no_dirname_reason: a name given as a string combines with a
        // relative one as a path (QEMU's path_combine: "rbd:pool/base"
        // beside "rbd:pool/top"), while an opened node, named json:, has no
        // directory (the generic "Cannot generate a base directory for rbd
        // nodes").
        d.open = open_rbd;
        d.create = create_rbd;
        // QEMU's qemu_rbd_create_opts, in its order.
        d.create_options = {
            {"size", CreateOption::Type::Size, "Virtual disk size", ""},
            {"cluster_size", CreateOption::Type::Size, "RBD object size", ""},
            {"password-secret", CreateOption::Type::String, "ID of secret providing the password", ""},
            {"encrypt.format", CreateOption::Type::String, "Encrypt the image, format choices: 'luks', 'luks2'", ""},
            {"encrypt.cipher-alg", CreateOption::Type::String,
             "Name of encryption cipher algorithm (allowed values: aes-128, aes-256)", ""},
            {"encrypt.key-secret", CreateOption::Type::String, "ID of secret providing LUKS passphrase", ""},
        };
        d.strong_options = {"pool", "namespace", "image", "conf", "snapshot", "user", "server.", "password-secret"};
        d.refresh_filename = [](const nlohmann::ordered_json &full, const std::string &) {
            return rbd_refresh_filename(full);
        };
        d.supports_snapshots = true;
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_rbd_driver);

}  // namespace qimg
