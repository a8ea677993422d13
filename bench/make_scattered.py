#!/usr/bin/env python3
"""Writes a deterministic sparse 1 TiB raw image holding N scattered 4 KiB
pieces at distinct random 64 KiB-aligned offsets, for bench_metadata.sh.

Each piece is 512 random bytes followed by zeroes, so that a compressed
cluster of it stays small and every piece differs. Python stdlib only.
"""

import argparse
import os
import random

TIB = 1 << 40
SLOT = 64 << 10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clusters", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--size", type=int, default=TIB)
    ap.add_argument("path")
    a = ap.parse_args()
    slots = a.size // SLOT
    if a.clusters > slots:
        ap.error("more clusters than 64 KiB slots in the image")
    rng = random.Random(a.seed)
    picked = sorted(rng.sample(range(slots), a.clusters))
    fd = os.open(a.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, a.size)
        tail = bytes(4096 - 512)
        for s in picked:
            os.pwrite(fd, rng.randbytes(512) + tail, s * SLOT)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
