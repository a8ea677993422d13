// One NBD connection through libnbd: the socket connected as QEMU connects
// it (so that its errors read the same), the handshake, and requests that
// any number of threads issue at once. libnbd's synchronous calls hold the
// handle's lock until their reply arrives, which would serialise the copy
// engine's workers; here each request is issued with libnbd's asynchronous
// API and its caller waits for its completion, while one thread of the
// connection drives the socket (poll, nbd_aio_notify_*). So the requests
// of all workers are in flight together on the one connection, as QEMU's
// coroutines keep them (qemu-nbd serves one client unless -e says more).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <libnbd.h>

#include "protocol/nbd/nbd_name.h"
#include "protocol/nbd/tls_creds.h"
#include "util/result.h"

namespace qimg::nbd {

// What the server said about its export during the handshake.
struct ExportInfo {
    uint64_t size = 0;
    uint32_t min_block = 1, max_block = 32u << 20;
    bool read_only = false;
    bool can_flush = false, can_fua = false, can_trim = false, can_zero = false, can_fast_zero = false;
    bool has_status = false;  // the meta context block status answers in
};

// One extent of a block-status reply, in the context's own flags.
struct Extent {
    uint64_t length = 0;
    uint32_t flags = 0;
};

class Connection {
public:
    // Connects to `c.server` and negotiates `c.export_name` with the meta
    // context `c.x_dirty_bitmap`, or base:allocation. Errors in qemu-img's
    // words ("Failed to connect to 'x': ...", "Requested export not
    // available", ...). With `tls`, the handshake requires TLS with those
    // (client) credentials; over TCP with x509 the server's certificate must
    // name the host, as QEMU checks it (libnbd checks it when it makes the
    // TCP connection itself).
    static Result<std::unique_ptr<Connection>> open(const Config &c, const TlsCreds *tls = nullptr);
    ~Connection();
    Connection(const Connection &) = delete;
    Connection &operator=(const Connection &) = delete;

    const ExportInfo &info() const { return info_; }

    // The requests; each waits for its own reply. Ranges are the caller's
    // to keep inside the export and within max_block.
    Result<void> pread(void *buf, uint64_t len, uint64_t off);
    Result<void> pwrite(const void *buf, uint64_t len, uint64_t off, uint32_t flags);
    Result<void> zero(uint64_t len, uint64_t off, uint32_t flags);
    Result<void> trim(uint64_t len, uint64_t off);
    Result<void> flush();
    // The first extent the server reports for the negotiated context,
    // starting at `off` (NBD_CMD_FLAG_REQ_ONE). Not validated here.
    Result<Extent> block_status(uint64_t len, uint64_t off);

    struct Op;

private:
    Connection() = default;
    std::shared_ptr<Op> new_op();
    static nbd_completion_callback completion(const std::shared_ptr<Op> &op);
    // libnbd's callbacks.
    static int on_complete(void *user_data, int *error);
    static void on_free(void *user_data);
    static int on_extent(void *user_data, const char *context, uint64_t off, uint32_t *entries, size_t n,
                         int *error);
    // Waits for `op` (issued as `cookie`, or -1 when libnbd refused it).
    Result<void> wait(const std::shared_ptr<Op> &op, int64_t cookie, const char *what);
    void io_loop();
    void wake();

    nbd_handle *h_ = nullptr;
    ExportInfo info_;
    std::string context_;
    int wake_fd_ = -1;
    std::thread io_;
    std::atomic<bool> stop_{false};
    std::mutex mu_;  // guards the ops' completion state and dead_
    std::condition_variable cv_;
    bool dead_ = false;
};

}  // namespace qimg::nbd
