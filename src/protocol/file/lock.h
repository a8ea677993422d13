// Image locking compatible with QEMU's file-posix driver: open-file-
// description byte-range locks on the image file. For each permission bit b
// (block/perm.h) the holder takes a shared lock on byte 100+b, and for each
// permission it does not share with others a shared lock on byte 200+b.
// Before taking a permission, a user tests that nobody else locks byte
// 200+b; before refusing to share one, that nobody else locks byte 100+b.
// OFD locks belong to the open file description, so two opens of one file
// in the same process see each other as "another process", as in QEMU.
#pragma once

#include <cstdint>
#include <string>

#include "block/perm.h"
#include "util/result.h"

namespace qimg::filelock {

inline constexpr int kPermBase = 100;    // RAW_LOCK_PERM_BASE
inline constexpr int kSharedBase = 200;  // RAW_LOCK_SHARED_BASE

// The lock bytes an fd holds and the permissions they stand for.
class LockState {
public:
    // Moves the locks of `fd` to stand for `want` (what this user takes and
    // shares), testing first that no other holder conflicts. On a conflict
    // the state is left as it was and the error is QEMU's ('Failed to get
    // "write" lock' with the hint "Is another process using the image
    // [<name>]?" on a second line).
    Result<void> set_perm(int fd, Perms want, const std::string &name);
    // Takes on `fd` the lock bytes this state holds (after reopening a file
    // under a new descriptor; shared locks cannot conflict with shared locks).
    Result<void> copy_to(int fd) const;
    Perms perms() const { return perms_; }

private:
    Perms perms_;                  // permissions in force
    uint8_t locked_perm_ = 0;      // bits whose 100+b byte this fd locks
    uint8_t locked_unshared_ = 0;  // bits whose 200+b byte this fd locks
    Result<void> apply(int fd, uint8_t perm_bits, uint8_t unshared_bits, bool unlock);
};

// raw_check_lock_bytes(): fails when another holder's locks conflict with
// taking `perm` while sharing only `shared`.
Result<void> check(int fd, Perms p);

// Whether the kernel has OFD locks (QEMU's qemu_has_ofd_lock); locking=auto
// locks only then.
bool have_ofd_locks();

// The `locking` option of the file driver (on/off/auto).
enum class Mode { Off, On, Auto };
Result<Mode> parse_mode(const std::string &value);

}  // namespace qimg::filelock
