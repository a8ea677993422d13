#!/usr/bin/env python3
"""Damages a qcow2 image (16-bit refcounts, no extended L2) in the ways the
real `qemu-img check -r all` repairs, for the crash test's repair cases.

  qcow2_poke.py IMAGE refcount N VALUE   refcount of the cluster that entry N
                                          of the first active L2 table maps
  qcow2_poke.py IMAGE uncopy N           clears OFLAG_COPIED in that entry
  qcow2_poke.py IMAGE reftable N VALUE   refcount table entry N
"""
import struct
import sys

OFFSET = 0x00fffffffffffe00


def main():
    path, what, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path, "r+b") as f:
        h = f.read(104)
        cluster_bits = struct.unpack(">I", h[20:24])[0]
        l1, rt = struct.unpack(">Q", h[40:48])[0], struct.unpack(">Q", h[48:56])[0]

        def q(off):
            f.seek(off)
            return struct.unpack(">Q", f.read(8))[0]

        def put(off, data):
            f.seek(off)
            f.write(data)

        if what == "reftable":
            put(rt + 8 * n, struct.pack(">Q", int(sys.argv[4], 0)))
            return
        l2 = q(l1) & OFFSET
        entry = q(l2 + 8 * n)
        if what == "uncopy":
            put(l2 + 8 * n, struct.pack(">Q", entry & ~(1 << 63)))
        elif what == "refcount":
            cluster = (entry & OFFSET) >> cluster_bits
            per_block = (1 << cluster_bits) // 2
            put((q(rt + 8 * (cluster // per_block)) & OFFSET) + 2 * (cluster % per_block),
                struct.pack(">H", int(sys.argv[4], 0)))
        else:
            sys.exit(f"unknown damage {what}")


if __name__ == "__main__":
    main()
