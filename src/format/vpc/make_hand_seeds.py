#!/usr/bin/env python3
"""Writes the hand-made fuzz seeds of the vpc driver into
tests/fuzz/corpus/fuzz_vpc/: VHD layouts qemu-img cannot make small enough
(its dynamic blocks are 2 MiB): a dynamic disk with 4 KiB blocks holding
data, with a partial sector bitmap; a small fixed disk; a differencing disk
("win " creator, current-size rule). Deterministic.

Usage: src/format/vpc/make_hand_seeds.py
"""
import os
import struct

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_vpc")


def csum(b, at):
    s = sum(b[:at]) + sum(b[at + 4:])
    return (~s) & 0xFFFFFFFF


def footer(size, disk_type, app=b"win ", data_offset=512, chs=(0, 0, 0)):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQI", f, 8, 2, 0x10000, data_offset, 0)
    f[28:32] = app
    struct.pack_into(">HH", f, 32, 5, 3)
    f[36:40] = b"Wi2k"
    struct.pack_into(">QQHBBI", f, 40, size, size, chs[0], chs[1], chs[2], disk_type)
    f[68:84] = bytes(range(16))
    struct.pack_into(">I", f, 64, csum(f, 64))
    return bytes(f)


def dynamic(size, block, blocks, disk_type=3):
    entries = (size + block - 1) // block
    bat_bytes = (entries * 4 + 511) // 512 * 512
    bitmap = ((block // 4096) + 511) & ~511
    ft = footer(size, disk_type)
    hdr = bytearray(1024)
    hdr[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", hdr, 8, 0xFFFFFFFFFFFFFFFF, 1536, 0x10000, entries, block)
    struct.pack_into(">I", hdr, 36, csum(hdr, 36))
    bat = bytearray(b"\xff" * bat_bytes)
    body = bytearray()
    pos = 1536 + bat_bytes
    for i, fill in blocks:
        struct.pack_into(">I", bat, 4 * i, pos // 512)
        bm = bytearray(bitmap)
        bm[0:1] = b"\xf0"  # half the first sectors marked present
        body += bm + bytes([fill]) * block
        pos += bitmap + block
    return ft + bytes(hdr) + bytes(bat) + bytes(body) + ft


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        "seed_hand_smallblocks.vpc": dynamic(64 * 1024, 4096, [(0, 0x11), (5, 0x22), (15, 0x33)]),
        "seed_hand_differencing.vpc": dynamic(32 * 1024, 4096, [(2, 0x44)], disk_type=4),
        "seed_hand_fixed.vpc": bytes([0x55]) * 8192 + footer(8192, 2, data_offset=0xFFFFFFFFFFFFFFFF),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"make_hand_seeds: {len(seeds)} seeds in {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
