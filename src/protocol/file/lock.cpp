// QEMU-compatible image locks (see lock.h); the byte layout and messages of
// QEMU 7.2's block/file-posix.c (raw_apply_lock_bytes, raw_check_lock_bytes,
// raw_handle_perm_lock).
#include "protocol/file/lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

namespace qimg::filelock {
namespace {

int set_lock(int fd, int byte, short type) {
    struct flock fl = {};
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_type = type;
    while (fcntl(fd, F_OFD_SETLK, &fl) == -1) {
        if (errno != EINTR) return errno;
    }
    return 0;
}

// 0 when nobody else holds a lock on `byte`, EAGAIN when someone does.
int test_lock(int fd, int byte) {
    struct flock fl = {};
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_type = F_WRLCK;
    if (fcntl(fd, F_OFD_GETLK, &fl) == -1) return errno;
    return fl.l_type == F_UNLCK ? 0 : EAGAIN;
}

// EAGAIN/EACCES mean "someone holds it" and are not spelled out (QEMU's
// raw_lock_error_setg_errno).
Error lock_error(int err, std::string msg) {
    if (err == EAGAIN || err == EACCES) return Error{err, std::move(msg)};
    return Error{err, msg + ": " + std::strerror(err)};
}

}  // namespace

bool have_ofd_locks() {
    static const bool have = [] {
        int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0) return false;
        struct flock fl = {};
        fl.l_whence = SEEK_SET;
        fl.l_type = F_WRLCK;
        bool ok = fcntl(fd, F_OFD_GETLK, &fl) == 0;
        ::close(fd);
        return ok;
    }();
    return have;
}

Result<Mode> parse_mode(const std::string &v) {
    if (v == "off") return Mode::Off;
    if (v == "on") return Mode::On;
    if (v == "auto") return Mode::Auto;
    return make_error(EINVAL, "invalid parameter value: " + v);
}

Result<void> check(int fd, Perms p) {
    for (uint8_t bit = 1; bit <= kPermAll; bit <<= 1) {
        if (!(p.perm & bit)) continue;
        if (int e = test_lock(fd, kSharedBase + std::countr_zero(bit)))
            return Err(lock_error(e, std::string("Failed to get \"") + perm_name(bit) + "\" lock"));
    }
    for (uint8_t bit = 1; bit <= kPermAll; bit <<= 1) {
        if (p.shared & bit) continue;
        if (int e = test_lock(fd, kPermBase + std::countr_zero(bit)))
            return Err(lock_error(e, std::string("Failed to get shared \"") + perm_name(bit) + "\" lock"));
    }
    return ok();
}

Result<void> LockState::apply(int fd, uint8_t perm_bits, uint8_t unshared_bits, bool unlock) {
    for (int i = 0; (1 << i) <= kPermAll; ++i) {
        uint8_t bit = static_cast<uint8_t>(1 << i);
        int off = kPermBase + i;
        if ((perm_bits & bit) && !(locked_perm_ & bit)) {
            if (int e = set_lock(fd, off, F_RDLCK)) return Err(lock_error(e, "Failed to lock byte " + std::to_string(off)));
            locked_perm_ |= bit;
        } else if (unlock && (locked_perm_ & bit) && !(perm_bits & bit)) {
            if (int e = set_lock(fd, off, F_UNLCK))
                return Err(Error{e, "Failed to unlock byte " + std::to_string(off) + ": " + std::strerror(e)});
            locked_perm_ &= ~bit;
        }
    }
    for (int i = 0; (1 << i) <= kPermAll; ++i) {
        uint8_t bit = static_cast<uint8_t>(1 << i);
        int off = kSharedBase + i;
        if ((unshared_bits & bit) && !(locked_unshared_ & bit)) {
            if (int e = set_lock(fd, off, F_RDLCK)) return Err(lock_error(e, "Failed to lock byte " + std::to_string(off)));
            locked_unshared_ |= bit;
        } else if (unlock && (locked_unshared_ & bit) && !(unshared_bits & bit)) {
            if (int e = set_lock(fd, off, F_UNLCK))
                return Err(Error{e, "Failed to unlock byte " + std::to_string(off) + ": " + std::strerror(e)});
            locked_unshared_ &= ~bit;
        }
    }
    return ok();
}

Result<void> LockState::set_perm(int fd, Perms want, const std::string &name) {
    const uint8_t want_unshared = kPermAll & ~want.shared;
    const bool only_dropping = (perms_.perm | want.perm) == perms_.perm && (perms_.shared & want.shared) == perms_.shared;
    if (!only_dropping) {
        // Take the union first, then test: a conflict found after locking
        // cannot be missed by a holder that locks at the same time.
        auto r = apply(fd, perms_.perm | want.perm, static_cast<uint8_t>((kPermAll & ~perms_.shared) | want_unshared),
                       false);
        if (r) r = check(fd, want);
        if (!r) {
            (void)apply(fd, perms_.perm, kPermAll & ~perms_.shared, true);
            Error e = r.error();
            if (r.error().message.rfind("Failed to get", 0) == 0)
                e.message += "\nIs another process using the image [" + name + "]?";
            return Err(std::move(e));
        }
    }
    // Unlocking cannot conflict; QEMU only warns if it fails.
    (void)apply(fd, want.perm, want_unshared, true);
    perms_ = want;
    return ok();
}

Result<void> LockState::copy_to(int fd) const {
    LockState fresh;
    return fresh.apply(fd, locked_perm_, locked_unshared_, false);
}

}  // namespace qimg::filelock
