// http, https, ftp and ftps: QEMU's curl protocol drivers (block/curl.c),
// read-only images behind a URL, through libcurl. The size comes from a HEAD
// request (Content-Length; an HTTP server must answer "Accept-Ranges:
// bytes"), reads are Range GETs. As in QEMU the length is rounded up to a
// sector and the tail reads as zeroes; a small read fetches `readahead`
// bytes more, kept for the reads that follow (format metadata, probing).
//
// A server is not trusted: a range answer is accepted only with the status
// and Content-Range of the range asked for (an HTTP server that ignores the
// Range header is accepted for reads from offset 0), its body is copied
// into a buffer of the size asked for and never more (a longer body ends
// the transfer, a shorter one is an error), and every transfer has a time
// limit (`timeout`, and without one a minimum speed), so that nothing waits
// forever. QEMU trusts the body's length (it asserts) and the Range.
//
// Concurrency: the node's options are immutable after open. Transfers use
// a pool of libcurl easy handles (one transfer each at a time; each keeps
// its connection open for the next, so the copy engine's threads end up
// with one connection each), taken and given back under pool_mutex_; the
// readahead buffers are a small cache under cache_mutex_. No lock is held
// during a transfer.
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "block/driver.h"
#include "block/limits.h"
#include "protocol/curl/curl_options.h"
#include "util/progname.h"

namespace qimg {
namespace {

using curl::CurlOptions;

constexpr size_t kMaxHandles = 16;          // concurrent transfers per node
constexpr size_t kCacheSlots = 8;           // readahead buffers kept (QEMU's CURL_NUM_STATES)
constexpr uint64_t kCachedRead = 1 << 20;   // reads up to this size get readahead and are cached
constexpr uint64_t kMaxReadahead = 32 << 20;  // a larger readahead= is used as this (memory bound)
constexpr uint64_t kMaxTransfer = 8 << 20;  // longer reads are split into ranges of this size
constexpr long kStallSeconds = 60;          // timeout=0: give up on a transfer this long without data

// QEMU reports the first 100 transfer errors ("curl: <libcurl's message>"),
// then says it stops.
void report_transfer_error(const std::string &msg) {
    static std::atomic<int> left{100};
    int n = left.fetch_sub(1);
    if (n <= 0) return;
    report_error("curl: " + msg);
    if (n == 1) report_error("curl: further errors suppressed");
}

Result<void> global_init() {
    static CURLcode rc = curl_global_init(CURL_GLOBAL_ALL);
    if (rc != CURLE_OK)
        return make_error(EIO, "libcurl initialization failed with " + std::to_string(static_cast<int>(rc)));
    return ok();
}

// One easy handle and the buffer libcurl writes its error messages into.
struct Handle {
    CURL *easy = nullptr;
    char errbuf[CURL_ERROR_SIZE] = {};
    Handle() = default;
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    ~Handle() {
        if (easy) curl_easy_cleanup(easy);
    }
    std::string error(CURLcode rc) const { return errbuf[0] ? std::string(errbuf) : curl_easy_strerror(rc); }
};
using HandlePtr = std::unique_ptr<Handle>;

// Where a range answer goes: `want` bytes into `dst`, and what the headers
// said about it.
struct RangeSink {
    uint8_t *dst = nullptr;
    size_t want = 0;
    size_t got = 0;
    bool overflow = false;  // the body went on past `want`
    long status = 0;        // of the last response (redirects come first)
    std::optional<curl::ContentRange> range;
};

size_t range_header_cb(char *ptr, size_t size, size_t nmemb, void *opaque) {
    auto *s = static_cast<RangeSink *>(opaque);
    size_t n = size * nmemb;
    std::string_view line(ptr, n);
    if (auto code = curl::parse_status_line(line)) {
        s->status = *code;
        s->range.reset();
    } else if (auto r = curl::parse_content_range(line)) {
        s->range = r;
    }
    return n;
}

size_t range_body_cb(char *ptr, size_t size, size_t nmemb, void *opaque) {
    auto *s = static_cast<RangeSink *>(opaque);
    size_t n = size * nmemb;
    size_t take = std::min(n, s->want - s->got);
    std::memcpy(s->dst + s->got, ptr, take);
    s->got += take;
    if (take < n) {
        s->overflow = true;
        return 0;  // ends the transfer (CURLE_WRITE_ERROR)
    }
    return n;
}

size_t head_header_cb(char *ptr, size_t size, size_t nmemb, void *opaque) {
    size_t n = size * nmemb;
    if (curl::is_accept_ranges_bytes(std::string_view(ptr, n))) *static_cast<bool *>(opaque) = true;
    return n;
}

size_t discard_body_cb(char *, size_t size, size_t nmemb, void *) { return size * nmemb; }

class CurlNode final : public BlockNode {
public:
    CurlNode(std::string driver, CurlOptions opts)
        : driver_(std::move(driver)), opts_(std::move(opts)),
          is_http_(driver_ == "http" || driver_ == "https") {
        limits_.max_transfer = kMaxTransfer;
    }

    std::string_view driver_name() const override { return driver_; }
    // A whole number of sectors, as QEMU counts a node's length; the part
    // past the server's Content-Length reads as zeroes.
    uint64_t length() const override { return (size_ + 511) / 512 * 512; }
    bool has_driver_info() const override { return false; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        return limited_read(limits_, off, buf, len,
                            [this](uint64_t o, void *b, size_t l) { return read_piece(o, static_cast<uint8_t *>(b), l); });
    }

    // The HEAD request of open: the size, and for HTTP the range support.
    Result<void> fetch_size() {
        QIMG_ASSIGN(HandlePtr h, acquire());
        bool accept_ranges = false;
        CURL *e = h->easy;
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, head_header_cb);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &accept_ranges);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body_cb);
        CURLcode rc = curl_easy_perform(e);
        std::string problem = rc != CURLE_OK ? h->error(rc) : size_problem(e, accept_ranges);
        if (!problem.empty()) {
            drop_handle(std::move(h));
            return make_error(EINVAL, "CURL: Error opening file: " + problem);
        }
        curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        release(std::move(h));
        return ok();
    }

private:
    // What is wrong with the HEAD answer, or "" (then size_ is set).
    std::string size_problem(CURL *e, bool accept_ranges) {
        curl_off_t cl = -1;
        if (curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) != CURLE_OK)
            return "Could not read the file size from the answer.";
        if (cl < 0) return "Server didn't report file size.";
        // Rounded up to a sector, the length must stay a valid offset.
        if (static_cast<uint64_t>(cl) > (uint64_t(INT64_MAX) & ~uint64_t{511}))
            return "Server reported a file size too large.";
        size_ = static_cast<uint64_t>(cl);
        if (is_http_ && !accept_ranges) return "Server does not support 'range' (byte ranges).";
        return "";
    }

    // An easy handle set up with the node's options (QEMU's curl_init_state),
    // from the pool when one is idle.
    Result<HandlePtr> acquire() {
        {
            std::unique_lock lock(pool_mutex_);
            pool_cv_.wait(lock, [this] { return !idle_.empty() || handles_ < kMaxHandles; });
            if (!idle_.empty()) {
                HandlePtr h = std::move(idle_.back());
                idle_.pop_back();
                return h;
            }
            ++handles_;
        }
        auto h = std::make_unique<Handle>();
        h->easy = curl_easy_init();
        if (!h->easy || !configure(*h)) {
            give_back_slot();
            return make_error(EIO, "curl library initialization failed.");
        }
        return h;
    }

    void release(HandlePtr h) {
        std::lock_guard lock(pool_mutex_);
        idle_.push_back(std::move(h));
        pool_cv_.notify_one();
    }

    // A handle whose connection is in an unknown state is not reused.
    void drop_handle(HandlePtr h) {
        h.reset();
        give_back_slot();
    }

    void give_back_slot() {
        std::lock_guard lock(pool_mutex_);
        --handles_;
        pool_cv_.notify_one();
    }

    bool configure(Handle &h) {
        CURL *e = h.easy;
        const CurlOptions &o = opts_;
        bool ok = curl_easy_setopt(e, CURLOPT_URL, o.url.c_str()) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, o.sslverify ? 1L : 0L) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, o.sslverify ? 2L : 0L) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_TIMEOUT, static_cast<long>(o.timeout)) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_AUTOREFERER, 1L) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 30L) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h.errbuf) == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_FAILONERROR, 1L) == CURLE_OK &&
                  // No POP3/SMTP/IMAP/... through a redirect either (CVE-2013-0249).
                  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "HTTP,HTTPS,FTP,FTPS") == CURLE_OK &&
                  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "HTTP,HTTPS,FTP,FTPS") == CURLE_OK;
        // Without a time limit, a server that stops sending still ends the
        // transfer.
        if (ok && o.timeout == 0)
            ok = curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L) == CURLE_OK &&
                 curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, kStallSeconds) == CURLE_OK;
        auto set_str = [&](CURLoption opt, const std::optional<std::string> &v) {
            if (ok && v) ok = curl_easy_setopt(e, opt, v->c_str()) == CURLE_OK;
        };
        set_str(CURLOPT_COOKIE, o.cookie);
        set_str(CURLOPT_USERNAME, o.username);
        set_str(CURLOPT_PASSWORD, o.password);
        set_str(CURLOPT_PROXYUSERNAME, o.proxy_username);
        set_str(CURLOPT_PROXYPASSWORD, o.proxy_password);
        return ok;
    }

    // [off, off+len), at most max_transfer: from a readahead buffer, or one
    // range request (with readahead for a small read).
    Result<void> read_piece(uint64_t off, uint8_t *buf, size_t len) {
        if (len == 0) return ok();
        if (off >= size_) {
            std::memset(buf, 0, len);
            return ok();
        }
        const size_t avail = static_cast<size_t>(std::min<uint64_t>(len, size_ - off));
        std::memset(buf + avail, 0, len - avail);
        if (from_cache(off, buf, avail)) return ok();
        if (avail > kCachedRead) return fetch(off, buf, avail);
        const uint64_t ahead = std::min(opts_.readahead, kMaxReadahead);
        auto entry = std::make_shared<CacheEntry>();
        entry->start = off;
        entry->data.resize(static_cast<size_t>(std::min<uint64_t>(avail + ahead, size_ - off)));
        QIMG_TRY(fetch(off, entry->data.data(), entry->data.size()));
        std::memcpy(buf, entry->data.data(), avail);
        remember(std::move(entry));
        return ok();
    }

    // One Range GET of exactly [off, off+len) into buf.
    Result<void> fetch(uint64_t off, uint8_t *buf, size_t len) {
        QIMG_ASSIGN(HandlePtr h, acquire());
        CURL *e = h->easy;
        RangeSink sink;
        sink.dst = buf;
        sink.want = len;
        const std::string range = std::to_string(off) + "-" + std::to_string(off + len - 1);
        h->errbuf[0] = '\0';
        curl_easy_setopt(e, CURLOPT_RANGE, range.c_str());
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, range_header_cb);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &sink);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, range_body_cb);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
        CURLcode rc = curl_easy_perform(e);
        std::string problem;
        if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && sink.overflow)) problem = h->error(rc);
        else problem = check_answer(sink, off);
        // The rest of a longer body is still on the connection.
        if (sink.overflow || !problem.empty()) drop_handle(std::move(h));
        else release(std::move(h));
        if (!problem.empty()) {
            report_transfer_error(problem);
            return make_error(EIO, "curl: " + problem);
        }
        return ok();
    }

    // What is wrong with a finished range answer, or "".
    std::string check_answer(const RangeSink &s, uint64_t off) const {
        if (is_http_) {
            if (s.status == 200 && off != 0) return "Server ignored the byte range of a read";
            if (s.status == 206 && (!s.range || s.range->first != off))
                return "Server answered a read with another byte range";
            if (s.status != 200 && s.status != 206)
                return "Server answered a read with status " + std::to_string(s.status);
        }
        if (s.got < s.want)
            return "Server sent " + std::to_string(s.got) + " of the " + std::to_string(s.want) +
                   " bytes of a read";
        return {};
    }

    struct CacheEntry {
        uint64_t start = 0;
        std::vector<uint8_t> data;
    };

    bool from_cache(uint64_t off, uint8_t *buf, size_t len) {
        std::shared_ptr<CacheEntry> hit;
        {
            std::lock_guard lock(cache_mutex_);
            for (auto it = cache_.begin(); it != cache_.end(); ++it) {
                const CacheEntry &c = **it;
                if (off >= c.start && off + len <= c.start + c.data.size()) {
                    hit = *it;
                    cache_.splice(cache_.begin(), cache_, it);  // most recently used first
                    break;
                }
            }
        }
        if (!hit) return false;
        std::memcpy(buf, hit->data.data() + (off - hit->start), len);
        return true;
    }

    void remember(std::shared_ptr<CacheEntry> e) {
        std::lock_guard lock(cache_mutex_);
        cache_.push_front(std::move(e));
        if (cache_.size() > kCacheSlots) cache_.pop_back();
    }

    std::string driver_;
    CurlOptions opts_;
    bool is_http_;
    uint64_t size_ = 0;  // the server's Content-Length
    IoLimits limits_;

    std::mutex pool_mutex_;
    std::condition_variable pool_cv_;
    std::vector<HandlePtr> idle_;
    size_t handles_ = 0;  // idle and in use

    std::mutex cache_mutex_;
    std::list<std::shared_ptr<CacheEntry>> cache_;  // entries are immutable once listed
};

Result<NodePtr> curl_open(OpenRequest &req, const std::string &protocol) {
    // QEMU's bdrv_apply_auto_read_only, before anything else.
    if (req.flags.read_write) return make_error(EACCES, "curl driver does not support writes");
    QIMG_TRY(global_init());
    QIMG_ASSIGN(CurlOptions opts, curl::take_curl_options(req.options, protocol, *req.secrets));
    std::string name = opts.url_says_all() ? opts.url : std::string();
    auto node = std::make_shared<CurlNode>(protocol, std::move(opts));
    QIMG_TRY(node->fetch_size());
    node->set_filename(name);
    node->set_read_only(true);
    return NodePtr(node);
}

Driver curl_driver(const char *name) {
    Driver d;
    d.name = name;
    d.is_protocol = true;
    d.parses_filename = true;  // QEMU's bdrv_parse_filename
    d.protocol_prefixes = {name};
    d.open = [protocol = std::string(name)](OpenRequest &req) { return curl_open(req, protocol); };
    // QEMU's curl_strong_runtime_opts; readahead and timeout do not change
    // what is read.
    d.strong_options = {"url",      "sslverify",       "cookie",         "cookie-secret",
                        "username", "password-secret", "proxy-username", "proxy-password-secret"};
    d.refresh_filename = [](const nlohmann::ordered_json &full, const std::string &) {
        return curl::curl_plain_name(full);
    };
    return d;
}

// The four records, one per protocol name (static: the registry keeps
// pointers to them).
constexpr char kHttp[] = "http", kHttps[] = "https", kFtp[] = "ftp", kFtps[] = "ftps";
template <const char *Name>
const Driver *make_curl_driver() {
    static Driver d = curl_driver(Name);
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_curl_driver<kHttp>);
QIMG_REGISTER_DRIVER(make_curl_driver<kHttps>);
QIMG_REGISTER_DRIVER(make_curl_driver<kFtp>);
QIMG_REGISTER_DRIVER(make_curl_driver<kFtps>);

}  // namespace qimg
