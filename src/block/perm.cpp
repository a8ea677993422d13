// QEMU's permission arithmetic (see perm.h).
#include "block/perm.h"

namespace qimg {
namespace {

// DEFAULT_PERM_PASSTHROUGH / DEFAULT_PERM_UNCHANGED
constexpr uint8_t kPassthrough = kPermConsistentRead | kPermWrite | kPermWriteUnchanged | kPermResize;
constexpr uint8_t kUnchanged = kPermAll & ~kPassthrough;

Perms filter_perms(Perms p) {
    return {static_cast<uint8_t>(p.perm & kPassthrough),
            static_cast<uint8_t>((p.shared & kPassthrough) | kUnchanged)};
}

}  // namespace

Perms root_perms(bool read_write, bool no_io, bool resize, bool no_share) {
    Perms p;
    if (!no_io) {
        p.perm |= kPermConsistentRead;
        if (read_write) p.perm |= kPermWrite;
    }
    if (resize) p.perm |= kPermResize;
    if (no_share) p.shared = kPermConsistentRead | kPermWriteUnchanged;
    return p;
}

Perms child_perms(unsigned role, Perms parent, bool writable, bool no_io) {
    if (role & kRoleFiltered) return filter_perms(parent);
    if (role & kRoleCow) {
        // Backing files are only read; they may change under a parent that
        // tolerates changing data.
        Perms c;
        c.perm = parent.perm & kPermConsistentRead;
        c.shared = (parent.shared & kPermWrite) ? (kPermWrite | kPermResize) : 0;
        c.shared |= kPermConsistentRead | kPermWriteUnchanged;
        return c;
    }
    Perms c = filter_perms(parent);
    if (role & kRoleMetadata) {
        // Format drivers touch metadata even when the guest does not write,
        // and nobody else may write or resize under them.
        if (writable) c.perm |= kPermWrite | kPermResize;
        if (!no_io) c.perm |= kPermConsistentRead;
        c.shared &= ~(kPermWrite | kPermResize);
    }
    if (role & kRoleData) {
        c.shared &= ~kPermResize;
        if (c.perm & kPermWriteUnchanged) c.perm |= kPermWrite;
        if (c.perm & kPermWrite) c.perm |= kPermResize;
    }
    return c;
}

const char *perm_name(uint8_t bit) {
    switch (bit) {
    case kPermConsistentRead: return "consistent read";
    case kPermWrite: return "write";
    case kPermWriteUnchanged: return "write unchanged";
    case kPermResize: return "resize";
    default: return "unknown";
    }
}

}  // namespace qimg
