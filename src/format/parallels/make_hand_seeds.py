#!/usr/bin/env python3
"""Writes the hand-made fuzz seeds of the parallels driver into
tests/fuzz/corpus/fuzz_parallels/: layouts qemu-img does not make: a v1
"WithoutFreeSpace" image (BAT in sectors, data_off 0: computed), an image
left in use, and one with a Format Extension offset. Deterministic.

Usage: src/format/parallels/make_hand_seeds.py
"""
import os
import struct

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_parallels")


def image(magic, tracks, entries, bat, data_off, inuse=0, ext_off=0, data_len=4096):
    nb = len(entries) * tracks
    h = bytearray(64)
    h[0:16] = magic
    struct.pack_into("<IIIIIQIIIQ", h, 16, 2, 16, 0, tracks, len(entries), nb, inuse, data_off, 0, ext_off)
    bat_bytes = b"".join(struct.pack("<I", e) for e in bat)
    start = max(data_off * 512, (64 + len(bat_bytes) + 511) // 512 * 512)
    body = bytes((i * 13 + 5) & 0xFF for i in range(data_len))
    img = bytearray(start) + body
    img[0:64] = h
    img[64:64 + len(bat_bytes)] = bat_bytes
    if ext_off:
        # The extension's magic, then an all-zero checksum and an end marker.
        struct.pack_into("<Q", img, ext_off * 512, 0xAB234CEF23DCEA87)
    return bytes(img)


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        # v1: entries are sector offsets; data right after the BAT sector.
        "seed_hand_v1.parallels": image(b"WithoutFreeSpace", 8, [0] * 4, [1, 0, 9, 0], 0),
        "seed_hand_inuse.parallels": image(b"WithouFreSpacExt", 8, [0] * 4, [0, 1, 0, 2], 1, inuse=0x746F6E59,
                                           data_len=8192),
        "seed_hand_ext.parallels": image(b"WithouFreSpacExt", 8, [0] * 2, [1, 0], 1, ext_off=3, data_len=8192),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
