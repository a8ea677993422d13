// qcow2 consistency check and repair (qemu-img check; the repair of a dirty
// lazy-refcounts image on a read-write open), QEMU 7.2 behaviour: the
// expected refcount of every host cluster is rebuilt in memory from the
// header, the active and snapshot L1/L2 tables, the snapshot table, the
// refcount structures and the bitmap directory, then compared with the
// refcounts on disk. Problems are reported on stderr in QEMU's wording and
// order (QEMU prints them itself, below qemu-img); repairs free leaks, fix
// refcounts and OFLAG_COPIED, and rebuild the refcount structures when the
// on-disk ones cannot be trusted. The snapshot table is read by the check
// itself (a check-mode open skips it), so that a broken one is reported
// and, with -r all, cut, truncated or rewritten as QEMU does.
//
// The check is one Checker (checker.h) in files by concern: check.cpp (entry
// points, phase order, report), check_snapshot_table.cpp,
// check_references.cpp (the expected refcounts), check_repair.cpp (leaks,
// corruptions, OFLAG_COPIED, the overlap guard of repair writes) and
// check_rebuild.cpp (a new refcount structure).
#pragma once

namespace qimg::qcow2 {

// Qcow2Node::check() is implemented in check.cpp through this friend.
class Checker;

}  // namespace qimg::qcow2
