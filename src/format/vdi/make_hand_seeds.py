#!/usr/bin/env python3
"""Writes the hand-made fuzz seeds of the vdi driver into
tests/fuzz/corpus/fuzz_vdi/: layouts whose 1 MiB blocks would pass the seed
size limit, with the data area cut short (reads past the end of the file are
zeroes): a dynamic map with allocated, discarded and unallocated entries and
a few KiB of data; a static image; an odd disk size with a map that does not
follow the header. Deterministic.

Usage: src/format/vdi/make_hand_seeds.py
"""
import os
import struct

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_vdi")
MIB = 1 << 20


def image(disk_size, entries, image_type=1, bmap_at=512, data_len=8192, allocated=None):
    blocks = len(entries)
    bmap_bytes = (blocks * 4 + 511) // 512 * 512
    data_at = (bmap_at + bmap_bytes + 511) // 512 * 512
    h = bytearray(512)
    text = b"<<< QEMU VM Virtual Disk Image >>>\n"
    h[0:len(text)] = text
    if allocated is None:
        allocated = sum(1 for e in entries if e < 0xFFFFFFFE)
    struct.pack_into("<IIIII", h, 0x40, 0xBEDA107F, 0x00010001, 0x180, image_type, 0)
    struct.pack_into("<IIIIIII", h, 0x154, bmap_at, data_at, 0, 0, 0, 512, 0)
    struct.pack_into("<QIIII", h, 0x170, disk_size, MIB, 0, blocks, allocated)
    h[0x188:0x198] = bytes(range(16))
    h[0x198:0x1A8] = bytes(range(16, 32))
    img = bytearray(data_at + data_len)
    img[0:512] = h
    for i, e in enumerate(entries):
        struct.pack_into("<I", img, bmap_at + 4 * i, e)
    for i in range(data_len):
        img[data_at + i] = (i * 7 + 3) & 0xFF
    return bytes(img)


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        "seed_hand_dynamic.vdi": image(4 * MIB, [1, 0xFFFFFFFE, 0xFFFFFFFF, 0]),
        "seed_hand_static.vdi": image(3 * MIB, [0, 1, 2], image_type=2),
        "seed_hand_oddsize_gap.vdi": image(MIB + 1000, [0xFFFFFFFF, 0], bmap_at=1024, data_len=4096),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
