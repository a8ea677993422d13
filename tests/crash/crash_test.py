#!/usr/bin/env python3
"""Crash-safety test: kill qimg at every write/flush of an in-place operation.

For each operation in OPERATIONS the harness
  1. builds the images with the REAL qemu-img/qemu-io (setup lines),
  2. records the guest content of the checked images before and after an
     uninterrupted qimg run (flat raw copies made by the real qemu-img),
     counting the run's file events (writes, write_zeroes, discards,
     truncates, flushes) through QIMG_FAULT_LOG,
  3. runs the operation again on fresh copies with QIMG_FAULT_AFTER=k for
     every event k (or a spread of MAX_POINTS for long ones): in kill mode
     qimg dies with SIGKILL just before event k, in error mode only that
     call fails with EIO,
  4. after each run asserts with the real tools: `qemu-img check` finds no
     corruption (leaks are allowed) and every checked image reads as its
     before or its after content (per block for images rewritten piece by
     piece by nature, such as a commit's base or convert -n's target), and
     so does every internal snapshot (the list being the before or the
     after one); a dirty v3 image may fail the check if a read-write open
     by the real qemu-io (QEMU repairs dirty images then) repairs it
     completely, and is read after that repair; a compat=0.10 image (no
     dirty bit) may only show OFLAG_COPIED missing on clusters of refcount
     1 (a copy on the next write), which `qemu-img check -r all` repairs;
     a parallels image may fail the check only for being left in use (and
     leaks), which `qemu-img check -r all` must repair completely;
     with `bitmaps`, every persistent bitmap reads (through the real
     qemu-nbd) as its before or its after state, or is marked in-use, which
     QEMU treats as inconsistent and refuses to use; with `repair` (a repair
     of a damaged image), `qemu-img check -r all` still repairs the result
     completely and the repaired image reads as before.

Adding an operation is one entry in OPERATIONS; see docs/crash-testing.md.
Operations that apply to any format are written once in ANY_FORMAT_OPS with
the format as a parameter and run for every format of CRASH_FORMATS: a new
format adds its name there (rows, not code).
"""
import argparse
import hashlib
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

QEMU_IMG = os.environ.get("QEMU_IMG_REAL", "/usr/bin/qemu-img")
QEMU_IO = "/usr/bin/qemu-io"
QEMU_NBD = "/usr/bin/qemu-nbd"
MAX_POINTS = 16        # kill points per operation (all events when fewer)
ERROR_POINTS = 5        # error-mode points per operation

# An image whose name starts with "luks-" is a LUKS-encrypted qcow2 with the
# passphrase 123456: the real tools open it (and the copies named after it)
# with that secret, as sec0.
SECRET_IMAGE_PREFIX = "luks-"
SECRET_OBJECT = "--object secret,id=sec0,data=123456"


class Op:
    """One in-place operation under test.

    setup:   shell lines run with the real tools (qemu-img/qemu-io on PATH;
             "$QIMG" is the qimg under test, for images only it makes)
    run:     the qimg command line, without the program name
    images:  files whose consistency and guest content are checked; a name
             ending in ":blocks" is compared per block of `unit` bytes
             instead of as a whole (each block reads as before or as
             after): for images an operation rewrites piece by piece by
             nature, such as the base of a commit or the target of
             convert -n
    unit:    the block size of those comparisons (the operation's write unit)
    bitmaps: also compare the persistent bitmaps of the checked images
    repair:  the images are damaged before the operation (a check -r): an
             interrupted repair may leave the damage, but the real
             `qemu-img check -r all` must then repair it completely, and the
             repaired image must read as before
    fails:   the uninterrupted run is expected to fail (a refusal after
             some changes were made); its result is the after state
    points:  at most this many kill points in the default sample (CI), for
             operations whose neighbours already cover the same code; every
             event with --points 0 all the same
    snapshot_data: compare the guest content of every internal snapshot
             with its content before the operation (and the snapshot list
             with the before or after one); off only where the real
             qemu-img changes it too (say why at the operation)
    fmt:     the format of the checked images (read and checked with -f fmt;
             a format without checks, such as raw, is only read)
    secrets: {id: passphrase} of an encrypted format (luks): the checked
             images are opened as json: filenames with key-secret, the
             secrets given to the real tools as --object (the run line
             brings its own --object options)
    keys:    the secret ids that must open the checked images after any
             kill (each one must read as before or after); default all
    gone:    secret ids that must no longer open them after the
             uninterrupted run (erased keyslots)
    """

    def __init__(self, name, setup, run, images, unit=65536, bitmaps=False, repair=False, fails=False,
                 snapshot_data=True, points=MAX_POINTS, fmt="qcow2", secrets=None, keys=None, gone=()):
        self.name, self.setup, self.run, self.unit, self.fmt = name, setup, run, unit, fmt
        self.secrets = secrets or {}
        self.keys, self.gone = list(keys if keys is not None else self.secrets), list(gone)
        self.images = [i.split(":")[0] for i in images]
        self.by_blocks = {i.split(":")[0] for i in images if i.endswith(":blocks")}
        self.bitmaps, self.repair, self.fails = bitmaps, repair, fails
        self.snapshot_data, self.points = snapshot_data, points


def base_chain(top_writes):
    return [
        "qemu-img create -q -f qcow2 base.qcow2 2M",
        "qemu-io -c 'write -P 0x11 0 2M' base.qcow2",
        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2",
        "qemu-io " + " ".join(f"-c '{w}'" for w in top_writes) + " top.qcow2",
    ]


TOP_WRITES = ["write -P 0x22 0 64k", "write -P 0x33 300k 200k", "write -z 1M 128k", "write -c -P 0x44 1536k 64k"]

# A leaked cluster: one past the end of the file counted in the first refcount block.
LEAKY = [
    "qemu-img create -q -f qcow2 leaky.qcow2 1M",
    "qemu-io -c 'write -P 0x55 0 256k' leaky.qcow2",
    "python3 -c \"import os;f=open('leaky.qcow2','r+b');n=os.path.getsize('leaky.qcow2')//65536;"
    "f.truncate((n+1)*65536);f.seek(2*65536+2*n);f.write(b'\\x00\\x01')\"",
]

# An image with two persistent bitmaps holding dirty ranges (made by the
# real tools; qemu-io records its writes in the enabled ones): b1 disabled,
# b2 enabled with another granularity.
BITMAPS = [
    "qemu-img create -q -f qcow2 b.qcow2 1M",
    "qemu-img bitmap --add b.qcow2 b1",
    "qemu-io -c 'write -P 0xa1 0 64k' -c 'write -P 0xa2 512k 128k' b.qcow2",
    "qemu-img bitmap --add -g 128k b.qcow2 b2",
    "qemu-io -c 'write -P 0xa3 256k 64k' -c 'write -P 0xa4 960k 64k' b.qcow2",
    "qemu-img bitmap --disable b.qcow2 b1",
]

# Zero clusters (plain and preallocated) in an image with a backing file and
# a snapshot sharing them, for the compat=0.10 downgrade to expand.
ZEROES = [
    "qemu-img create -q -f qcow2 base.qcow2 1M",
    "qemu-io -c 'write -P 0x11 0 1M' base.qcow2",
    "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 z.qcow2",
    "qemu-io -c 'write -P 0x22 0 256k' -c 'write -z 64k 64k' -c 'write -z 512k 128k' z.qcow2",
    "qemu-img snapshot -c s1 z.qcow2",
    "qemu-io -c 'write -z 0 64k' -c 'write -P 0x23 768k 64k' z.qcow2",
]

# Three generations on one image: snapshots s1 and s2 and the active layer,
# each with plain and compressed clusters (convert -c for a fully compressed
# start, qemu-io write -c into unallocated clusters later), so that L2 tables, data clusters and
# compressed clusters are shared by one, two or three of them.
def generations(name, compat, size="1M"):
    return [
        f"qemu-img create -q -f raw g.raw {size}",
        "qemu-io -f raw -c 'write -P 0x31 0 384k' -c 'write -P 0x32 768k 128k' g.raw",
        f"qemu-img convert -c -O qcow2 -o compat={compat} g.raw {name}",
        "rm g.raw",
        f"qemu-io -c 'write -P 0x33 64k 64k' -c 'write -P 0x34 512k 128k' {name}",
        f"qemu-img snapshot -c s1 {name}",
        f"qemu-io -c 'write -P 0x35 128k 128k' -c 'write -c -P 0x36 640k 64k' -c 'write -c -P 0x37 384k 64k' {name}",
        f"qemu-img snapshot -c s2 {name}",
        f"qemu-io -c 'write -P 0x38 192k 64k' -c 'write -P 0x39 832k 128k' -c 'write -c -P 0x3a 704k 64k' {name}",
    ]


POKE = "python3 " + shlex.quote(os.path.join(os.path.dirname(os.path.abspath(__file__)), "qcow2_poke.py"))

# Damage the real check repairs without a rebuild (-r all): a shared cluster
# counted once, a cluster of its own without OFLAG_COPIED, a shared cluster
# counted three times (a leak).
DAMAGED = [
    "qemu-img create -q -f qcow2 d.qcow2 1M",
    "qemu-io -c 'write -P 0x66 0 256k' d.qcow2",
    "qemu-img snapshot -c s1 d.qcow2",
    "qemu-io -c 'write -P 0x68 0 64k' d.qcow2",
    f"{POKE} d.qcow2 refcount 1 1",
    f"{POKE} d.qcow2 uncopy 0",
    f"{POKE} d.qcow2 refcount 2 3",
]

# The first refcount table entry zeroed: the refcount structure is rebuilt.
NO_REFBLOCK = [
    "qemu-img create -q -f qcow2 n.qcow2 1M",
    "qemu-io -c 'write -P 0x67 0 256k' n.qcow2",
    f"{POKE} n.qcow2 reftable 0 0",
]


def chain3():
    return [
        "qemu-img create -q -f qcow2 base.qcow2 1M",
        "qemu-io -c 'write -P 0x11 0 1M' base.qcow2",
        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2",
        "qemu-io -c 'write -P 0x22 128k 256k' -c 'write -z 640k 64k' mid.qcow2",
        "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2",
        "qemu-io -c 'write -P 0x33 320k 128k' -c 'write -c -P 0x34 896k 64k' top.qcow2",
    ]


def small(name, size="1M", opts="", writes=("write -P 0x71 0 256k", "write -P 0x72 768k 256k")):
    return [f"qemu-img create -q -f qcow2 {opts} {name} {size}",
            "qemu-io " + " ".join(f"-c '{w}'" for w in writes) + f" {name}"]


OPERATIONS = [
    Op("commit", base_chain(TOP_WRITES), "commit top.qcow2", ["top.qcow2", "base.qcow2:blocks"]),
    Op("commit v2 top (unmap path)",
       ["qemu-img create -q -f qcow2 base.qcow2 1M", "qemu-io -c 'write -P 0x11 0 1M' base.qcow2",
        "qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 top.qcow2",
        "qemu-io -c 'write -P 0x22 0 192k' top.qcow2"],
       "commit top.qcow2", ["top.qcow2", "base.qcow2:blocks"]),
    Op("rebase (safe)",
       base_chain(TOP_WRITES) + ["qemu-img create -q -f qcow2 new.qcow2 2M",
                                 "qemu-io -c 'write -P 0x11 0 512k' new.qcow2"],
       "rebase -b new.qcow2 -F qcow2 top.qcow2", ["top.qcow2"]),
    Op("rebase -b '' (flatten)", base_chain(TOP_WRITES), "rebase -b '' top.qcow2", ["top.qcow2"]),
    Op("rebase -c", base_chain(TOP_WRITES) + ["qemu-img create -q -f raw new.raw 2M"],
       "rebase -c -b new.raw -F raw top.qcow2", ["top.qcow2"]),
    Op("snapshot -c",
       ["qemu-img create -q -f qcow2 s.qcow2 1M", "qemu-io -c 'write -P 0x61 0 512k' s.qcow2"],
       "snapshot -c snap1 s.qcow2", ["s.qcow2"]),
    Op("snapshot -a",
       ["qemu-img create -q -f qcow2 s.qcow2 1M", "qemu-io -c 'write -P 0x61 0 512k' s.qcow2",
        "qemu-img snapshot -c snap1 s.qcow2", "qemu-io -c 'write -P 0x62 256k 512k' s.qcow2"],
       "snapshot -a snap1 s.qcow2", ["s.qcow2"]),
    Op("snapshot -d",
       ["qemu-img create -q -f qcow2 s.qcow2 1M", "qemu-io -c 'write -P 0x61 0 512k' s.qcow2",
        "qemu-img snapshot -c snap1 s.qcow2", "qemu-io -c 'write -P 0x62 256k 512k' s.qcow2"],
       "snapshot -d snap1 s.qcow2", ["s.qcow2"]),
    # Several snapshots sharing plain and compressed clusters, on both
    # compat levels (compat=0.10 has no dirty bit to fall back on).
    Op("snapshot -c (compat=0.10, 2 snapshots, compressed)", generations("g.qcow2", "0.10"),
       "snapshot -c s3 g.qcow2", ["g.qcow2"], points=10),
    Op("snapshot -a (compat=0.10, 2 snapshots, compressed)", generations("g.qcow2", "0.10"),
       "snapshot -a s1 g.qcow2", ["g.qcow2"], points=10),
    Op("snapshot -d (compat=0.10, 2 snapshots, compressed)", generations("g.qcow2", "0.10"),
       "snapshot -d s1 g.qcow2", ["g.qcow2"], points=10),
    Op("snapshot -c (compat=1.1, 2 snapshots, compressed)", generations("g.qcow2", "1.1"),
       "snapshot -c s3 g.qcow2", ["g.qcow2"], points=10),
    Op("snapshot -a (compat=1.1, 2 snapshots, compressed)", generations("g.qcow2", "1.1"),
       "snapshot -a s1 g.qcow2", ["g.qcow2"], points=10),
    Op("snapshot -d (compat=1.1, 2 snapshots, compressed)", generations("g.qcow2", "1.1"),
       "snapshot -d s2 g.qcow2", ["g.qcow2"], points=10),
    Op("resize --shrink",
       ["qemu-img create -q -f qcow2 r.qcow2 2M", "qemu-io -c 'write -P 0x71 0 2M' r.qcow2"],
       "resize -f qcow2 --shrink r.qcow2 1M", ["r.qcow2"]),
    Op("check -r all", LEAKY, "check -r all leaky.qcow2", ["leaky.qcow2"]),
    Op("resize with persistent bitmaps (stored again at close)",
       ["qemu-img create -q -f qcow2 b.qcow2 1M", "qemu-io -c 'write -P 0x65 0 256k' b.qcow2",
        "qemu-img bitmap --add b.qcow2 bm0", "qemu-img bitmap --add -g 4k --disable b.qcow2 bm1",
        "qemu-io -c 'write -P 0x66 512k 64k' b.qcow2"],
       "resize -f qcow2 b.qcow2 2M", ["b.qcow2"]),
    Op("commit -b through a 3-level chain", chain3(), "commit -b base.qcow2 top.qcow2",
       ["top.qcow2", "base.qcow2:blocks"]),
    # amend
    # Not its snapshot's data: QEMU 7.2's qcow2_expand_zero_clusters writes
    # zeroes into a preallocated zero cluster that the snapshot shares (data
    # 0x22 at offset 0 of s1 reads as zeroes afterwards); qimg does the same.
    Op("amend compat=0.10 (zero clusters, backing, snapshot)", ZEROES, "amend -o compat=0.10 z.qcow2", ["z.qcow2"],
       snapshot_data=False),
    Op("amend compat=1.1 (v2 snapshot table rewritten)",
       small("a.qcow2", opts="-o compat=0.10") + ["qemu-img snapshot -c s1 a.qcow2",
                                                  "qemu-io -c 'write -P 0x73 0 64k' a.qcow2"],
       "amend -o compat=1.1 a.qcow2", ["a.qcow2"]),
    Op("amend refcount_bits=1", small("a.qcow2"), "amend -o refcount_bits=1 a.qcow2", ["a.qcow2"]),
    Op("amend refcount_bits=64 (512-byte clusters, snapshot)",
       small("a.qcow2", opts="-o cluster_size=512") + ["qemu-img snapshot -c s1 a.qcow2",
                                                       "qemu-io -c 'write -P 0x73 0 64k' a.qcow2"],
       "amend -o refcount_bits=64 a.qcow2", ["a.qcow2"]),
    Op("amend refcount_bits 1->16", small("a.qcow2", opts="-o refcount_bits=1"),
       "amend -o refcount_bits=16 a.qcow2", ["a.qcow2"]),
    Op("amend lazy_refcounts=on", small("a.qcow2"), "amend -o lazy_refcounts=on a.qcow2", ["a.qcow2"]),
    Op("amend lazy_refcounts=off", small("a.qcow2", opts="-o lazy_refcounts=on"),
       "amend -o lazy_refcounts=off a.qcow2", ["a.qcow2"]),
    Op("amend lazy_refcounts=off (dirty image repaired at open)",
       small("a.qcow2", opts="-o lazy_refcounts=on") +
       ["ulimit -c 0; qemu-io -c 'write -P 0x75 128k 256k' -c abort a.qcow2 || true"],
       "amend -o lazy_refcounts=off a.qcow2", ["a.qcow2"]),
    Op("amend size grow", small("a.qcow2"), "amend -o size=3M a.qcow2", ["a.qcow2"]),
    Op("amend size shrink", small("a.qcow2"), "amend -o size=512k a.qcow2", ["a.qcow2"]),
    Op("amend backing_file (refused after refcount_bits)",
       ["qemu-img create -q -f qcow2 base.qcow2 1M", "qemu-img create -q -f qcow2 other.qcow2 1M"] +
       ["qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 a.qcow2", "qemu-io -c 'write -P 0x74 0 256k' a.qcow2"],
       "amend -o refcount_bits=64,backing_file=other.qcow2 a.qcow2", ["a.qcow2"], fails=True),
    # resize
    Op("resize grow (L1 and refcount table grow)", small("r.qcow2", opts="-o cluster_size=512,refcount_bits=64"),
       "resize -f qcow2 r.qcow2 3M", ["r.qcow2"]),
    Op("resize grow preallocation=metadata", small("r.qcow2", opts="-o cluster_size=512,refcount_bits=64"),
       "resize -f qcow2 --preallocation=metadata r.qcow2 3M", ["r.qcow2"]),
    Op("resize grow preallocation=metadata (data past the file end)", small("r.qcow2"),
       "resize -f qcow2 --preallocation=metadata r.qcow2 3M", ["r.qcow2"]),
    Op("resize grow preallocation=falloc", small("r.qcow2", opts="-o cluster_size=512,refcount_bits=64"),
       "resize -f qcow2 --preallocation=falloc r.qcow2 3M", ["r.qcow2"]),
    Op("resize grow preallocation=full", small("r.qcow2"),
       "resize -f qcow2 --preallocation=full r.qcow2 3M", ["r.qcow2"]),
    Op("resize --shrink (snapshot)", small("r.qcow2", "2M", writes=("write -P 0x75 0 2M",)) +
       ["qemu-img snapshot -c s1 r.qcow2", "qemu-io -c 'write -P 0x76 1536k 256k' r.qcow2"],
       "resize -f qcow2 --shrink r.qcow2 1M", ["r.qcow2"]),
    Op("resize --shrink (snapshot, shared tables past the new L1 size)",
       small("r.qcow2", "1M", opts="-o cluster_size=1k", writes=("write -P 0x75 0 1M",)) +
       ["qemu-img snapshot -c s1 r.qcow2", "qemu-io -c 'write -P 0x76 640k 64k' r.qcow2"],
       "resize -f qcow2 --shrink r.qcow2 300k", ["r.qcow2"]),
    Op("resize grow (bitmaps)", BITMAPS, "resize -f qcow2 b.qcow2 2M", ["b.qcow2"], bitmaps=True),
    Op("resize --shrink (bitmaps)", BITMAPS, "resize -f qcow2 --shrink b.qcow2 576k", ["b.qcow2"], bitmaps=True),
    # bitmap
    Op("bitmap --add", BITMAPS, "bitmap --add -g 32k b.qcow2 b3", ["b.qcow2"], bitmaps=True),
    Op("bitmap --remove", BITMAPS, "bitmap --remove b.qcow2 b1", ["b.qcow2"], bitmaps=True),
    Op("bitmap --clear", BITMAPS, "bitmap --clear b.qcow2 b1", ["b.qcow2"], bitmaps=True),
    Op("bitmap --enable", BITMAPS, "bitmap --enable b.qcow2 b1", ["b.qcow2"], bitmaps=True),
    Op("bitmap --disable", BITMAPS, "bitmap --disable b.qcow2 b2", ["b.qcow2"], bitmaps=True),
    Op("bitmap --merge", BITMAPS, "bitmap --merge b2 b.qcow2 b1", ["b.qcow2"], bitmaps=True),
    Op("bitmap --merge -b another image",
       BITMAPS + ["qemu-img create -q -f qcow2 o.qcow2 1M", "qemu-img bitmap --add o.qcow2 ob",
                  "qemu-io -c 'write 832k 64k' o.qcow2"],
       "bitmap --merge ob -b o.qcow2 -F qcow2 b.qcow2 b2", ["b.qcow2", "o.qcow2"], bitmaps=True),
    Op("snapshot -d (bitmaps)",
       BITMAPS + ["qemu-img snapshot -c snap1 b.qcow2", "qemu-io -c 'write -P 0xa4 0 128k' b.qcow2"],
       "snapshot -d snap1 b.qcow2", ["b.qcow2"], bitmaps=True),
    Op("snapshot -c (bitmaps, 2 snapshots)", BITMAPS + ["qemu-img snapshot -c s1 b.qcow2",
                                                          "qemu-io -c 'write -c -P 0xa5 128k 64k' b.qcow2",
                                                          "qemu-img snapshot -c s2 b.qcow2",
                                                          "qemu-io -c 'write -P 0xa6 128k 64k' b.qcow2"],
       "snapshot -c s3 b.qcow2", ["b.qcow2"], bitmaps=True, points=10),
    # qemu-img refuses to apply a snapshot to an image with persistent
    # bitmaps, before any change.
    Op("snapshot -a (bitmaps: refused)", BITMAPS + ["qemu-img snapshot -c s1 b.qcow2",
                                                   "qemu-io -c 'write -P 0xa6 128k 64k' b.qcow2"],
       "snapshot -a s1 b.qcow2", ["b.qcow2"], bitmaps=True, fails=True, points=4),
    # check -r on damaged images
    Op("check -r leaks", LEAKY, "check -r leaks leaky.qcow2", ["leaky.qcow2"], repair=True),
    Op("check -r all (refcount too low, OFLAG_COPIED, leak)", DAMAGED, "check -r all d.qcow2", ["d.qcow2"], repair=True),
    Op("check -r all (refcount structure rebuilt)", NO_REFBLOCK, "check -r all n.qcow2", ["n.qcow2"], repair=True),
]

# Formats whose images the format-neutral operations below run on.
CRASH_FORMATS = ["qcow2", "raw", "vpc", "vmdk", "vhdx", "qcow", "qed", "vdi", "parallels"]
# Formats qemu-img 7.2 cannot resize ("Image format driver does not support
# resize"): no resize row for them.
NO_RESIZE_FORMATS = {"vpc", "vmdk", "vhdx", "qcow", "vdi", "parallels"}


def any_format_ops(fmt):
    """In-place operations every writable format has, for images of `fmt`
    made by the real tools (`fmt` is also the image name's extension)."""
    def image(name, size, *writes):
        return [f"qemu-img create -q -f {fmt} {name} {size}",
                f"qemu-io -f {fmt} " + " ".join(f"-c '{w}'" for w in writes) + f" {name}"]
    ops = [
        Op(f"convert -n into an existing {fmt}",
           image(f"t.{fmt}", "1M", "write -P 0x81 0 512k") +
           ["qemu-img create -q -f raw s.raw 1M", "qemu-io -f raw -c 'write -P 0x82 128k 640k' s.raw"],
           f"convert -n -f raw -O {fmt} s.raw t.{fmt}", [f"t.{fmt}:blocks"], fmt=fmt),
        Op(f"guest writes (bench -w, {fmt})", image(f"w.{fmt}", "1M", "write -P 0x91 0 256k"),
           f"bench -w -c 12 -d 1 -s 64k -S 80k --pattern=0x92 -f {fmt} w.{fmt}", [f"w.{fmt}:blocks"],
           unit=16384, fmt=fmt),
    ]
    if fmt not in NO_RESIZE_FORMATS:
        ops.append(Op(f"resize grow ({fmt})", image(f"r.{fmt}", "1M", "write -P 0x93 0 1M"),
                      f"resize -f {fmt} r.{fmt} 3M", [f"r.{fmt}"], fmt=fmt))
    return ops


# The qcow2 rows that were written for qcow2 alone come first, as before.
OPERATIONS += [op for fmt in CRASH_FORMATS for op in any_format_ops(fmt)]

# vpc: new blocks appended behind the ones qemu-io made (each allocation
# moves the footer and publishes a BAT entry) and rewrites in place.
OPERATIONS += [
    Op("convert -n allocating vpc blocks",
       ["qemu-img create -q -f vpc t.vpc 8M", "qemu-io -f vpc -c 'write -P 0x81 0 512k' t.vpc",
        "qemu-img create -q -f raw s.raw 8M",
        "qemu-io -f raw -c 'write -P 0x82 256k 3M' -c 'write -P 0x83 6M 100k' s.raw"],
       "convert -n -f raw -O vpc s.raw t.vpc", ["t.vpc:blocks"], fmt="vpc"),
    # vhdx: 1 MiB blocks, so the copy allocates several (file extended,
    # data written and flushed, then the BAT entry) and rewrites one.
    Op("convert -n allocating vhdx blocks",
       ["qemu-img create -q -f vhdx -o block_size=1M t.vhdx 8M",
        "qemu-io -f vhdx -c 'write -P 0x81 0 512k' t.vhdx",
        "qemu-img create -q -f raw s.raw 8M",
        "qemu-io -f raw -c 'write -P 0x82 256k 3M' -c 'write -P 0x83 6M 100k' s.raw"],
       "convert -n -f raw -O vhdx s.raw t.vhdx", ["t.vhdx:blocks"], fmt="vhdx"),
]

# qcow2 with encrypt.format=luks (img_arg: "luks-" images are opened with
# their secret): encrypted clusters allocated and copy-on-written over data
# qemu-io wrote, ordered as for a plain image.
OPERATIONS += [
    Op("convert -n into a LUKS-encrypted qcow2",
       ["qemu-img create -q -f qcow2 " + SECRET_OBJECT + " -o encrypt.format=luks,encrypt.key-secret=sec0,"
        "encrypt.iter-time=10,cluster_size=4096 luks-t.qcow2 2M",
        "qemu-io " + SECRET_OBJECT + " --image-opts driver=qcow2,file.filename=luks-t.qcow2,encrypt.key-secret=sec0 "
        "-c 'write -P 0x81 0 512k'",
        "qemu-img create -q -f raw s.raw 2M",
        "qemu-io -f raw -c 'write -P 0x82 256k 1M' -c 'write -P 0x83 1800k 3k' s.raw"],
       "convert -n " + SECRET_OBJECT + " --target-image-opts s.raw "
       "driver=qcow2,file.filename=luks-t.qcow2,encrypt.key-secret=sec0", ["luks-t.qcow2:blocks"], unit=4096),
]

# vmdk: a sparse file whose first two directory entries are 0 (as VMware
# leaves the tables of empty regions out; a 64 MiB qemu-img image has its
# redundant directory at sector 21 and its directory at sector 30): convert
# -n appends zeroed tables, flushes, points both directories at them, then
# allocates grains (data flushed before each table entry).
VMDK_NO_GT = ["qemu-img create -q -f vmdk t.vmdk 64M",
              "python3 -c 'f=open(\"t.vmdk\",\"r+b\")\nfor s in (21, 30): f.seek(s * 512); f.write(bytes(8))'"]
OPERATIONS += [
    Op("convert -n allocating vmdk grain tables",
       VMDK_NO_GT + ["qemu-img create -q -f raw s.raw 64M",
                     "qemu-io -f raw -c 'write -P 0x82 256k 1M' -c 'write -P 0x83 40M 100k' s.raw"],
       "convert -n -f raw -O vmdk s.raw t.vmdk", ["t.vmdk:blocks"], fmt="vmdk"),
    # A finished streamOptimized file (only qimg writes one: "$QIMG" in the
    # setup) gets new grains, one of them where the trailer's directory has
    # no table: the header is pointed back at the directory in use before
    # the first grain goes after the old trailer, and the copy ends with a
    # new trailer (QEMU 7.2 appends after the end-of-stream marker and the
    # file no longer opens).
    Op("convert -n into a finished streamOptimized vmdk",
       ["qemu-img create -q -f raw a.raw 64M", "qemu-io -f raw -c 'write -P 0x81 0 512k' a.raw",
        '"$QIMG" convert -f raw -O vmdk -o subformat=streamOptimized a.raw t.vmdk',
        "qemu-img create -q -f raw s.raw 64M",
        "qemu-io -f raw -c 'write -P 0x82 1M 256k' -c 'write -P 0x83 40M 128k' s.raw"],
       "convert -n --target-is-zero -f raw -O vmdk s.raw t.vmdk", ["t.vmdk:blocks"], fmt="vmdk"),
]

# vdi: new 1 MiB blocks appended behind the ones qemu-io made (each flush
# flushes the new blocks, then publishes the header count and the map
# sectors in one write), writes in place into a static image, and check -r,
# which qemu-img refuses for vdi before touching anything.
OPERATIONS += [
    Op("convert -n allocating vdi blocks",
       ["qemu-img create -q -f vdi t.vdi 8M", "qemu-io -f vdi -c 'write -P 0x81 1M 512k' t.vdi",
        "qemu-img create -q -f raw s.raw 8M",
        "qemu-io -f raw -c 'write -P 0x82 256k 3M' -c 'write -P 0x83 6M 100k' s.raw"],
       "convert -n -f raw -O vdi s.raw t.vdi", ["t.vdi:blocks"], fmt="vdi"),
    Op("guest writes (bench -w, static vdi)",
       ["qemu-img create -q -f vdi -o static=on w.vdi 3M", "qemu-io -f vdi -c 'write -P 0x91 0 256k' w.vdi"],
       "bench -w -c 12 -d 1 -s 64k -S 200k --pattern=0x92 -f vdi w.vdi", ["w.vdi:blocks"], unit=16384, fmt="vdi"),
    Op("check -r all (vdi: refused)", ["qemu-img create -q -f vdi c.vdi 2M", "qemu-io -f vdi -c 'write -P 0x71 0 64k' c.vdi"],
       "check -r all c.vdi", ["c.vdi"], fails=True, points=4, fmt="vdi"),
]

# parallels: small clusters allocated by convert -n (each cluster flushed
# before its BAT entry), and check -r all on an image left in use with space
# leaked behind its data. (A BAT entry past the end of the file is left out
# here: QEMU's own repair of it leaves the file extended to the old data end
# when the image closes, which its next check reports as leaked; qimg does
# the same, byte for byte, tests/interop/cases/parallels.txt.)
PRL_DAMAGED = ["qemu-img create -q -f parallels -o cluster_size=64k d.parallels 1M",
               "qemu-io -f parallels -c 'write -P 0x61 0 64k' -c 'write -P 0x62 256k 64k' d.parallels",
               "python3 -c 'import struct; f=open(\"d.parallels\",\"r+b\"); f.seek(44); "
               "f.write(struct.pack(\"<I\", 0x746F6E59))'",
               "truncate -s 400k d.parallels"]
OPERATIONS += [
    Op("convert -n allocating parallels clusters",
       ["qemu-img create -q -f parallels -o cluster_size=64k t.parallels 4M",
        "qemu-io -f parallels -c 'write -P 0x81 1M 100k' t.parallels",
        "qemu-img create -q -f raw s.raw 4M",
        "qemu-io -f raw -c 'write -P 0x82 256k 1M' -c 'write -P 0x83 3M 100k' s.raw"],
       "convert -n -f raw -O parallels s.raw t.parallels", ["t.parallels:blocks"], fmt="parallels"),
    Op("check -r all (parallels: in use, leak)", PRL_DAMAGED, "check -r all d.parallels",
       ["d.parallels"], repair=True, fmt="parallels"),
]

# qcow: L2 tables and clusters appended, their entries published at the
# flush (over qemu-made plain and compressed clusters), and commit, which
# writes the base and then empties the top (make_empty).
OPERATIONS += [
    Op("convert -n over compressed qcow clusters",
       ["qemu-img create -q -f qcow t.qcow 8M",
        "qemu-io -f qcow -c 'write -P 0x81 0 512k' -c 'write -c -P 0x84 1M 4k' -c 'write -c -P 0x85 1028k 4k' t.qcow",
        "qemu-img create -q -f raw s.raw 8M",
        "qemu-io -f raw -c 'write -P 0x82 256k 3M' -c 'write -P 0x83 6M 100k' s.raw"],
       "convert -n -f raw -O qcow s.raw t.qcow", ["t.qcow:blocks"], fmt="qcow"),
    Op("commit qcow into a qcow base",
       ["qemu-img create -q -f qcow b.qcow 4M", "qemu-io -f qcow -c 'write -P 0x21 0 3M' b.qcow",
        "qemu-img create -q -f qcow -b b.qcow -F qcow t.qcow",
        "qemu-io -f qcow -c 'write -P 0x42 1M 512k' -c 'write -P 0x43 3584k 10k' t.qcow"],
       "commit -f qcow t.qcow", ["b.qcow:blocks", "t.qcow"], fmt="qcow"),
]

# luks: keyslot changes (key material written and flushed before the header
# that activates a slot; random data over the material before the header
# clears one) and guest writes. The real qemu-img may fail its PBKDF2
# benchmark on a busy machine ("Unable to get accurate CPU usage"): retried.
LUKS_SECRETS = {"sec0": "pw0", "sec1": "pw1", "sec2": "pw2"}
LUKS_OBJECTS = " ".join(f"--object secret,id={i},data={d}" for i, d in LUKS_SECRETS.items())


def luks_retry(cmd):
    return f"for i in 1 2 3 4 5 6; do {cmd} 2>err && exit 0; grep -q 'accurate CPU' err || break; done; cat err; exit 1"


def luks_image(name, size, *slots):
    """A luks file opened by sec0 (slot 0) with pattern 0x61 written, plus
    (slot, secret id) keyslots added by the real qemu-img."""
    opts = f"{LUKS_OBJECTS} --image-opts driver=luks,key-secret=sec0,file.filename={name}"
    return ([luks_retry(f"qemu-img create -q -f luks {LUKS_OBJECTS} -o key-secret=sec0,iter-time=10 {name} {size}"),
             f"qemu-io {opts} -c 'write -P 0x61 0 300k' -c 'write -P 0x62 700k 100k' >/dev/null"] +
            [luks_retry(f"qemu-img amend {opts} -o state=active,keyslot={n},new-secret={sid},iter-time=10")
             for n, sid in slots])


def luks_amend(name, opts):
    return f"amend {LUKS_OBJECTS} --image-opts driver=luks,key-secret=sec0,file.filename={name} -o {opts}"


# Keyslot changes leave the guest content alone: before == after, and every
# kept secret must read it at any kill; secrets ids in gone are erased.
OPERATIONS += [
    Op("luks amend: add a keyslot", luks_image("a.luks", "1M"),
       luks_amend("a.luks", "state=active,new-secret=sec1,iter-time=10"), ["a.luks"], fmt="luks",
       snapshot_data=False, secrets=LUKS_SECRETS, keys=["sec0"]),
    Op("luks amend: erase the keyslots of an old secret", luks_image("e.luks", "1M", (1, "sec1"), (2, "sec2"), (5, "sec1")),
       luks_amend("e.luks", "state=inactive,old-secret=sec1"), ["e.luks"], fmt="luks",
       snapshot_data=False, secrets=LUKS_SECRETS, keys=["sec0", "sec2"], gone=["sec1"]),
    Op("luks amend: erase keyslot 0", luks_image("k.luks", "1M", (3, "sec2")),
       luks_amend("k.luks", "state=inactive,keyslot=0"), ["k.luks"], fmt="luks",
       snapshot_data=False, secrets=LUKS_SECRETS, keys=["sec2"], gone=["sec0"]),
    Op("luks: guest writes (convert -n into a luks file)",
       luks_image("w.luks", "2M", (4, "sec1")) +
       ["qemu-img create -q -f raw s.raw 2M", "qemu-io -f raw -c 'write -P 0x82 100k 1200k' s.raw"],
       f"convert -n {LUKS_OBJECTS} -f raw s.raw --target-image-opts driver=luks,key-secret=sec1,file.filename=w.luks",
       ["w.luks:blocks"], unit=512, fmt="luks", snapshot_data=False, secrets=LUKS_SECRETS, keys=["sec0", "sec1"]),
]

# The same key slot changes inside a qcow2 (encrypt.*): the slots live in
# the crypto header clusters, written through the same ordered steps.
QCOW2_LUKS_OPTS = f"{LUKS_OBJECTS} --image-opts driver=qcow2,encrypt.key-secret=sec0,file.filename=q.qcow2"
OPERATIONS += [
    Op("qcow2 amend: erase the LUKS keyslot of an old secret, add another",
       [luks_retry(f"qemu-img create -q -f qcow2 {LUKS_OBJECTS} -o encrypt.format=luks,encrypt.key-secret=sec0,"
                   "encrypt.iter-time=10,cluster_size=4096 q.qcow2 1M"),
        f"qemu-io {QCOW2_LUKS_OPTS} -c 'write -P 0x61 0 300k' >/dev/null",
        luks_retry(f"qemu-img amend {QCOW2_LUKS_OPTS} -o encrypt.state=active,encrypt.keyslot=3,"
                   "encrypt.new-secret=sec1,encrypt.iter-time=10")],
       f"amend {QCOW2_LUKS_OPTS} -o encrypt.state=inactive,encrypt.old-secret=sec1", ["q.qcow2"], fmt="qcow2",
       snapshot_data=False, secrets=LUKS_SECRETS, keys=["sec0"], gone=["sec1"]),
    Op("qcow2 amend: add a LUKS keyslot",
       [luks_retry(f"qemu-img create -q -f qcow2 {LUKS_OBJECTS} -o encrypt.format=luks,encrypt.key-secret=sec0,"
                   "encrypt.iter-time=10,cluster_size=4096 q.qcow2 1M"),
        f"qemu-io {QCOW2_LUKS_OPTS} -c 'write -P 0x61 0 300k' >/dev/null"],
       f"amend {QCOW2_LUKS_OPTS} -o encrypt.state=active,encrypt.new-secret=sec2,encrypt.iter-time=10", ["q.qcow2"],
       fmt="qcow2", snapshot_data=False, secrets=LUKS_SECRETS, keys=["sec0"]),
]

QED_DAMAGED = [
    "qemu-img create -q -f qed -o cluster_size=4k d.qed 1M",
    "qemu-io -f qed -c 'write -P 0x11 0 8k' -c 'write -P 0x12 512k 64k' d.qed",
    "python3 -c 'import struct; f=open(\"d.qed\",\"r+b\"); f.seek(16); f.write(struct.pack(\"<Q\",2))'",
]

# qed: clusters and L2 tables appended, entries published at the flush;
# zero clusters; rebase (a header rewrite) and resize (the same).
OPERATIONS += [
    Op("convert -n over qed zero clusters and a backing file",
       ["qemu-img create -q -f qed b.qed 8M", "qemu-io -f qed -c 'write -P 0x71 0 6M' b.qed",
        "qemu-img create -q -f qed -b b.qed -F qed t.qed",
        "qemu-io -f qed -c 'write -P 0x81 0 512k' -c 'write -z 1M 256k' t.qed",
        "qemu-img create -q -f raw s.raw 8M",
        "qemu-io -f raw -c 'write -P 0x82 256k 3M' -c 'write -P 0x83 6M 100k' s.raw"],
       "convert -n -f raw -O qed s.raw t.qed", ["t.qed:blocks"], fmt="qed"),
    Op("rebase qed onto another base",
       ["qemu-img create -q -f qed b.qed 4M", "qemu-io -f qed -c 'write -P 0x21 0 3M' b.qed",
        "qemu-img create -q -f qed n.qed 4M", "qemu-io -f qed -c 'write -P 0x22 1M 2M' n.qed",
        "qemu-img create -q -f qed -b b.qed -F qed t.qed",
        "qemu-io -f qed -c 'write -P 0x42 1M 512k' t.qed"],
       "rebase -f qed -b n.qed -F qed t.qed", ["t.qed"], fmt="qed"),
    # QEMU's need-check state (a killed QEMU writer): cleared by check -r,
    # and by a read-write open. (Leaks are never repaired by qed's check, and
    # an invalid entry makes the image unreadable before the operation:
    # cases/qed.txt covers both.)
    Op("check -r all (qed: need-check)", QED_DAMAGED, "check -r all -f qed d.qed", ["d.qed"],
       repair=True, fmt="qed"),
    Op("repair on a read-write open (qed need-check), then resize", QED_DAMAGED, "resize -f qed d.qed 2M",
       ["d.qed"], repair=True, fmt="qed"),
]


def sh(cmd, cwd, env=None):
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tools_env(tmp):
    """PATH with the real qemu-img first (setup lines)."""
    env = dict(os.environ, LC_ALL="C")
    for k in ("QIMG_FAULT_AFTER", "QIMG_FAULT_MODE", "QIMG_FAULT_LOG"):
        env.pop(k, None)
    return env


def run_qimg(qimg, op, cwd, extra_env):
    env = tools_env(cwd)
    env.update(extra_env)
    return subprocess.run([qimg] + shlex.split(op.run), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def img_arg(image, fmt=None):
    """The real tools' arguments that name `image` (of format fmt, or probed)."""
    if os.path.basename(image).startswith(SECRET_IMAGE_PREFIX):
        spec = {"driver": fmt or "qcow2", "file": {"filename": image}, "encrypt.key-secret": "sec0"}
        return f"{SECRET_OBJECT} " + shlex.quote("json:" + json.dumps(spec))
    return (f"-f {fmt} " if fmt else "") + shlex.quote(image)


def image_arg(op, img, key=None):
    """How the real tools name a checked image: -f fmt FILE, or for an
    encrypted one its secret objects and a json: filename with key-secret."""
    if not op.secrets:
        return img_arg(img, op.fmt)
    objs = " ".join(f"--object secret,id={i},data={d}" for i, d in op.secrets.items())
    member = "key-secret" if op.fmt == "luks" else "encrypt.key-secret"  # luks file or qcow2 with LUKS
    spec = {"driver": op.fmt, member: key or op.keys[0], "file": {"filename": img}}
    return f"{objs} {shlex.quote('json:' + json.dumps(spec))}"


def flat_copy_op(op, image, cwd, out, key=None):
    """flat_copy through image_arg(); None or why not."""
    r = sh(f"{QEMU_IMG} convert -U {image_arg(op, image, key)} -O raw {shlex.quote(out)}", cwd)
    return r.stdout if r.returncode != 0 else None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def content_ok(state, before, after, unit):
    if state == before or state == after:
        return True
    if not unit:
        return False
    size = max(len(state), len(before), len(after))
    pad = lambda b: b + bytes(size - len(b))
    s, b, a = pad(state), pad(before), pad(after)
    return all(s[i:i + unit] in (b[i:i + unit], a[i:i + unit]) for i in range(0, size, unit))


def is_dirty_qcow2(path):
    """The qcow2 v3 dirty bit: refcounts may be stale, repaired on the next read-write open."""
    with open(path, "rb") as f:
        head = f.read(80)
    return (len(head) == 80 and head[:4] == b"QFI\xfb" and int.from_bytes(head[4:8], "big") >= 3
            and int.from_bytes(head[72:80], "big") & 1)


def bitmap_ranges(img, names, cwd):
    """{name: dirty ranges} as QEMU itself reads the bitmaps (the way of
    tests/interop/tools/bitmap-ranges, one server for all of them): the real
    qemu-nbd exports them, the real qemu-img map reads each through
    x-dirty-bitmap, where dirty ranges show as "data": false. A string if
    one cannot be read."""
    sock = os.path.join(os.path.abspath(cwd), "nbd.sock")
    cmd = [QEMU_NBD, "-r", "-t", "-k", sock, "-f", "qcow2"] + [a for n in names for a in ("-B", n)] + [img]
    srv = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(1000):
            if os.path.exists(sock) or srv.poll() is not None:
                break
            time.sleep(0.005)
        out = {}
        for n in names:
            opts = f"driver=nbd,server.type=unix,server.path={sock},x-dirty-bitmap=qemu:dirty-bitmap:{n}"
            for _ in range(100):
                r = subprocess.run([QEMU_IMG, "map", "--output=json", "--image-opts", opts], cwd=cwd,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
                # The socket file exists from bind(), before qemu-nbd listens:
                # on a busy machine the first connection may be refused.
                if "Connection refused" not in r.stdout or srv.poll() is not None:
                    break
                time.sleep(0.02)
            if r.returncode != 0:
                srv.kill()
                return f"the real qemu-nbd cannot export bitmap {n} of {img}:\n{r.stdout}\n{srv.communicate()[0]}"
            out[n] = [(e["start"], e["length"]) for e in json.loads(r.stdout) if not e["data"]]
        return out
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()
        if os.path.exists(sock):
            os.unlink(sock)


def bitmap_state(img, cwd):
    """{name: (flags, granularity, dirty ranges)} as the real tools read the
    persistent bitmaps; an in-use bitmap (inconsistent to QEMU) has no ranges."""
    r = sh(f"{QEMU_IMG} info -U --output=json -f qcow2 {shlex.quote(img)}", cwd)
    if r.returncode != 0:
        return f"qemu-img info {img} failed:\n{r.stdout}"
    listed = json.loads(r.stdout).get("format-specific", {}).get("data", {}).get("bitmaps", [])
    readable = [b["name"] for b in listed if "in-use" not in b["flags"]]
    ranges = bitmap_ranges(img, readable, cwd) if readable else {}
    if isinstance(ranges, str):
        return ranges
    return {b["name"]: (tuple(sorted(b["flags"])), b["granularity"], ranges.get(b["name"])) for b in listed}


def bitmaps_ok(img, state, before, after):
    """None if each bitmap is as before, as after, or marked in-use; else why not."""
    for name in sorted(set(state) | set(before) | set(after)):
        s = state.get(name)
        if s == before.get(name) or s == after.get(name):
            continue
        if s is not None and "in-use" in s[0] and (name in before or name in after):
            continue  # QEMU refuses to use it: inconsistent, not silently wrong
        return f"{img}: bitmap {name} is {s}, neither before ({before.get(name)}) nor after ({after.get(name)})"
    return None


def repaired(img, cwd, fmt="qcow2"):
    """Repairs a copy of img with the real qemu-img check -r all; None if clean afterwards, else why not."""
    shutil.copy(os.path.join(cwd, img), os.path.join(cwd, img + ".repaired"))
    rep = sh(f"{QEMU_IMG} check -r all {img_arg(img + '.repaired', fmt)}", cwd)
    again = sh(f"{QEMU_IMG} check {img_arg(img + '.repaired', fmt)}", cwd)
    if again.returncode != 0:
        return f"{img} is not repaired by qemu-img check -r all:\n{rep.stdout}\n{again.stdout}"
    return None


def parallels_left_in_use_only(check_output):
    """True if the only corruption `qemu-img check` reports on a parallels
    image is its in-use flag ("image was not closed correctly"), which every
    killed read-write user leaves (QEMU's as well: the flag is set at open
    and cleared at close), with at most space leaked behind it."""
    errors = [l for l in check_output.splitlines() if l.startswith("ERROR")]
    allowed = [l for l in errors if l == "ERROR image was not closed correctly"
               or l.startswith("ERROR space leaked at the end of the image")]
    return "ERROR image was not closed correctly" in errors and len(allowed) == len(errors)


def qcow2_version(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return int.from_bytes(head[4:8], "big") if head[:4] == b"QFI\xfb" else 0


def copied_flags_missing_only(check_output):
    """True if every error `qemu-img check` reports is an OFLAG_COPIED flag
    missing on a cluster whose refcount is 1: the harmless direction (the
    next write copies the cluster instead of writing in place). The flag set
    on a shared cluster (refcount=2 and more) is the dangerous one."""
    errors = [l for l in check_output.splitlines() if l.startswith("ERROR")]
    missing = [l for l in errors if re.fullmatch(r"ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1", l)]
    count = re.search(r"^(\d+) errors were found on the image", check_output, re.M)
    return bool(missing) and len(missing) == len(errors) and count is not None and int(count[1]) == len(errors)


def reopened(img, cwd):
    """QEMU's repair of a dirty v3 image: a copy opened read-write by the real
    qemu-io (qcow2_do_open repairs it) must then check clean or with leaks
    only. Returns (why not, None) or (None, the repaired copy)."""
    copy = img + ".reopened"
    shutil.copy(os.path.join(cwd, img), os.path.join(cwd, copy))
    r = sh(f"{QEMU_IO} -c flush {img_arg(copy)}", cwd)
    if r.returncode != 0 or "Could not open" in r.stdout:
        return f"{img}: the real qemu-io cannot open it read-write:\n{r.stdout}", None
    again = sh(f"{QEMU_IMG} check {img_arg(copy)}", cwd)
    if again.returncode not in (0, 3):
        return f"{img} is not repaired by a read-write open of qemu-io:\n{r.stdout}\n{again.stdout}", None
    return None, copy


def snapshot_contents(img, cwd):
    """{(id, name): guest content} of every internal snapshot as the real
    qemu-img reads it (convert -l snapshot.id=N); a string if one cannot be read."""
    r = sh(f"{QEMU_IMG} info -U --output=json {img_arg(img)}", cwd)
    if r.returncode != 0:
        return f"qemu-img info {img} failed:\n{r.stdout}"
    out = {}
    for sn in json.loads(r.stdout).get("snapshots", []):
        raw = os.path.join(cwd, f"{img}.sn{sn['id']}.raw")
        c = sh(f"{QEMU_IMG} convert -U -l snapshot.id={sn['id']} -O raw {img_arg(img)} {shlex.quote(raw)}", cwd)
        if c.returncode != 0:
            return f"cannot read snapshot {sn['id']} ({sn['name']}) of {img}:\n{c.stdout}"
        out[(sn["id"], sn["name"])] = read(raw)
        os.unlink(raw)
    return out


def same_prefix(a, b):
    """Snapshots read through `convert -l` have the image's current size (as
    in QEMU's bdrv_snapshot_load_tmp), not their own: after a resize only the
    common part can be compared."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def snapshots_ok(img, state, before, after):
    """None if the snapshot list is the before or the after one and every
    snapshot reads as it did (a snapshot never changes); else why not."""
    if set(state) != set(before) and set(state) != set(after):
        return f"{img}: snapshots {sorted(state)}, neither before ({sorted(before)}) nor after ({sorted(after)})"
    for key, data in state.items():
        if not any(same_prefix(data, ref[key]) for ref in (before, after) if key in ref):
            return f"{img}: snapshot {key} does not read as it did"
    return None


def verify(op, cwd, refs, bm_refs, sn_refs, repair=False):
    """None if every checked image is consistent and reads as before or after; else why not."""
    for img in op.images:
        read_from = img
        if repair:
            # An interrupted repair: whatever damage is left, the real tools
            # must still repair it, and the repaired image reads as before.
            why = repaired(img, cwd, op.fmt)
            if why:
                return why
            read_from = img + ".repaired"
        else:
            chk = sh(f"{QEMU_IMG} check -U {image_arg(op, img)}", cwd)
            # 0: clean, 3: leaks only, 63: the format has no checks (raw).
            # 2: corruption, 1: could not check.
            if op.fmt == "qcow2" and is_dirty_qcow2(os.path.join(cwd, img)):
                # Marked dirty: QEMU repairs it when it opens it read-write
                # (qcow2_do_open), so the repair must be complete, and the
                # repaired image is what the guest then reads.
                why, read_from = reopened(img, cwd)
                if why:
                    return "dirty " + why
            elif (chk.returncode == 2 and qcow2_version(os.path.join(cwd, img)) == 2
                  and copied_flags_missing_only(chk.stdout)):
                # compat=0.10 has no dirty bit; a missing OFLAG_COPIED only
                # costs a copy on the next write, and check -r all sets it.
                why = repaired(img, cwd)
                if why:
                    return why
                read_from = img + ".repaired"
            elif op.fmt == "parallels" and chk.returncode == 2 and parallels_left_in_use_only(chk.stdout):
                # Left in use by the kill: QEMU opens it only for check,
                # and check -r all must repair it completely.
                why = repaired(img, cwd, "parallels")
                if why:
                    return why
                read_from = img + ".repaired"
            elif chk.returncode not in (0, 3, 63):
                return f"qemu-img check {img} exited {chk.returncode}:\n{chk.stdout}"
        for key in op.keys or [None]:
            err = flat_copy_op(op, read_from, cwd, img + ".state.raw", key)
            if err:
                return f"cannot read {img}" + (f" with secret {key}" if key else "") + f": {err}"
            state = read(os.path.join(cwd, img + ".state.raw"))
            before, after = refs[img]
            if not content_ok(state, before, after, op.unit if img in op.by_blocks else 0):
                return f"{img}: guest content is neither the before nor the after state"
        if op.snapshot_data:
            sns = snapshot_contents(read_from, cwd)
            if isinstance(sns, str):
                return sns
            why = snapshots_ok(img, sns, *sn_refs[img])
            if why:
                return why
        if op.bitmaps:
            bm = bitmap_state(img, cwd)
            if isinstance(bm, str):
                return bm
            why = bitmaps_ok(img, bm, *bm_refs[img])
            if why:
                return why
    return None


def spread(n, count):
    if n <= count:
        return list(range(1, n + 1))
    return sorted({1 + round(i * (n - 1) / (count - 1)) for i in range(count)})


def test_op(qimg, op, root, max_points=MAX_POINTS):
    tmpl = os.path.join(root, "template")
    os.makedirs(tmpl)
    env = tools_env(tmpl)
    for line in op.setup:
        r = sh(line, tmpl, env)
        # qemu-img 7.2's LUKS PBKDF calibration gives up at random on a busy
        # VM before it writes anything: such a setup line is run again.
        for _ in range(5):
            if r.returncode == 0 or "Unable to get accurate CPU usage" not in (r.stdout or ""):
                break
            r = sh(line, tmpl, env)
        if r.returncode != 0:
            return [f"setup failed: {line}\n{r.stdout}"]
    refs, bm_refs, sn_refs = {}, {}, {}
    for img in op.images:
        if flat_copy_op(op, img, tmpl, img + ".before.raw"):
            return [f"cannot read {img} before the operation"]
        sn_refs[img] = (snapshot_contents(img, tmpl) if op.snapshot_data else {},)
        if isinstance(sn_refs[img][0], str):
            return [sn_refs[img][0]]
        if op.bitmaps:
            bm_refs[img] = (bitmap_state(img, tmpl),)
            if isinstance(bm_refs[img][0], str):
                return [bm_refs[img][0]]
    # The uninterrupted run: its event count and the after state.
    full = os.path.join(root, "full")
    shutil.copytree(tmpl, full)
    log = os.path.join(root, "events.log")
    r = run_qimg(qimg, op, full, {"QIMG_FAULT_LOG": log})
    if (r.returncode != 0) != op.fails:
        return [f"the operation itself exited {r.returncode}: {r.stderr}"]
    events = read(log).decode().splitlines() if os.path.exists(log) else []
    why = None
    for img in op.images:
        if flat_copy_op(op, img, full, img + ".after.raw"):
            return [f"cannot read {img} after the operation"]
        for key in op.gone:
            if not flat_copy_op(op, img, full, img + ".gone.raw", key):
                return [f"after an uninterrupted run: {img} still opens with secret {key}"]
        refs[img] = (read(os.path.join(tmpl, img + ".before.raw")), read(os.path.join(full, img + ".after.raw")))
        sn_after = snapshot_contents(img, full) if op.snapshot_data else {}
        if isinstance(sn_after, str):
            return [sn_after]
        sn_refs[img] += (sn_after,)
        changed = [k for k in sn_after if k in sn_refs[img][0] and not same_prefix(sn_after[k], sn_refs[img][0][k])]
        if changed:
            return [f"after an uninterrupted run: {img}: snapshots {changed} do not read as before"]
        if op.bitmaps:
            after = bitmap_state(img, full)
            if isinstance(after, str):
                return [after]
            if any("in-use" in b[0] for b in after.values()):
                return [f"after an uninterrupted run: {img} has in-use bitmaps: {after}"]
            bm_refs[img] += (after,)
    why = verify(op, full, refs, bm_refs, sn_refs)
    if why:
        return [f"after an uninterrupted run: {why}"]
    failures = []
    points = [(k, "kill") for k in spread(len(events), min(max_points, op.points) if max_points else len(events))]
    points += [(k, "error") for k in spread(len(events), ERROR_POINTS if max_points else len(events))]
    for k, mode in points:
        d = os.path.join(root, f"{mode}-{k}")
        shutil.copytree(tmpl, d)
        fenv = {"QIMG_FAULT_AFTER": str(k)}
        if mode == "error":
            fenv["QIMG_FAULT_MODE"] = "error"
        run_qimg(qimg, op, d, fenv)
        why = verify(op, d, refs, bm_refs, sn_refs, op.repair)
        if why:
            failures.append(f"{mode} at event {k}/{len(events)} ({events[k - 1]}): {why}")
        else:
            shutil.rmtree(d)
    return failures, len(events), len(points)


def sample_ops(ops, spec):
    """CRASH_SAMPLE="N:SALT" keeps about one operation in N: those whose
    name, hashed with SALT, falls in the first of N buckets (as the interop
    runner's QIMG_INTEROP_SAMPLE). The sanitizer stage of CI runs a sample,
    salted with the commit: it looks for memory errors on the fault paths,
    the normal stage checks every operation's orderings. Empty: all."""
    n_text, _, salt = spec.partition(":")
    try:
        n = int(n_text) if n_text else 1
    except ValueError:
        n = 1
    if n <= 1:
        return ops
    keep = [o for o in ops
            if int.from_bytes(hashlib.sha256(f"{salt}\0{o.name}".encode()).digest()[:4], "big") % n == 0]
    skipped = len(ops) - len(keep)
    if skipped:
        print(f"CRASH_SAMPLE={spec}: {len(keep)} of {len(ops)} operations run")
    return keep or ops[:1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qimg", required=True)
    ap.add_argument("-k", default="", help="only operations whose name contains this")
    ap.add_argument("-j", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--points", type=int, default=int(os.environ.get("CRASH_POINTS", MAX_POINTS)),
                    help=f"kill points per operation (default $CRASH_POINTS or {MAX_POINTS}; 0: kill and fail at every event, for a thorough local run)")
    a = ap.parse_args()
    qimg = os.path.abspath(a.qimg)
    os.environ["QIMG"] = qimg  # for setup lines (tools_env copies the environment)
    ops = sample_ops([o for o in OPERATIONS if a.k in o.name], os.environ.get("CRASH_SAMPLE", ""))
    root = tempfile.mkdtemp(prefix="qimg-crash-")
    start = time.time()
    bad = 0
    with concurrent.futures.ThreadPoolExecutor(a.j) as pool:
        futs = {pool.submit(test_op, qimg, o, os.path.join(root, f"{i:02d}"), a.points): o for i, o in enumerate(ops)}
        for fut in concurrent.futures.as_completed(futs):
            o = futs[fut]
            res = fut.result()
            if isinstance(res, list):
                res = (res, 0, 0)
            failures, n, points = res
            if failures:
                bad += 1
                print(f"FAIL {o.name} ({n} events, {points} fault points)")
                for f in failures[:5]:
                    print("  " + f.replace("\n", "\n    "))
                if len(failures) > 5:
                    print(f"  ... and {len(failures) - 5} more")
            else:
                print(f"PASS {o.name} ({n} events, {points} fault points)")
            sys.stdout.flush()
    if a.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{len(ops) - bad} passed, {bad} failed in {time.time() - start:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
