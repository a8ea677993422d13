// Permissions a node's users take on it and share with others, in QEMU's
// terms (include/block/block-common.h BLK_PERM_*, block.c
// bdrv_default_perms): the opener computes them top-down from how the
// command opens the image, and the file protocol turns them into QEMU's
// byte-range locks (protocol/file/lock.h), so that qimg and QEMU processes
// see each other's use of an image.
#pragma once

#include <cstdint>

namespace qimg {

enum Perm : uint8_t {
    kPermConsistentRead = 0x01,
    kPermWrite = 0x02,
    kPermWriteUnchanged = 0x04,
    kPermResize = 0x08,
    kPermAll = 0x0f,
};

struct Perms {
    uint8_t perm = 0;         // what the users of the node need
    uint8_t shared = kPermAll;  // what they let others do
    bool operator==(const Perms &) const = default;
};

// How a parent uses a child (QEMU's BdrvChildRole, the bits that matter here).
enum ChildRole : unsigned {
    kRoleData = 1u << 0,      // holds guest data
    kRoleMetadata = 1u << 1,  // holds format metadata
    kRoleFiltered = 1u << 2,  // passes requests through unchanged (raw without offset/size)
    kRoleCow = 1u << 3,       // backing file
    kRoleImage = kRoleData | kRoleMetadata,
};

// What the open flags of a command ask for, as blk_new_open() turns
// BDRV_O_NO_IO / BDRV_O_RDWR / BDRV_O_RESIZE / BDRV_O_NO_SHARE into the
// permissions of the image's root.
Perms root_perms(bool read_write, bool no_io, bool resize, bool no_share);

// bdrv_default_perms(): what a node (whose own users need `parent`) takes on
// a child in `role`. `writable` and `no_io` describe the parent node.
Perms child_perms(unsigned role, Perms parent, bool writable, bool no_io);

// bdrv_perm_names() for one bit: "consistent read", "write", ...
const char *perm_name(uint8_t bit);

}  // namespace qimg
