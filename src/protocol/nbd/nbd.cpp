// The `nbd` protocol driver: an export of a Network Block Device server
// (the NBD protocol, https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md)
// through libnbd, with QEMU 7.2's names (nbd_name.h), its limits, and its
// reading of block status: base:allocation, or the context named by
// x-dirty-bitmap (qemu:dirty-bitmap:NAME, qemu:allocation-depth) read as if
// it were base:allocation (bit 0 "hole", bit 1 "zero"), as QEMU's client
// does.
//
// Concurrency: the connection (nbd_conn.h) is shared by every thread and
// keeps all their requests in flight at once; the node's own state is
// immutable after open, except unaligned writes (read-modify-write of the
// server's minimum blocks), which take rmw_mutex_.
#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

#include "block/create.h"
#include "block/driver.h"
#include "block/limits.h"
#include "protocol/nbd/nbd_conn.h"
#include "protocol/nbd/nbd_name.h"

namespace qimg {
namespace {

using nbd::Connection;

// NBD's base:allocation flags.
constexpr uint32_t kNbdStateHole = 1u << 0;
constexpr uint32_t kNbdStateZero = 1u << 1;

uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }

class NbdNode final : public BlockNode {
public:
    NbdNode(std::unique_ptr<Connection> conn, CacheMode cache) : conn_(std::move(conn)), cache_(cache) {
        const nbd::ExportInfo &i = conn_->info();
        size_ = i.size;
        lim_.align = i.min_block;
        lim_.max_transfer = i.max_block;
        lim_.max_write_zeroes = i.max_block;
        lim_.max_discard = align_down(INT32_MAX, i.min_block);
    }

    std::string_view driver_name() const override { return "nbd"; }
    // QEMU counts in 512-byte sectors: an export of an odd size reads as
    // zeroes up to the next sector.
    uint64_t length() const override { return size_ > UINT64_MAX - 511 ? size_ : (size_ + 511) / 512 * 512; }
    uint32_t request_alignment() const override { return static_cast<uint32_t>(lim_.align); }
    bool unallocated_reads_zero() const override { return false; }
    bool has_driver_info() const override { return false; }
    Result<uint64_t> allocated_size() override { return make_error(ENOTSUP, "disk size unavailable"); }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        auto *p = static_cast<uint8_t *>(buf);
        size_t n = off >= size_ ? 0 : static_cast<size_t>(std::min<uint64_t>(len, size_ - off));
        std::memset(p + n, 0, len - n);
        if (n == 0) return ok();
        return limited_read(lim_, off, p, n, [this](uint64_t o, void *b, size_t l) { return server_read(o, b, l); });
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(check_writable());
        // Not clipped to the export: like QEMU's client, a write into the
        // tail of the last sector goes to the server, which refuses it.
        if (len == 0) return ok();
        QIMG_TRY(limited_write(lim_, off, buf, len, reader(), writer(), rmw_mutex_));
        return finish_write();
    }

    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        QIMG_TRY(check_writable());
        const nbd::ExportInfo &i = conn_->info();
        const uint64_t n = len;
        if (n == 0) return ok();
        const bool no_fallback = flags & kZeroNoFallback;
        if (no_fallback && !(i.can_zero && i.can_fast_zero))
            return make_error(ENOTSUP, "write_zeroes: Operation not supported");
        if (!i.can_zero) {
            // No NBD_CMD_WRITE_ZEROES: written zero buffers, as QEMU's
            // block layer falls back to.
            std::vector<uint8_t> zero(static_cast<size_t>(std::min<uint64_t>({n, lim_.max_transfer, 1u << 20})));
            for (uint64_t done = 0; done < n;) {
                size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, zero.size()));
                QIMG_TRY(limited_write(lim_, off + done, zero.data(), k, reader(), writer(), rmw_mutex_));
                done += k;
            }
            return finish_write();
        }
        uint32_t nbd_flags = 0;
        if (!(flags & kZeroMayUnmap)) nbd_flags |= LIBNBD_CMD_FLAG_NO_HOLE;
        if (no_fallback) nbd_flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
        QIMG_TRY(limited_write_zeroes(lim_, off, n, reader(), writer(),
                                      [this, nbd_flags](uint64_t o, uint64_t l) { return conn_->zero(l, o, nbd_flags); },
                                      rmw_mutex_));
        return finish_write();
    }

    Result<void> discard(uint64_t off, uint64_t len) override {
        QIMG_TRY(check_writable());
        if (!conn_->info().can_trim || off >= size_) return ok();  // advisory
        uint64_t n = std::min<uint64_t>(len, size_ - off);
        return limited_discard(lim_, off, n, [this](uint64_t o, uint64_t l) { return conn_->trim(l, o); });
    }

    Result<void> flush() override {
        if (cache_.no_flush || !conn_->info().can_flush) return ok();
        return conn_->flush();
    }

    // QEMU's nbd_co_truncate: an export has the size its server gives.
    Result<void> truncate(uint64_t new_size, Prealloc, bool exact) override {
        if (new_size != size_ && exact) return make_error(ENOTSUP, "Cannot resize NBD nodes");
        if (new_size > size_) return make_error(EINVAL, "Cannot grow NBD nodes");
        return ok();
    }

    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        BlockStatus s;
        s.host_node = this;
        s.host_offset = off;
        if (off >= size_) {  // the tail of the last sector: zeroes, stored nowhere
            s.flags = kStatusZero;
            s.bytes = std::min<uint64_t>(len, length() - std::min(off, length()));
            return s;
        }
        s.flags = kStatusOffsetValid;
        len = std::min<uint64_t>(len, size_ - off);
        s.bytes = len;
        const uint64_t align = lim_.align;
        const uint64_t start = align_down(off, align);
        uint64_t end = std::min<uint64_t>(off + len, align_down(INT32_MAX, align) + start);
        end = (end + align - 1) / align * align;
        if (!conn_->info().has_status || end > size_) {
            // No status to ask for (or, defensively, no aligned request
            // that stays inside the export).
            s.flags |= kStatusData;
            return s;
        }
        const uint64_t asked = end - start;
        QIMG_ASSIGN(nbd::Extent e, conn_->block_status(asked, start));
        // A hostile server's extent is checked like QEMU's client does.
        if (e.length == 0) return make_error(EIO, "Protocol error: server sent status chunk with zero length");
        uint64_t got = std::min<uint64_t>(e.length, asked);
        if (got % align != 0 && got < asked) {
            if (got > align) {
                got = align_down(got, align);
            } else {
                got = align;  // less than one block: call it data
                e.flags = 0;
            }
        }
        if (start + got <= off) return make_error(EIO, "Protocol error: server sent an invalid status extent");
        s.bytes = std::min<uint64_t>(start + got - off, len);
        if (!(e.flags & kNbdStateHole)) s.flags |= kStatusData;
        if (e.flags & kNbdStateZero) s.flags |= kStatusZero;
        // Neither data nor zeroes (a dirty range of a dirty bitmap read as
        // status): unallocated, and qemu-img map shows no offset for it.
        if (!(s.flags & (kStatusData | kStatusZero))) s.flags &= ~kStatusOffsetValid;
        return s;
    }

private:
    Result<void> check_writable() const {
        if (read_only_) return make_error(EROFS, "Cannot write to a read-only NBD export");
        return ok();
    }

    // One aligned request of at most max_block bytes; what lies past the
    // export's end (the rest of its last sector) reads as zeroes.
    Result<void> server_read(uint64_t off, void *buf, size_t len) {
        size_t n = off >= size_ ? 0 : static_cast<size_t>(std::min<uint64_t>(len, size_ - off));
        std::memset(static_cast<uint8_t *>(buf) + n, 0, len - n);
        return n ? conn_->pread(buf, n, off) : ok();
    }
    LimitedRead reader() {
        return [this](uint64_t o, void *b, size_t l) { return server_read(o, b, l); };
    }
    LimitedWrite writer() {
        return [this](uint64_t o, const void *b, size_t l) {
            uint32_t flags = cache_.writethrough && conn_->info().can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
            return conn_->pwrite(b, l, o, flags);
        };
    }
    Result<void> finish_write() {
        if (cache_.writethrough && !conn_->info().can_fua) return flush();
        return ok();
    }

    std::unique_ptr<Connection> conn_;
    CacheMode cache_;
    uint64_t size_ = 0;
    IoLimits lim_;
    std::mutex rmw_mutex_;
};

// QEMU's nbd_get_tls_creds(): client credentials by id; the store of
// --object ids tells an unknown id from another kind of object.
Result<nbd::TlsCreds> tls_creds(const std::string &id, const SecretStore &secrets) {
    if (auto c = nbd::find_tls_creds(id)) {
        if (!c->client) return make_error(EINVAL, "Expected TLS credentials for a client endpoint");
        return *c;
    }
    auto s = secrets.lookup(id);
    if (!s && s.error().message.starts_with("No secret with id"))
        return make_error(EINVAL, "No TLS credentials with id '" + id + "'");
    return make_error(EINVAL, "Object with id '" + id + "' is not TLS credentials");
}

Result<NodePtr> nbd_open(OpenRequest &req) {
    OptionMap &o = req.options;
    // A name given as a string (QEMU's nbd_parse_filename).
    if (auto f = o.find("filename"); f != o.end()) {
        std::string name = f->second;
        o.erase(f);
        if (!name.empty()) QIMG_TRY(nbd::parse_filename(name, o));
    }
    QIMG_ASSIGN(nbd::Config c, nbd::take_config(o));
    std::optional<nbd::TlsCreds> tls;
    if (c.tls_creds) {
        QIMG_ASSIGN(tls, tls_creds(*c.tls_creds, *req.secrets));
    }
    QIMG_ASSIGN(std::unique_ptr<Connection> conn, Connection::open(c, tls ? &*tls : nullptr));
    // QEMU's bdrv_apply_auto_read_only, whose message is lost on the way.
    if (conn->info().read_only && req.flags.read_write)
        return make_error(EACCES, "Could not open image: Permission denied");
    auto node = std::make_shared<NbdNode>(std::move(conn), req.flags.cache);
    std::string name = nbd::canonical_name(c.server, c.export_name);
    node->set_filename(name.empty() ? req.filename : name);
    node->set_read_only(!req.flags.read_write);
    return NodePtr(node);
}

// The options of a node as QEMU's bdrv_refresh_filename collects them, as
// strings (a json: port may be a number).
std::string nbd_refresh_filename(const nlohmann::ordered_json &full) {
    OptionMap opts;
    for (auto it = full.begin(); it != full.end(); ++it) {
        if (it.key() == "driver") continue;
        opts[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
    }
    return nbd::canonical_name_of(std::move(opts));
}

const Driver *make_nbd_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "nbd";
        d.is_protocol = true;
        d.parses_filename = true;  // QEMU's bdrv_parse_filename
        d.protocol_prefixes = {"nbd", "nbd+tcp", "nbd+unix"};
        // Export names are not paths: no directory for relative names.
        d.no_dirname_reason = "Cannot generate a base directory for NBD nodes";
        d.open = nbd_open;
        // An export exists already: "creating" one opens it (QEMU's
        // bdrv_co_create_opts_simple).
        d.create = [](CreateRequest &req) { return create_by_opening(*find_driver("nbd"), req); };
        d.create_options = create_by_opening_options();
        // QEMU's nbd strong_runtime_opts ("server." is a prefix there, its
        // keys taken in the order of QEMU's option dictionary: the order
        // here gives its json: names, e.g. server.host before server.port).
        d.strong_options = {"path",        "host",          "port",        "export",     "tls-creds",
                            "server.type", "server.port",   "server.host", "server.path", "server.numeric",
                            "server.to",   "server.ipv4",   "server.ipv6", "server.keep-alive",
                            "server.mptcp", "server.abstract", "server.tight"};
        d.refresh_filename = [](const nlohmann::ordered_json &full, const std::string &) {
            return nbd_refresh_filename(full);
        };
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_nbd_driver);

}  // namespace qimg
