#!/usr/bin/env python3
"""Writes the hand-made fuzz seeds of the vhdx driver into
tests/fuzz/corpus/fuzz_vhdx/. qemu-img's smallest vhdx is 8 MiB (the log,
BAT and metadata regions each take 1 MiB, data starts 5 MiB further), far
above make_seeds.py's limit; these pack the regions into 4 KiB pieces
after the 1 MiB header section: a 64 KiB disk with 1 MiB blocks, one block
present (a 64 KiB partial last block), the others ZERO and NOT_PRESENT;
and the same disk with a 1 MiB log holding one valid entry (a data and a
zero descriptor), which a read-only open refuses. Deterministic.

Usage: src/format/vhdx/make_hand_seeds.py
"""
import os
import struct
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_vhdx")
MiB = 1 << 20


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def guid(text):
    return uuid.UUID(text).bytes_le


BAT = guid("2dc27766-f623-4200-9d64-115e9bfd4a08")
META = guid("8b7ca206-4790-4b9a-b8fe-575f050f886e")
ITEMS = [guid("caa16737-fa36-4d43-b3b6-33f0aa44e76b"), guid("2fa54224-cd1b-4876-b211-5dbed83bf4b8"),
         guid("beca12ab-b2e6-4523-93ef-c309e000c746"), guid("8141bf1d-a96f-4709-ba47-f233a8faab5f"),
         guid("cda348c7-445d-4471-9cc9-e9885251c556")]
LOG_GUID = guid("11111111-2222-3333-4444-555566667777")


def seal(b, at, length):
    struct.pack_into("<I", b, at + 4, 0)
    struct.pack_into("<I", b, at + 4, crc32c(bytes(b[at:at + length])))


def image(with_log):
    size, block = 64 * 1024, MiB
    regions = 2 * MiB if with_log else MiB  # BAT, then metadata 4 KiB on
    data = regions + MiB
    b = bytearray(data + size)
    b[0:8] = b"vhdxfile"
    for at, seq in ((64 * 1024, 1), (128 * 1024, 2)):
        struct.pack_into("<IIQ", b, at, 0x64616568, 0, seq)
        if with_log and seq == 2:
            b[at + 48:at + 64] = LOG_GUID
        struct.pack_into("<HHIQ", b, at + 64, 0, 1, MiB if with_log else 0, MiB)
        seal(b, at, 4096)
    rt = 192 * 1024
    struct.pack_into("<III", b, rt, 0x69676572, 0, 2)
    struct.pack_into("<16sQII", b, rt + 16, BAT, regions, 4096, 1)
    struct.pack_into("<16sQII", b, rt + 48, META, regions + 4096, 4096, 1)
    seal(b, rt, 64 * 1024)
    b[rt + 64 * 1024:rt + 128 * 1024] = b[rt:rt + 64 * 1024]
    struct.pack_into("<QQQ", b, regions, data | 6, 2, 0)  # present, ZERO, NOT_PRESENT
    md = regions + 4096
    struct.pack_into("<QHH", b, md, 0x617461646174656D, 0, 5)
    off = 256
    for i, (g, length) in enumerate(zip(ITEMS, (8, 8, 16, 4, 4))):
        struct.pack_into("<16sIII", b, md + 32 + 32 * i, g, off, length, 4)
        off += length
    struct.pack_into("<IIQ16sII", b, md + 256, block, 0, size, bytes(range(16)), 512, 4096)
    for i in range(size):
        b[data + i] = (i * 7) & 0xFF
    if with_log:
        e = bytearray(3 * 4096)
        struct.pack_into("<IIIIQII16sQQ", e, 0, 0x65676F6C, 0, len(e), 0, 5, 2, 0, LOG_GUID, len(b), len(b))
        struct.pack_into("<IIQQQ", e, 64, 0x63736564, 0x44444444, 0x4444444444444444, data, 5)
        struct.pack_into("<IIQQQ", e, 96, 0x6F72657A, 0, 4096, data + 8192, 5)
        struct.pack_into("<II", e, 4096, 0x61746164, 0)
        e[4096 + 8:4096 + 4092] = b"\x44" * 4084
        struct.pack_into("<I", e, 4096 + 4092, 5)
        struct.pack_into("<I", e, 4, crc32c(bytes(e)))
        b[MiB:MiB + len(e)] = e
    return bytes(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {"seed_hand_dynamic.vhdx": image(False), "seed_hand_dirtylog.vhdx": image(True)}
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"make_hand_seeds: {len(seeds)} seeds in {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
