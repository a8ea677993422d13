// qemu-img bench: `count` reads or writes of `bufsize` bytes, `depth` in
// flight (here: worker threads sharing one request sequence), optionally
// flushing every `flush_interval` requests, and the elapsed time.
#include <getopt.h>
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
#include "cli/common.h"
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

bool cvt(std::string_view name, const char *v, int64_t min, int64_t max, int64_t &out) {
    std::string warning;
    auto r = cvtnum_full(name, v, min, max, g_argv0, &warning);
    if (!warning.empty()) warn_report(warning);
    if (!r) {
        error_report(r.error().message);
        return false;
    }
    out = *r;
    return true;
}

}  // namespace

int cmd_bench(int argc, char **argv) {
    enum { kOptFlushInterval = 256, kOptImageOpts, kOptPattern, kOptNoDrain };
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"flush-interval", required_argument, nullptr, kOptFlushInterval},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"pattern", required_argument, nullptr, kOptPattern},
        {"no-drain", no_argument, nullptr, kOptNoDrain},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt, cache = "writeback";
    bool quiet = false, image_opts = false, is_write = false, force_share = false;
    unsigned long count = 75000, depth = 64, pattern = 0, flush_interval = 0;
    int64_t offset = 0, bufsize = 4096, step = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'c':
            if (!parse_ulong(optarg, INT_MAX, count)) {
                error_report("Invalid request count specified");
                return 1;
            }
            break;
        case 'd':
            if (!parse_ulong(optarg, INT_MAX, depth)) {
                error_report("Invalid queue depth specified");
                return 1;
            }
            break;
        case 'f': fmt = optarg; break;
        case 'n': break;  // native AIO: accepted; requests run on threads here
        case 'i':
            if (std::strcmp(optarg, "native") != 0 && std::strcmp(optarg, "threads") != 0 &&
                std::strcmp(optarg, "io_uring") != 0) {
                error_reportf("Invalid aio option: {}", optarg);
                return 1;
            }
            break;
        case 'o':
            if (!cvt("offset", optarg, 0, INT64_MAX, offset)) return 1;
            break;
        case 'q': quiet = true; break;
        case 's':
            if (!cvt("buffer size", optarg, 0, INT_MAX, bufsize)) return 1;
            break;
        case 'S':
            if (!cvt("step_size", optarg, 0, INT_MAX, step)) return 1;
            break;
        case 't':
            if (!parse_cache_mode(optarg)) {
                error_report("Invalid cache mode");
                return 1;
            }
            cache = optarg;
            break;
        case 'w': is_write = true; break;
        case 'U': force_share = true; break;
        case kOptPattern:
            if (!parse_ulong(optarg, 0xff, pattern)) {
                error_report("Invalid pattern byte specified");
                return 1;
            }
            break;
        case kOptFlushInterval:
            if (!parse_ulong(optarg, INT_MAX, flush_interval)) {
                error_report("Invalid flush interval specified");
                return 1;
            }
            break;
        case kOptNoDrain: break;  // flushes never drain the queue here
        case kOptImageOpts: image_opts = true; break;
        }
    }
    if (optind != argc - 1) error_exit("Expecting one image file name");
    std::string filename = argv[argc - 1];
    if (!is_write && flush_interval) {
        error_report("--flush-interval is only available in write tests");
        return 1;
    }
    if (flush_interval && flush_interval < depth) {
        error_report("Flush interval can't be smaller than depth");
        return 1;
    }
    BlockOpener opener;
    ImageOpenArgs oa;
    oa.format = fmt;
    oa.image_opts = image_opts;
    oa.writable = is_write;
    oa.force_share = force_share;
    oa.cache = cache;
    oa.quiet = quiet;
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
