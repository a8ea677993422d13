// The NBD connection (nbd_conn.h): socket, handshake and the asynchronous
// request loop over libnbd.
#include "protocol/nbd/nbd_conn.h"

#include <libnbd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>

namespace qimg::nbd {
namespace {

constexpr uint32_t kMaxBuffer = 32u << 20;  // NBD_MAX_BUFFER_SIZE

Result<int> connect_unix(const ServerAddress &a) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    const size_t room = sizeof(un.sun_path) - (a.abstract ? 1 : 0);
    if (a.path.size() > room) {
        Error e = make_error(EINVAL, "UNIX socket path '" + a.path + "' is too long");
        e.message += "\nPath must be less than " + std::to_string(room + 1) + " bytes";
        return Err(e);
    }
    socklen_t len = sizeof(un);
    if (a.abstract) {
        std::memcpy(un.sun_path + 1, a.path.data(), a.path.size());
        if (a.tight) len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + a.path.size());
    } else {
        std::memcpy(un.sun_path, a.path.data(), a.path.size());
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error(errno, "Failed to create socket");
    int r;
    do r = ::connect(fd, reinterpret_cast<sockaddr *>(&un), len);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        ::close(fd);
        return errno_error(e, "Failed to connect to '" + a.path + "'");
    }
    return fd;
}

Result<int> connect_inet(const ServerAddress &a) {
    addrinfo hints{};
    hints.ai_flags = AI_CANONNAME | AI_ADDRCONFIG;
    hints.ai_family = AF_UNSPEC;
    if (a.ipv4_set && a.ipv4 && !(a.ipv6_set && a.ipv6)) hints.ai_family = AF_INET;
    if (a.ipv6_set && a.ipv6 && !(a.ipv4_set && a.ipv4)) hints.ai_family = AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *res = nullptr;
    int rc = ::getaddrinfo(a.host.c_str(), a.port.c_str(), &hints, &res);
    if (rc != 0)
        return make_error(EINVAL, "address resolution failed for " + a.host + ":" + a.port + ": " + gai_strerror(rc));
    int err = ECONNREFUSED;
    int fd = -1;
    for (addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int r;
        do r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
        while (r < 0 && errno == EINTR);
        if (r == 0) break;
        err = errno;
        ::close(fd);
        fd = -1;
    }
    ::freeaddrinfo(res);
    if (fd < 0) return errno_error(err, "Failed to connect to '" + a.host + ":" + a.port + "'");
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

Result<int> connect_socket(const ServerAddress &a) {
    return a.type == ServerAddress::Type::Unix ? connect_unix(a) : connect_inet(a);
}

// The server's own words about a refused option, which libnbd only logs
// ("handshake: server error message: ..."); QEMU prints them.
int capture_server_message(void *user_data, const char *, const char *msg) {
    constexpr std::string_view kPrefix = "server error message: ";
    std::string_view m(msg);
    if (size_t p = m.find(kPrefix); p != std::string_view::npos)
        *static_cast<std::string *>(user_data) = std::string(m.substr(p + kPrefix.size()));
    return 0;
}

}  // namespace

// One request: its completion, written by libnbd's callbacks (from the I/O
// thread) under the connection's mutex, and its block-status answer.
struct Connection::Op {
    Connection *conn = nullptr;
    bool done = false;
    int error = 0;
    bool have_extent = false;
    Extent extent;
};

// libnbd's callbacks get a heap copy of the op's shared_ptr, which libnbd
// frees when it is done with the request (also one it refused to issue).
using OpRef = std::shared_ptr<Connection::Op>;

int Connection::on_complete(void *user_data, int *error) {
    Op &op = **static_cast<OpRef *>(user_data);
    std::lock_guard lock(op.conn->mu_);
    op.done = true;
    op.error = *error;
    op.conn->cv_.notify_all();
    return 1;  // retire the command
}

void Connection::on_free(void *user_data) { delete static_cast<OpRef *>(user_data); }

int Connection::on_extent(void *user_data, const char *context, uint64_t, uint32_t *entries, size_t n, int *) {
    Op &op = **static_cast<OpRef *>(user_data);
    std::lock_guard lock(op.conn->mu_);
    if (!op.have_extent && n >= 2 && op.conn->context_ == context) {
        op.extent = Extent{entries[0], entries[1]};
        op.have_extent = true;
    }
    return 0;
}

Result<std::unique_ptr<Connection>> Connection::open(const Config &c, const TlsCreds *tls) {
    std::unique_ptr<Connection> conn(new Connection());
    if (tls && tls->kind == TlsCreds::Kind::Anon)
        return make_error(ENOTSUP, "NBD over TLS with anonymous credentials (tls-creds-anon) is not supported by qimg");
    const bool inet = c.server.type == ServerAddress::Type::Inet;
    const bool check_host = tls && tls->kind == TlsCreds::Kind::X509 && tls->verify_peer;
    // The name the certificate must carry: QEMU's tls-hostname, else the
    // host connected to (none over a unix socket). libnbd can only check
    // the host it connects to itself.
    std::optional<std::string> cert_host = c.tls_hostname;
    if (!cert_host && inet) cert_host = c.server.host;
    if (check_host && cert_host && (!inet || *cert_host != c.server.host))
        return make_error(ENOTSUP, "tls-hostname other than the server's host is not supported by qimg");
    const bool libnbd_connects = check_host && inet;

    // open-timeout: keep trying to connect for that many seconds.
    Result<int> fd = -1;
    if (!libnbd_connects) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(c.open_timeout);
        fd = connect_socket(c.server);
        while (!fd && c.open_timeout && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            fd = connect_socket(c.server);
        }
        if (!fd) return Err(fd.error());
        // QEMU's TLS handshake: an x509 peer is checked against a name.
        if (check_host && !cert_host) {
            ::close(*fd);
            return make_error(EINVAL, "No hostname for certificate validation");
        }
    }

    nbd_handle *h = nbd_create();
    if (!h) {
        if (*fd >= 0) ::close(*fd);
        return make_error(ENOMEM, nbd_get_error() ? nbd_get_error() : "Could not create an NBD handle");
    }
    conn->h_ = h;
    if (tls) {
        nbd_set_tls(h, LIBNBD_TLS_REQUIRE);
        if (tls->kind == TlsCreds::Kind::X509) {
            nbd_set_tls_certificates(h, tls->dir.c_str());
            nbd_set_tls_verify_peer(h, tls->verify_peer);
        } else {
            nbd_set_tls_psk_file(h, (tls->dir + "/keys.psk").c_str());
            nbd_set_tls_username(h, tls->username.c_str());
        }
    }
    conn->context_ = c.x_dirty_bitmap.value_or(LIBNBD_CONTEXT_BASE_ALLOCATION);
    std::string server_message;
    nbd_set_export_name(h, c.export_name.value_or("").c_str());
    nbd_add_meta_context(h, conn->context_.c_str());
    // Requests past the end go to the server as QEMU sends them (a write
    // into the tail of an odd-sized export's last sector), which answers
    // for its export; the other checks stay.
    nbd_set_strict_mode(h, nbd_get_strict_mode(h) & ~LIBNBD_STRICT_BOUNDS);
    nbd_set_debug_callback(h, nbd_debug_callback{capture_server_message, &server_message, nullptr});
    nbd_set_debug(h, true);
    int r = libnbd_connects ? nbd_connect_tcp(h, c.server.host.c_str(), c.server.port.c_str())
                            : nbd_connect_socket(h, *fd);  // libnbd owns the socket from here
    nbd_set_debug(h, false);
    nbd_clear_debug_callback(h);  // it points at server_message
    if (r < 0) {
        int e = nbd_get_errno();
        std::string libnbd_msg = nbd_get_error() ? nbd_get_error() : "NBD handshake failed";
        if (libnbd_connects && nbd_aio_is_created(h) == 1 && e)
            return errno_error(e, "Failed to connect to '" + c.server.host + ":" + c.server.port + "'");
        // A server that insists on TLS, asked without it.
        if (!tls && libnbd_msg.find("server requires TLS") != std::string::npos) {
            std::string m = "TLS negotiation required before option 7 (go)\nDid you forget a valid tls-creds?";
            if (!server_message.empty()) m += "\nserver reported: " + server_message;
            return make_error(EINVAL, m);
        }
        if (e == ENOENT) {
            std::string m = "Requested export not available";
            if (!server_message.empty()) m += "\nserver reported: " + server_message;
            return make_error(EINVAL, m);
        }
        return make_error(e ? e : EIO, libnbd_msg);
    }

    ExportInfo &i = conn->info_;
    int64_t size = nbd_get_size(h);
    if (size < 0) return make_error(EIO, nbd_get_error() ? nbd_get_error() : "NBD server sent no size");
    i.size = static_cast<uint64_t>(size);
    // Block sizes: a hostile or odd server gets QEMU's bounds (a power of
    // two up to 64 KiB; a maximum that is a multiple of it, at most 32 MiB).
    int64_t min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    int64_t max_block = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    if (min_block > 0) {
        if ((min_block & (min_block - 1)) != 0 || min_block > 65536)
            return make_error(EINVAL, "server minimum block size " + std::to_string(min_block) + " is not valid");
        i.min_block = static_cast<uint32_t>(min_block);
    }
    // QEMU's client refuses such an export too: its last block could be
    // neither read nor written whole.
    if (i.size % i.min_block != 0)
        return make_error(EINVAL, "export size " + std::to_string(i.size) + " is not multiple of minimum block size " +
                                      std::to_string(i.min_block));
    i.max_block = kMaxBuffer;
    if (max_block > 0 && static_cast<uint64_t>(max_block) < kMaxBuffer) i.max_block = static_cast<uint32_t>(max_block);
    i.max_block = std::max(i.min_block, i.max_block / i.min_block * i.min_block);
    i.read_only = nbd_is_read_only(h) == 1;
    i.can_flush = nbd_can_flush(h) == 1;
    i.can_fua = nbd_can_fua(h) == 1;
    i.can_trim = nbd_can_trim(h) == 1;
    i.can_zero = nbd_can_zero(h) == 1;
    i.can_fast_zero = nbd_can_fast_zero(h) == 1;
    i.has_status = nbd_can_meta_context(h, conn->context_.c_str()) == 1;
    // QEMU insists on the context the user asked for (its message is lost
    // on the way: "Could not open image: Invalid argument").
    if (c.x_dirty_bitmap && !i.has_status) return make_error(EINVAL, "Could not open image: Invalid argument");

    conn->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (conn->wake_fd_ < 0) return errno_error(errno, "eventfd");
    conn->io_ = std::thread([c = conn.get()] { c->io_loop(); });
    return conn;
}

Connection::~Connection() {
    if (io_.joinable()) {
        stop_ = true;
        wake();
        io_.join();
    }
    if (h_) {
        // NBD_CMD_DISC, so that the server sees a clean end; not waited
        // for (nbd_shutdown would wait for a server that may never close).
        if (nbd_aio_is_ready(h_) == 1) (void)nbd_aio_disconnect(h_, 0);
        nbd_close(h_);
    }
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Connection::wake() {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
}

// Drives the socket: waits for what libnbd wants (reading replies, or
// writing what a request could not send at once) and for wake-ups after a
// new request, until the connection dies or is closed.
void Connection::io_loop() {
    while (!stop_) {
        int fd = nbd_aio_get_fd(h_);
        if (fd < 0 || nbd_aio_is_dead(h_) == 1 || nbd_aio_is_closed(h_) == 1) break;
        unsigned dir = nbd_aio_get_direction(h_);
        pollfd fds[2] = {{fd, 0, 0}, {wake_fd_, POLLIN, 0}};
        if (dir & LIBNBD_AIO_DIRECTION_READ) fds[0].events |= POLLIN;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE) fds[0].events |= POLLOUT;
        int r = ::poll(fds, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents & POLLIN) {
            uint64_t n;
            (void)!::read(wake_fd_, &n, sizeof n);
        }
        int rc = 0;
        if (fds[0].revents & (POLLIN | POLLHUP)) rc = nbd_aio_notify_read(h_);
        else if (fds[0].revents & POLLOUT) rc = nbd_aio_notify_write(h_);
        else if (fds[0].revents & (POLLERR | POLLNVAL)) rc = -1;
        if (rc < 0) break;
    }
    std::lock_guard lock(mu_);
    dead_ = true;
    cv_.notify_all();
}

namespace {

// A lost connection fails requests with EIO, as QEMU's client reports
// them (libnbd says ENOTCONN or ESHUTDOWN).
int request_errno(int e) { return e == ENOTCONN || e == ESHUTDOWN || e == 0 ? EIO : e; }

}  // namespace

Result<void> Connection::wait(const std::shared_ptr<Op> &op, int64_t cookie, const char *what) {
    if (cookie < 0) {
        int e = request_errno(nbd_get_errno());
        return make_error(e, std::string(what) + ": " + (nbd_get_error() ? nbd_get_error() : "failed"));
    }
    wake();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return op->done || dead_; });
    if (!op->done) return make_error(EIO, std::string(what) + ": the NBD connection was lost");
    if (op->error) return errno_error(request_errno(op->error), what);
    return ok();
}

std::shared_ptr<Connection::Op> Connection::new_op() {
    auto op = std::make_shared<Op>();
    op->conn = this;
    return op;
}

nbd_completion_callback Connection::completion(const std::shared_ptr<Op> &op) {
    return nbd_completion_callback{on_complete, new OpRef(op), on_free};
}

Result<void> Connection::pread(void *buf, uint64_t len, uint64_t off) {
    auto op = new_op();
    return wait(op, nbd_aio_pread(h_, buf, len, off, completion(op), 0), "Could not read image");
}

Result<void> Connection::pwrite(const void *buf, uint64_t len, uint64_t off, uint32_t flags) {
    auto op = new_op();
    return wait(op, nbd_aio_pwrite(h_, buf, len, off, completion(op), flags), "Could not write to image");
}

Result<void> Connection::zero(uint64_t len, uint64_t off, uint32_t flags) {
    auto op = new_op();
    return wait(op, nbd_aio_zero(h_, len, off, completion(op), flags), "Could not write zeroes");
}

Result<void> Connection::trim(uint64_t len, uint64_t off) {
    auto op = new_op();
    return wait(op, nbd_aio_trim(h_, len, off, completion(op), 0), "Could not discard");
}

Result<void> Connection::flush() {
    auto op = new_op();
    return wait(op, nbd_aio_flush(h_, completion(op), 0), "Failed to flush");
}

Result<Extent> Connection::block_status(uint64_t len, uint64_t off) {
    auto op = new_op();
    // Each closure holds its own reference, freed by libnbd.
    nbd_extent_callback ext{on_extent, new OpRef(op), on_free};
    QIMG_TRY(wait(op, nbd_aio_block_status(h_, len, off, ext, completion(op), LIBNBD_CMD_FLAG_REQ_ONE),
                  "Could not read block status"));
    std::lock_guard lock(mu_);
    if (!op->have_extent) return make_error(EIO, "server did not reply with any status extents");
    return op->extent;
}

}  // namespace qimg::nbd
