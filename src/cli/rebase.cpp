// qemu-img rebase: changes an image's backing file. In safe mode the data
// the image reads through its old backing chain is preserved: ranges that
// differ between old and new backing are copied into the image first.
// With -u only the name in the header changes.
//
// Crash safety: the preserved data is written and flushed before the header
// names the new backing file (qemu-img 7.2 does not flush in between, so the
// header change may reach the disk first), and the header change itself is
// the qcow2 driver's torn-write-safe rewrite. A kill at any point leaves the
// old backing file with all the data it needs, or the new one.
#include <getopt.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "block/status.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/printers.h"
#include "util/progress.h"

namespace qimg::cli {
namespace {

enum { kOptObject = 256, kOptImageOpts };
constexpr uint64_t kIoBufSize = 2 << 20;  // qemu-img.c IO_BUF_SIZE

// Data in `top` itself (not its backing chain) over [off, off+n)?
Result<bool> allocated_here(BlockNode &top, uint64_t off, uint64_t &n) {
    QIMG_ASSIGN(BlockStatus s, node_status(top, off, n));
    if (s.bytes) n = std::min(n, s.bytes);
    return (s.flags & kStatusAllocated) != 0;
}

// Writes the 512-byte sectors of `old_buf` that differ from `new_buf` into
// `top` at `off` (n bytes). With `compress`, whole clusters that differ
// anywhere are written compressed (qemu-img rebase -c of newer QEMU); the
// rest, and partial clusters at the edges of the range, as plain sectors.
Result<void> write_differences(BlockNode &top, uint64_t off, const uint8_t *old_buf, const uint8_t *new_buf,
                               uint64_t n, bool old_zero, bool compress) {
    const uint64_t cs = compress ? top.compressed_cluster_size() : 0;
    const uint64_t size = top.length();
    for (uint64_t done = 0; done < n;) {
        const uint64_t pos = off + done;
        if (cs && pos % cs == 0 && !old_zero) {
            uint64_t len = std::min(cs, size - pos);
            if (len <= n - done) {
                if (std::memcmp(old_buf + done, new_buf + done, len) != 0)
                    QIMG_TRY(top.write_compressed(pos, old_buf + done, len));
                done += len;
                continue;
            }
        }
        uint64_t len = std::min<uint64_t>(512 - pos % 512, n - done);
        if (cs && !old_zero) len = std::min(len, cs - pos % cs);
        if (std::memcmp(old_buf + done, new_buf + done, len) != 0) {
            // Runs of differing sectors become one write (up to a cluster edge with -c).
            uint64_t run = len;
            while (done + run < n && (!cs || old_zero || (pos + run) % cs != 0)) {
                uint64_t l2 = std::min<uint64_t>(512, n - done - run);
                if (std::memcmp(old_buf + done + run, new_buf + done + run, l2) == 0) break;
                run += l2;
            }
            QIMG_TRY(old_zero ? top.write_zeroes(pos, run, 0) : top.write(pos, old_buf + done, run));
            len = run;
        }
        done += len;
    }
    return ok();
}

// Copies into `top` what the old backing shows and the new does not.
Result<void> preserve_contents(BlockNode &top, BlockNode *old_backing, BlockNode *new_backing,
                               BlockNode *prefix_base, bool compress, std::string &what) {
    uint64_t size = top.length();
    uint64_t old_size = old_backing ? old_backing->length() : 0;
    uint64_t new_size = new_backing ? new_backing->length() : 0;
    std::vector<uint8_t> buf_old(kIoBufSize), buf_new(kIoBufSize);
    float step = size ? 100.f / static_cast<float>(size / std::min(size, kIoBufSize)) : 0.f;
    for (uint64_t off = 0; off < size;) {
        uint64_t n = std::min(kIoBufSize, size - off);
        auto here = allocated_here(top, off, n);
        if (!here) {
            what = "error while reading image metadata: " + std::string(std::strerror(here.error().code));
            return here.error();
        }
        if (*here) {
            off += n;
            continue;
        }
        if (prefix_base && top.backing() == prefix_base) {
            // Rebasing onto the current backing file: nothing differs.
            off += n;
            continue;
        }
        if (prefix_base && top.backing()) {
            auto cs = chain_status(*top.backing(), prefix_base, off, n);
            if (!cs) {
                what = "error while reading image metadata: " + std::string(std::strerror(cs.error().code));
                return cs.error();
            }
            if (cs->bytes) n = std::min(n, cs->bytes);
            if (!(cs->flags & kStatusAllocated)) {
                off += n;
                continue;
            }
        }
        bool old_zero = false;
        if (off >= old_size) {
            std::fill_n(buf_old.begin(), n, 0);
            old_zero = true;
        } else {
            n = std::min(n, old_size - off);
            if (auto r = old_backing->read(off, buf_old.data(), n); !r) {
                what = "error while reading from old backing file";
                return r.error();
            }
        }
        if (off >= new_size || !new_backing) {
            std::fill_n(buf_new.begin(), n, 0);
        } else {
            n = std::min(n, new_size - off);
            if (auto r = new_backing->read(off, buf_new.data(), n); !r) {
                what = "error while reading from new backing file";
                return r.error();
            }
        }
        if (auto w = write_differences(top, off, buf_old.data(), buf_new.data(), n, old_zero, compress); !w) {
            what = "Error while writing to COW image: " + std::string(std::strerror(w.error().code));
            return w.error();
        }
        off += n;
        progress::print(step, 100);
    }
    return ok();
}

}  // namespace

int cmd_rebase(int argc, char **argv) {
    static const option kLong[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kOptObject},
        {"image-opts", no_argument, nullptr, kOptImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {"compress", no_argument, nullptr, 'c'},
        {nullptr, 0, nullptr, 0},
    };
    std::string fmt, cache = "writeback", src_cache = "writeback", base_fmt, base;
    bool have_base = false, have_base_fmt = false, unsafe = false, progress = false, quiet = false;
    bool image_opts = false, force_share = false, compress = false;
    int c;
    while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qUc", kLong, nullptr)) != -1) {
        switch (c) {
        case ':':
        case '?':
            getopt_error(c, argv);
        case 'h':
            print_help();
        case 'f':
            fmt = optarg;
            break;
        case 'F':
            base_fmt = optarg;
            have_base_fmt = true;
            break;
        case 'b':
            base = optarg;
            have_base = true;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'p':
            progress = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'T':
            src_cache = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case kOptObject:
            process_object_option(optarg);
            break;
        case kOptImageOpts:
            image_opts = true;
            break;
        case 'U':
            force_share = true;
            break;
        case 'c':
            // qemu-img 8.2's rebase -c: merged clusters are written compressed.
            compress = true;
            break;
        }
    }
    if (quiet) progress = false;
    if (optind != argc - 1) error_exit("Expecting one image file name");
    if (!unsafe && !have_base) error_exit("Must specify backing file (-b) or use unsafe mode (-u)");
    std::string filename = argv[optind];

    progress::init(progress, 2.f);
    progress::print(0.f, 100);
    auto fail = [](const std::string &msg) {
        progress::end();
        error_report(msg);
        return 1;
    };
    if (!parse_cache_mode(cache)) return fail("Invalid cache option: " + cache);
    if (!parse_cache_mode(src_cache)) return fail("Invalid source cache option: " + src_cache);

    // Unsafe mode ignores the old backing file, so that a moved or renamed
    // one can be named anew.
    BlockOpener opener;
    ImageOpenArgs a;
    a.format = fmt;
    a.image_opts = image_opts;
    a.writable = true;
    a.no_backing = unsafe;
    a.cache = cache;
    a.quiet = quiet;
    NodePtr node = open_image(opener, filename, a);
    if (!node) {
        progress::end();
        return 1;
    }
    if (have_base_fmt && !find_driver(base_fmt)) return fail("Invalid format name: '" + base_fmt + "'");
    // As qemu-img 8.2 words it.
    if (compress && unsafe) return fail("Compression can't be used with -u option");
    if (compress && node->compressed_cluster_size() == 0)
        return fail("Compression not supported for this file format");

    if (!unsafe) {
        BlockNode *old_backing = node->backing();
        BlockNode *new_backing = nullptr, *prefix = nullptr;
        NodePtr new_owned;
        BlockOpener new_opener;
        if (!base.empty()) {
            std::string real = combine_backing_path(node->filename(), base);
            // Rebasing onto an image further down the chain needs to look
            // only at what changed above it.
            prefix = find_backing_image(*node, real_path(real));
            if (prefix) {
                new_backing = prefix;
            } else {
                OpenOptions o;
                o.format = base_fmt;
                o.flags.force_share = force_share;
                auto nb = new_opener.open_image(real, o);
                if (!nb)
                    return fail("Could not open new backing file '" + base + "': " + nb.error().message);
                new_owned = *nb;
                new_backing = new_owned.get();
            }
        }
        std::string what;
        if (!preserve_contents(*node, old_backing, new_backing, prefix, compress, what)) return fail(what);
        // The preserved data must be durable before the header stops
        // pointing at the old backing file.
        if (auto f = node->flush(); !f)
            return fail("Error while writing to COW image: " + std::string(std::strerror(f.error().code)));
    }

    // bdrv_change_backing_file(): a format needs a file, and a new name
    // needs its format.
    Result<void> r;
    bool named = have_base && !base.empty();
    if (named && !have_base_fmt)
        r = make_error(EINVAL, "Invalid argument");
    else
        r = node->change_backing_file(named ? base : std::string(), named ? base_fmt : std::string());
    if (!r) {
        std::string shown = have_base ? base : std::string("(null)");
        if (r.error().code == ENOSPC)
            return fail("Could not change the backing file to '" + shown + "': No space left in the file header");
        if (r.error().code == EINVAL && have_base && !have_base_fmt)
            return fail("Could not change the backing file to '" + shown + "': backing format must be specified");
        return fail("Could not change the backing file to '" + shown + "': " + std::strerror(r.error().code));
    }
    progress::print(100.f, 0);
    progress::end();
    return 0;
}

}  // namespace qimg::cli
