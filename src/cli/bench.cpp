// qemu-img bench: `count` reads or writes of `bufsize` bytes, `depth` in
// flight (here: worker threads sharing one request sequence), optionally
// flushing every `flush_interval` requests, and the elapsed time.
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "util/size.h"

namespace qimg::cli {
namespace {

// qemu_strtoul(s, NULL, 0, &v) with v <= max.
bool parse_ulong(const char *s, unsigned long max, unsigned long &out) {
    if (!*s) return false;
    errno = 0;
    char *end = nullptr;
    // qemu_strtoul accepts "-N" (as strtoul) but rejects it when it does not
    // fit; values above `max` are refused by the caller's checks anyway.
    unsigned long v = std::strtoul(s, &end, 0);
    if (errno || *end || v > max) return false;
    out = v;
    return true;
}

}  // namespace

int cmd_bench(int argc, char **argv) {
    SharedOptions so;
    std::string cache = "writeback";
    bool is_write = false;
    unsigned long count = 75000, depth = 64, pattern = 0, flush_interval = 0;
    int64_t offset = 0, bufsize = 4096, step = 0;
    // qemu_strtoul() arguments, each with its own message.
    auto ulong = [](unsigned long max, unsigned long &dst, const char *msg) {
        return [max, &dst, msg](const char *arg) {
            bool ok = parse_ulong(arg, max, dst);
            if (!ok) error_report(msg);
            return ok;
        };
    };
    auto aio = [](const char *arg) {
        if (std::strcmp(arg, "native") == 0 || std::strcmp(arg, "threads") == 0 || std::strcmp(arg, "io_uring") == 0)
            return true;
        error_reportf("Invalid aio option: {}", arg);
        return false;
    };
    auto cache_mode = [&cache](const char *arg) {
        if (!parse_cache_mode(arg)) {
            error_report("Invalid cache mode");
            return false;
        }
        cache = arg;
        return true;
    };
    if (int rc = parse_options(
            argc, argv, so, kOptFormat | kOptQuiet | kOptForceShare | kOptImageOpts,
            {
                action_arg('c', nullptr, ulong(INT_MAX, count, "Invalid request count specified")),
                action_arg('d', nullptr, ulong(INT_MAX, depth, "Invalid queue depth specified")),
                action('n', nullptr, [] { return true; }),  // native AIO: accepted; requests run on threads here
                action_arg('i', nullptr, aio),
                number('o', nullptr, "offset", offset),
                number('s', nullptr, "buffer size", bufsize, 0, INT_MAX),
                number('S', nullptr, "step_size", step, 0, INT_MAX),
                action_arg('t', nullptr, cache_mode),
                flag('w', nullptr, is_write),
                action_arg(0, "pattern", ulong(0xff, pattern, "Invalid pattern byte specified")),
                action_arg(0, "flush-interval", ulong(INT_MAX, flush_interval, "Invalid flush interval specified")),
                action(0, "no-drain", [] { return true; }),  // flushes never drain the queue here
            }))
        return rc;
    std::string filename = one_filename(argc, argv);
    if (!is_write && flush_interval) {
        error_report("--flush-interval is only available in write tests");
        return 1;
    }
    if (flush_interval && flush_interval < depth) {
        error_report("Flush interval can't be smaller than depth");
        return 1;
    }
    BlockOpener opener;
    ImageOpenArgs oa = so.open_args(cache);
    oa.writable = is_write;
    NodePtr blk = open_image(opener, filename, oa);
    if (!blk) return 1;
    uint64_t image_size = blk->length();
    if (step == 0) step = bufsize;

    std::printf("Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %lld, step size %d)\n",
                static_cast<int>(count), is_write ? "write" : "read", static_cast<int>(bufsize),
                static_cast<int>(depth), static_cast<long long>(offset), static_cast<int>(step));
    if (flush_interval) std::printf("Sending flush every %d requests\n", static_cast<int>(flush_interval));
    std::fflush(stdout);

    struct timeval t1, t2;
    gettimeofday(&t1, nullptr);
    // The request sequence is qemu-img's: offsets advance by `step` modulo
    // the image size; a flush follows every flush_interval-th request.
    std::mutex mu;
    unsigned long issued = 0;
    uint64_t next_offset = static_cast<uint64_t>(offset);
    auto worker = [&] {
        std::vector<uint8_t> buf(static_cast<size_t>(bufsize), static_cast<uint8_t>(pattern));
        for (;;) {
            uint64_t off;
            bool flush_after;
            {
                std::lock_guard lk(mu);
                if (issued >= count) return;
                ++issued;
                off = next_offset;
                flush_after = flush_interval && issued % flush_interval == 0;
                if (image_size) next_offset = (next_offset + static_cast<uint64_t>(step)) % image_size;
            }
            auto r = is_write ? blk->write(off, buf.data(), buf.size()) : blk->read(off, buf.data(), buf.size());
            if (!r) {
                error_reportf("Failed request: {}", std::strerror(r.error().code));
                std::exit(1);
            }
            if (flush_after) {
                if (auto f = blk->flush(); !f) {
                    error_reportf("Failed flush request: {}", std::strerror(f.error().code));
                    std::exit(1);
                }
            }
        }
    };
    unsigned threads = static_cast<unsigned>(std::clamp<unsigned long>(depth, 1, 16));
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads; ++i) pool.emplace_back(worker);
    for (auto &t : pool) t.join();
    gettimeofday(&t2, nullptr);
    std::printf("Run completed in %3.3f seconds.\n",
                static_cast<double>(t2.tv_sec - t1.tv_sec) + static_cast<double>(t2.tv_usec - t1.tv_usec) / 1000000);
    return 0;
}

}  // namespace qimg::cli
