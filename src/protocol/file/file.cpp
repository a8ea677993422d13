// The `file` protocol driver: a POSIX file or block device accessed with
// pread/pwrite, SEEK_DATA/SEEK_HOLE for allocation status, fallocate for
// write-zeroes/discard/preallocation, and O_DIRECT (cache=none) with bounce
// buffers for unaligned requests.
//
// Image locking: QEMU's lock bytes (lock.h), taken when the opener sets the
// node's permissions (set_perm), released when the fd is closed.
//
// Concurrency: pread/pwrite on one fd are thread-safe; the cached length is
// atomic; unaligned O_DIRECT writes (read-modify-write) take rmw_mutex_;
// set_perm is called only while the graph is built, from one thread.
#include <fcntl.h>
#include <linux/cdrom.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "block/create.h"
#include "block/driver.h"
#include "block/open.h"
#include "protocol/file/lock.h"

namespace qimg {
namespace {

constexpr uint32_t kDirectAlign = 4096;  // safe for every device/filesystem O_DIRECT needs

struct AlignedBuffer {
    uint8_t *p = nullptr;
    explicit AlignedBuffer(size_t n) {
        if (posix_memalign(reinterpret_cast<void **>(&p), kDirectAlign, std::max<size_t>(n, kDirectAlign)) != 0)
            p = nullptr;
    }
    ~AlignedBuffer() { free(p); }
    AlignedBuffer(const AlignedBuffer &) = delete;
    AlignedBuffer &operator=(const AlignedBuffer &) = delete;
};

class FileNode final : public BlockNode {
public:
    FileNode(int fd, bool is_block, CacheMode cache, uint64_t len, bool use_lock = false)
        : fd_(fd), is_block_(is_block), cache_(cache), length_(len), use_lock_(use_lock) {}
    ~FileNode() override { ::close(fd_); }

    std::string_view driver_name() const override { return is_block_ ? device_driver_ : "file"; }
    // Opened as host_cdrom: its name, and the medium check before resizing.
    void set_cdrom() {
        device_driver_ = "host_cdrom";
        cdrom_ = true;
    }
    // A new regular file reads as zeroes; a block device holds old data.
    bool has_zero_init() const override { return !is_block_; }
    // Like QEMU, which counts images in 512-byte sectors, a file's length is
    // rounded up to a sector; the tail past the real end reads as zeroes.
    uint64_t length() const override { return (length_.load() + 511) / 512 * 512; }
    uint32_t request_alignment() const override { return cache_.direct ? kDirectAlign : 1; }
    // Every byte has its fixed place in the file, whatever the write order.
    bool layout_follows_write_order() const override { return false; }

    Result<void> copy_range_from(uint64_t off, BlockNode &dst, uint64_t dst_off, uint64_t len) override {
        return dst.copy_range_to(*this, off, dst_off, len);
    }

    // copy_file_range(2) between two host files. Whatever keeps the kernel
    // from copying (other filesystems on old kernels, devices, O_DIRECT, a
    // source shorter than the range) is ENOTSUP: the caller copies itself.
    Result<void> copy_range_to(BlockNode &src, uint64_t src_off, uint64_t off, uint64_t len) override {
        auto *in = dynamic_cast<FileNode *>(&src);
        if (!in || read_only_ || cache_.direct || in->cache_.direct)
            return make_error(ENOTSUP, "Copy offloading is not supported");
        loff_t ioff = static_cast<loff_t>(src_off), ooff = static_cast<loff_t>(off);
        uint64_t left = len;
        while (left > 0) {
            ssize_t n = copy_file_range(in->fd_, &ioff, fd_, &ooff, left, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return make_error(ENOTSUP, std::string("copy_file_range: ") + std::strerror(errno));
            if (n == 0) return make_error(ENOTSUP, "copy_file_range: short source");
            left -= static_cast<uint64_t>(n);
        }
        grow_to(off + len);
        return finish_write();
    }

    // Bulk-copy page-cache advice (node.h): the mechanism lives here, with
    // the fd; the policy (when, how often) in the copy engine.
    void cache_advice(CacheAdvice a, uint64_t off, uint64_t len) override {
        if (cache_.direct) return;  // nothing cached
        if (off > static_cast<uint64_t>(INT64_MAX) || len > static_cast<uint64_t>(INT64_MAX) - off) return;
        auto o = static_cast<off_t>(off);
        auto l = static_cast<off_t>(len);  // 0: to the end of the file
        switch (a) {
        case CacheAdvice::StartWriteback: (void)sync_file_range(fd_, o, l, SYNC_FILE_RANGE_WRITE); break;
        case CacheAdvice::WaitWriteback: (void)sync_file_range(fd_, o, l, SYNC_FILE_RANGE_WAIT_BEFORE); break;
        case CacheAdvice::DropClean: (void)posix_fadvise(fd_, o, l, POSIX_FADV_DONTNEED); break;
        case CacheAdvice::WillNeed:
            if (l != 0) (void)posix_fadvise(fd_, o, l, POSIX_FADV_WILLNEED);
            break;
        }
    }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        if (cache_.direct && !aligned(off, buf, len)) return bounce_read(off, buf, len);
        return raw_read(off, static_cast<uint8_t *>(buf), len);
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        if (read_only_) return make_error(EROFS, "Cannot write to a read-only file");
        if (cache_.direct && !aligned(off, buf, len)) QIMG_TRY(bounce_write(off, buf, len));
        else QIMG_TRY(raw_write(off, static_cast<const uint8_t *>(buf), len));
        grow_to(off + len);
        if (cache_.writethrough) return sync();
        return ok();
    }

    Result<void> write_zeroes(uint64_t off, uint64_t len, unsigned flags) override {
        if (read_only_) return make_error(EROFS, "Cannot write to a read-only file");
        if (len == 0) return ok();
        if (!is_block_) {
            // Holes read as zeroes; punching keeps the file size.
            if ((flags & kZeroMayUnmap) && off + len <= length() &&
                fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
                return finish_write();
            if (fallocate(fd_, FALLOC_FL_ZERO_RANGE, off, len) == 0) {
                grow_to(off + len);
                return finish_write();
            }
        } else {
            // On a device, punching a hole is a zeroing that may unmap
            // (thin LVs, loop devices over sparse files, SSDs stay sparse);
            // BLKZEROOUT never unmaps, so it only serves when unmapping is
            // not allowed or the device cannot punch.
            if ((flags & kZeroMayUnmap) && fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
                return finish_write();
            uint64_t range[2] = {off, len};
            if (ioctl(fd_, BLKZEROOUT, range) == 0) return finish_write();
        }
        if (flags & kZeroNoFallback) return make_error(ENOTSUP, "write_zeroes: Operation not supported");
        return write_zero_buffers(off, len);
    }

    Result<void> discard(uint64_t off, uint64_t len) override {
        if (read_only_) return make_error(EROFS, "Cannot write to a read-only file");
        if (is_block_) {
            uint64_t range[2] = {off, len};
            (void)ioctl(fd_, BLKDISCARD, range);  // advisory
            return ok();
        }
        (void)fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        return ok();
    }

    Result<void> flush() override {
        if (cache_.no_flush) return ok();
        return sync();
    }

    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override {
        if (read_only_) return make_error(EROFS, "Cannot write to a read-only file");
        if (is_block_) {
            // QEMU's blk_is_available (cdrom_is_inserted), then raw_co_truncate.
            if (cdrom_ && ioctl(fd_, CDROM_DRIVE_STATUS, CDSL_CURRENT) != CDS_DISC_OK)
                return make_error(ENOMEDIUM, "No medium inserted");
            if (exact && new_size != length()) return make_error(ENOTSUP, "Cannot resize device files");
            if (new_size > length()) return make_error(ENOTSUP, "Cannot grow device files");
            return ok();
        }
        // QEMU's handle_aiocb_truncate: its checks, order and messages.
        uint64_t old = length_.load();
        if (new_size > static_cast<uint64_t>(INT64_MAX)) return errno_error(EINVAL, "Could not resize file");
        if (old > new_size && prealloc != Prealloc::Off)
            return make_error(ENOTSUP, "Cannot use preallocation for shrinking files");
        switch (prealloc) {
        case Prealloc::Falloc:
            if (new_size != old) {
                int r = posix_fallocate(fd_, static_cast<off_t>(old), static_cast<off_t>(new_size - old));
                if (r != 0) {
                    (void)!ftruncate(fd_, static_cast<off_t>(old));
                    return errno_error(r, "Could not preallocate new data");
                }
                if (old == 0) allocate_first_block(new_size);
            }
            break;
        case Prealloc::Full:
            // Set the final size first (one allocation decision for the file
            // system, and an early "File too large"), then write the zeroes.
            if (ftruncate(fd_, static_cast<off_t>(new_size)) != 0)
                return errno_error(errno, "Could not resize file");
            if (new_size > old) {
                if (auto r = write_zero_buffers_plain(old, new_size - old); !r) {
                    (void)!ftruncate(fd_, static_cast<off_t>(old));
                    return r;
                }
                if (fsync(fd_) != 0) return errno_error(errno, "Could not flush file to disk");
            }
            break;
        case Prealloc::Off:
            if (ftruncate(fd_, static_cast<off_t>(new_size)) != 0)
                return errno_error(errno, "Could not resize file");
            if (old == 0 && new_size > 0) allocate_first_block(new_size);
            break;
        default:
            return make_error(ENOTSUP, "Unsupported preallocation mode: " + std::string(prealloc_name(prealloc)));
        }
        length_.store(new_size);
        return ok();
    }

    // A file grown from empty gets its first block written with zeroes, as
    // QEMU's allocate_first_block(): O_DIRECT alignment probing then reads
    // allocated blocks, and `map` and `disk size` show what qemu-img's do.
    // An optimisation in QEMU, so failures are ignored here too.
    void allocate_first_block(uint64_t new_size) {
        alignas(4096) static const uint8_t zero[4096] = {};
        size_t n = new_size < sizeof zero ? 512 : sizeof zero;
        ssize_t r;
        do r = ::pwrite(fd_, zero, n, 0);
        while (r < 0 && errno == EINTR);
    }

    void set_force_share(bool on) { force_share_ = on; }

    Result<void> set_perm(Perms p) override {
        if (!use_lock_) return ok();
        // force-share=on on this node (or inherited, or -U): every user
        // shares everything with others (QEMU's bdrv_child_perm).
        if (force_share_) p.shared = kPermAll;
        return lock_.set_perm(fd_, p, filename());
    }

    Result<BlockStatus> block_status(uint64_t off, uint64_t len) override {
        BlockStatus s;
        s.host_node = this;
        s.host_offset = off;
        s.flags = kStatusOffsetValid;
        uint64_t end = length();
        len = std::min(len, end - off);
        const uint64_t asked = len;
        if (is_block_) {
            s.flags |= kStatusData;
            s.bytes = len;
            return s;
        }
        off_t data = lseek(fd_, static_cast<off_t>(off), SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) {  // only a hole from here to the end
                s.flags |= kStatusZero;
                s.bytes = len;
            } else {  // SEEK_DATA unsupported: everything is data
                s.flags |= kStatusData;
                s.bytes = len;
            }
            return s;
        }
        if (static_cast<uint64_t>(data) > off) {
            s.flags |= kStatusZero;
            s.bytes = std::min<uint64_t>(len, data - off);
            return s;
        }
        off_t hole = lseek(fd_, static_cast<off_t>(off), SEEK_HOLE);
        s.flags |= kStatusData;
        if (hole < 0 || static_cast<uint64_t>(hole) <= off) s.bytes = len;
        else s.bytes = std::min<uint64_t>(len, hole - off);
        // With O_DIRECT no partial block is reported: data that runs to an
        // unaligned end of file covers the rest of its last block, as QEMU's
        // file driver rounds it up to the request alignment (iotest 253).
        const uint64_t align = request_alignment();
        if (align > 1 && off + s.bytes == length_.load() && s.bytes % align != 0)
            s.bytes = std::min<uint64_t>(asked, (s.bytes + align - 1) / align * align);
        return s;
    }

    Result<uint64_t> allocated_size() override {
        struct stat st;
        if (fstat(fd_, &st) != 0) return errno_error(errno, "stat failed");
        if (is_block_) return uint64_t{0};
        return static_cast<uint64_t>(st.st_blocks) * 512;
    }

private:
    static bool aligned(uint64_t off, const void *buf, size_t len) {
        return off % kDirectAlign == 0 && len % kDirectAlign == 0 &&
               reinterpret_cast<uintptr_t>(buf) % kDirectAlign == 0;
    }

    void grow_to(uint64_t end) {
        uint64_t cur = length_.load();
        while (end > cur && !length_.compare_exchange_weak(cur, end)) {
        }
    }

    Result<void> finish_write() { return cache_.writethrough ? sync() : ok(); }

    Result<void> sync() {
        if (fdatasync(fd_) != 0) return errno_error(errno, "Failed to flush");
        return ok();
    }

    // Reads, padding with zeroes past the end of file as QEMU's file driver does.
    Result<void> raw_read(uint64_t off, uint8_t *p, size_t len) {
        while (len > 0) {
            ssize_t n = pread(fd_, p, len, static_cast<off_t>(off));
            if (n < 0) {
                if (errno == EINTR) continue;
                return errno_error(errno, "Could not read image");
            }
            if (n == 0) {
                std::memset(p, 0, len);
                return ok();
            }
            p += n;
            off += n;
            len -= n;
        }
        return ok();
    }

    Result<void> raw_write(uint64_t off, const uint8_t *p, size_t len) {
        while (len > 0) {
            ssize_t n = pwrite(fd_, p, len, static_cast<off_t>(off));
            if (n < 0) {
                if (errno == EINTR) continue;
                return errno_error(errno, "Could not write to image");
            }
            p += n;
            off += n;
            len -= n;
        }
        return ok();
    }

    Result<void> bounce_read(uint64_t off, void *buf, size_t len) {
        uint64_t start = off / kDirectAlign * kDirectAlign;
        uint64_t end = (off + len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
        AlignedBuffer b(end - start);
        if (!b.p) return make_error(ENOMEM, "Could not allocate a bounce buffer");
        QIMG_TRY(raw_read(start, b.p, end - start));
        std::memcpy(buf, b.p + (off - start), len);
        return ok();
    }

    Result<void> bounce_write(uint64_t off, const void *buf, size_t len) {
        std::lock_guard lock(rmw_mutex_);
        uint64_t start = off / kDirectAlign * kDirectAlign;
        uint64_t end = (off + len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
        AlignedBuffer b(end - start);
        if (!b.p) return make_error(ENOMEM, "Could not allocate a bounce buffer");
        if (start != off || end != off + len) QIMG_TRY(raw_read(start, b.p, end - start));
        std::memcpy(b.p + (off - start), buf, len);
        QIMG_TRY(raw_write(start, b.p, end - start));
        // The aligned write may have extended the file past the real end.
        uint64_t want = std::max(length_.load(), off + len);
        if (!is_block_ && end > want && ftruncate(fd_, static_cast<off_t>(want)) != 0)
            return errno_error(errno, "Failed to resize the file");
        return ok();
    }

    Result<void> write_zero_buffers(uint64_t off, uint64_t len) {
        QIMG_TRY(write_zero_buffers_plain(off, len));
        grow_to(off + len);
        return finish_write();
    }

    Result<void> write_zero_buffers_plain(uint64_t off, uint64_t len) {
        constexpr size_t kChunk = 1 << 20;
        AlignedBuffer z(kChunk);
        if (!z.p) return make_error(ENOMEM, "Could not allocate a zero buffer");
        std::memset(z.p, 0, kChunk);
        while (len > 0) {
            size_t n = std::min<uint64_t>(len, kChunk);
            if (cache_.direct && !aligned(off, z.p, n)) QIMG_TRY(bounce_write(off, z.p, n));
            else QIMG_TRY(raw_write(off, z.p, n));
            off += n;
            len -= n;
        }
        return ok();
    }

    int fd_;
    bool is_block_;  // a block or character device
    bool cdrom_ = false;
    std::string_view device_driver_ = "host_device";
    CacheMode cache_;
    std::atomic<uint64_t> length_;
    std::mutex rmw_mutex_;
    bool use_lock_;
    bool force_share_ = false;
    filelock::LockState lock_;
};

Result<NodePtr> file_open(OpenRequest &req) {
    auto it = req.options.find("filename");
    if (it == req.options.end() || it->second.empty())
        return make_error(EINVAL, "The 'file' block driver requires a file name");
    const std::string path = it->second;
    // locking=on|off|auto, as QEMU's file driver (auto: when OFD locks exist).
    bool use_lock = filelock::have_ofd_locks();
    if (auto l = req.options.find("locking"); l != req.options.end()) {
        QIMG_ASSIGN(filelock::Mode mode, filelock::parse_mode(l->second));
        if (mode == filelock::Mode::Off) use_lock = false;
        if (mode == filelock::Mode::On) use_lock = true;  // qimg needs OFD locks; no POSIX-lock fallback
        req.options.erase(l);
    }
    int flags = O_CLOEXEC | (req.flags.read_write ? O_RDWR : O_RDONLY);
    if (req.flags.cache.direct) flags |= O_DIRECT;
    int fd = ::open(path.c_str(), flags);
    if (fd < 0) return errno_error(errno, "Could not open '" + path + "'");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        return errno_error(e, "Could not stat '" + path + "'");
    }
    bool is_block = S_ISBLK(st.st_mode);
    uint64_t len = static_cast<uint64_t>(st.st_size);
    if (is_block) {
        if (ioctl(fd, BLKGETSIZE64, &len) != 0) len = 0;
    } else if (S_ISCHR(st.st_mode) && req.options.count("x-device")) {
        // A character device through host_device: its length is where
        // lseek(SEEK_END) lands (0 for /dev/null), as QEMU's raw_getlength.
        off_t end = ::lseek(fd, 0, SEEK_END);
        len = end > 0 ? static_cast<uint64_t>(end) : 0;
        is_block = true;
    } else if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        return make_error(EINVAL, "'file' driver requires '" + path + "' to be a regular file");
    }
    auto node = std::make_shared<FileNode>(fd, is_block, req.flags.cache, len, use_lock);
    node->set_force_share(req.flags.force_share);
    node->set_filename(path);
    node->set_read_only(!req.flags.read_write);
    // Locks are taken when the opener sets the node's permissions: like
    // QEMU, a file opened for probing holds none.
    return NodePtr(node);
}

// Creates (or truncates) a regular file of `size` bytes (its first block
// written by truncate(), as QEMU's).
// The steps and their order follow QEMU's raw_co_create_opts/raw_co_create:
// options are checked before the file is touched, an existing file is
// emptied before the preallocation mode is applied (so "metadata" fails on
// an already emptied file, as in QEMU).
Result<void> file_create(CreateRequest &req) {
    std::string path = req.filename;
    if (path.rfind("file:", 0) == 0) path.erase(0, 5);
    // The file size is a whole number of sectors.
    uint64_t size = req.size > UINT64_MAX - 511 ? req.size : (req.size + 511) / 512 * 512;
    if (req.has("extent_size_hint")) {
        auto hint = std::strtoull(req.get("extent_size_hint").c_str(), nullptr, 10);
        if (hint > UINT32_MAX) return make_error(EINVAL, "Extent size hint is too large");
    }
    QIMG_ASSIGN(Prealloc prealloc, parse_prealloc(req.get("preallocation", "off")));
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return errno_error(errno, "Could not create '" + path + "'");
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
        ::close(fd);
        return ok();  // block devices are used as they are
    }
    auto file = std::make_shared<FileNode>(fd, false, CacheMode{}, 0, filelock::have_ofd_locks());
    file->set_read_only(false);
    file->set_filename(path);
    // Under the opener's protocol filter like every file node it opens (the
    // crash tests count this truncate).
    OpenFlags rw;
    rw.read_write = true;
    NodePtr node = filter_protocol(file, rw);
    // QEMU's raw_co_create: write and resize, sharing all but resize, so that
    // an image in use elsewhere is refused before it is emptied.
    QIMG_TRY(node->set_perm(Perms{kPermWrite | kPermResize, kPermAll & ~kPermResize}));
    if (ftruncate(fd, 0) != 0) return errno_error(errno, "Could not resize file");
    if (size > static_cast<uint64_t>(INT64_MAX)) return errno_error(EINVAL, "Could not resize file");
    if (prealloc == Prealloc::Metadata)
        return make_error(ENOTSUP, "Unsupported preallocation mode: metadata");
    return node->truncate(size, prealloc, true);
}

const Driver *make_file_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "file";
        d.is_protocol = true;
        // "file:" in a name given as a string is stripped before the driver
        // is chosen (strip_file_prefix); a filename option keeps it literally.
        d.protocol_prefixes = {"file"};
        d.path_after_prefix = true;
        d.open = file_open;
        d.create = file_create;
        d.create_options = {
            // QEMU's order (file-posix.c raw_create_opts): it is the order of the
            // "Formatting ..." line.
            {"size", CreateOption::Type::Size, "Virtual disk size", ""},
            {"nocow", CreateOption::Type::Bool, "Turn off copy-on-write (valid only on btrfs)", ""},
            {"preallocation", CreateOption::Type::String, "Preallocation mode (allowed values: off, falloc, full)", ""},
            {"extent_size_hint", CreateOption::Type::Size, "Extent size hint for the image file, 0 to disable", ""},
        };
        return d;
    }();
    return &d;
}

// host_device / host_cdrom: QEMU's names for the file driver on devices
// (file-posix.c). The file driver above opens block devices itself; these
// records make the names valid formats (-f, -F, a recorded backing format)
// and refuse what is not a device, with QEMU's message.
Result<NodePtr> device_open(OpenRequest &req, const std::string &driver) {
    auto it = req.options.find("filename");
    struct stat st;
    // QEMU opens first (so a missing file fails as in the file driver), then
    // checks the type.
    if (it != req.options.end() && ::stat(it->second.c_str(), &st) == 0 && !S_ISBLK(st.st_mode) &&
        !S_ISCHR(st.st_mode))
        return make_error(EINVAL, "'" + driver + "' driver requires '" + it->second +
                                      "' to be either a character or block device");
    req.options["x-device"] = "on";
    auto node = file_open(req);
    req.options.erase("x-device");
    if (node && driver == "host_cdrom") static_cast<FileNode &>(**node).set_cdrom();
    return node;
}

// QEMU's hdev_probe_device: any block or character device; /dev/cdrom*
// lower, so that host_cdrom takes it.
int host_device_probe(const std::string &path) {
    if (path.rfind("/dev/cdrom", 0) == 0) return 50;
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) ? 100 : 0;
}

// QEMU's cdrom_probe_device (Linux): a block device that answers the
// CD-ROM drive status ioctl.
int host_cdrom_probe(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    int score = 0;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) && ioctl(fd, CDROM_DRIVE_STATUS, CDSL_CURRENT) >= 0) score = 100;
    ::close(fd);
    return score;
}

Driver device_driver(const char *name, int (*probe)(const std::string &)) {
    Driver d;
    d.name = name;
    d.is_protocol = true;
    d.protocol_prefixes = {name};
    d.path_after_prefix = true;
    d.probe_device = probe;
    d.open = [driver = std::string(name)](OpenRequest &req) { return device_open(req, driver); };
    // A device exists already: "creating" one checks it and clears its
    // first sector (block/create.h).
    d.create = [driver = std::string(name)](CreateRequest &req) { return create_by_opening(*find_driver(driver), req); };
    d.create_options = create_by_opening_options();
    return d;
}

// Static records, like every driver's: the registry keeps pointers to them.
const Driver *make_host_device_driver() {
    static Driver d = device_driver("host_device", host_device_probe);
    return &d;
}
const Driver *make_host_cdrom_driver() {
    static Driver d = device_driver("host_cdrom", host_cdrom_probe);
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_file_driver);
QIMG_REGISTER_DRIVER(make_host_device_driver);
QIMG_REGISTER_DRIVER(make_host_cdrom_driver);

}  // namespace qimg
