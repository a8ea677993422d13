#!/usr/bin/env python3
"""Writes the benchmark's source image: a sparse raw file whose content is a
pure function of (size, seed), so every machine benchmarks the same bytes.

Layout: the image is cut into extents of 64 KiB .. 16 MiB (64 KiB aligned),
each one of
  random   seeded pseudo-random bytes (incompressible)     ~30 %
  text     licence texts from /usr/share/common-licenses   ~25 %
  zero     zero bytes actually written (allocated zeroes)   ~15 %
  hole     never written (sparse)                          ~30 %
Small extents mixed with large ones exercise both block-status granularity
and streaming throughput. Python stdlib only.
"""

import argparse
import glob
import os
import random
import sys

KIB = 1024
MIB = 1024 * KIB
GRAIN = 64 * KIB
KINDS = ("random", "text", "zero", "hole")
WEIGHTS = (30, 25, 15, 30)
# Extent sizes in grains: mostly small, some large, so one image has both.
SIZE_CHOICES = (1, 2, 4, 16, 64, 128, 256)
SIZE_WEIGHTS = (20, 15, 15, 15, 15, 10, 10)
TEXT_BUFFER = 8 * MIB


def text_corpus(rng: random.Random) -> bytes:
    """An 8 MiB buffer of licence-text lines in a seeded order."""
    lines = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                lines.extend(f.read().splitlines(keepends=True))
    if not lines:  # a minimal system: still compressible, still deterministic
        lines = [b"the quick brown fox jumps over the lazy dog %d\n" % i for i in range(1000)]
    out = bytearray()
    while len(out) < TEXT_BUFFER:
        out += rng.choice(lines)
    return bytes(out[:TEXT_BUFFER])


def plan(size: int, rng: random.Random):
    """Yields (offset, length, kind) covering [0, size)."""
    offset = 0
    while offset < size:
        grains = rng.choices(SIZE_CHOICES, SIZE_WEIGHTS)[0]
        length = min(grains * GRAIN, size - offset)
        kind = rng.choices(KINDS, WEIGHTS)[0]
        yield offset, length, kind
        offset += length


def write_image(path: str, size: int, seed: int) -> dict:
    layout_rng = random.Random(seed)
    data_rng = random.Random(seed + 1)
    text = text_corpus(random.Random(seed + 2))
    totals = dict.fromkeys(KINDS, 0)
    zeros = bytes(16 * MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for offset, length, kind in plan(size, layout_rng):
            totals[kind] += length
            if kind == "random":
                os.pwrite(fd, data_rng.randbytes(length), offset)
            elif kind == "text":
                start = data_rng.randrange(0, TEXT_BUFFER - GRAIN, GRAIN // 16)
                os.pwrite(fd, _cyclic(text, start, length), offset)
            elif kind == "zero":
                os.pwrite(fd, zeros[:length], offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return totals


def _cyclic(buf: bytes, start: int, length: int) -> bytes:
    out = bytearray()
    while len(out) < length:
        out += buf[start:start + length - len(out)]
        start = 0
    return bytes(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--size-gib", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=20240501)
    args = p.parse_args()
    size = int(args.size_gib * 1024) * MIB
    if size <= 0:
        p.error("size must be at least 1 MiB")
    totals = write_image(args.path, size, args.seed)
    summary = ", ".join(f"{k} {v / MIB:.0f} MiB" for k, v in totals.items())
    print(f"wrote {args.path}: {size / MIB:.0f} MiB ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
