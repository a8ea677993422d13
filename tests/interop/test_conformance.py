#!/usr/bin/env python3
"""The CLI conformance suite, over every writable format qimg ships.

The formats are those with a folder in src/format/ that `qimg --help` lists
and that `qimg create` can make: raw and qcow2 today, and every new format
automatically (a format whose images need options to be created at all lists
them in CREATE_OPTS). For each, in both directions:

qimg_writes_qemu_reads: qimg creates and fills images (convert, convert -n,
dd, resize, bench -w) with patterns at unaligned offsets; the real qemu-io
reads them back with `read -P`, the real qemu-img compares them with the
source and checks them (where the format can be checked).
qemu_writes_qimg_reads: the real tools make the image; qimg's copy of it and
`qimg compare` agree with the real qemu-img.

Usage: python3 test_conformance.py --qimg PATH [-k SUBSTR] [--formats a,b]
(last line: N passed, N failed)
"""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile

REAL = "/usr/bin/qemu-img"
QEMU_IO = "/usr/bin/qemu-io"
SRC_FORMATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "format")

# -o options without which a format cannot be created (none yet).
CREATE_OPTS = {}

# Patterns at unaligned offsets and lengths (qemu-io writes, read -P checks):
# (pattern, offset, length)
REGIONS = [(0x11, 0, 4096), (0x22, 4097, 5000), (0x33, 65535, 70001), (0x44, 1000003, 1), (0x55, 3 * 1048576 - 777, 777)]
SIZE = "3M"


def writable_formats(qimg):
    out = subprocess.run([qimg, "--help"], capture_output=True, text=True).stdout
    listed = set()
    for line in out.splitlines():
        if line.startswith("Supported formats:"):
            listed = set(line.split(":", 1)[1].split())
    folders = sorted(d for d in os.listdir(SRC_FORMATS) if os.path.isdir(os.path.join(SRC_FORMATS, d)))
    fmts = []
    with tempfile.TemporaryDirectory() as d:
        for f in folders:
            if f not in listed:
                continue
            opts = ["-o", CREATE_OPTS[f]] if f in CREATE_OPTS else []
            r = subprocess.run([qimg, "create", "-q", "-f", f] + opts + ["x", "1M"], cwd=d, capture_output=True)
            if r.returncode == 0:
                fmts.append(f)
    return fmts


def writes(regions):
    return " ".join(f"-c {shlex.quote(f'write -P {p:#x} {o} {n}')}" for p, o, n in regions)


def reads(regions, fmt):
    return (f"{QEMU_IO} -f {fmt} " + " ".join(f"-c {shlex.quote(f'read -P {p:#x} {o} {n}')}" for p, o, n in regions))


def cases(fmt):
    o = f"-o {shlex.quote(CREATE_OPTS[fmt])} " if fmt in CREATE_OPTS else ""
    src = [f"{REAL} create -q -f raw s.raw {SIZE}", f"{QEMU_IO} -f raw {writes(REGIONS)} s.raw"]
    check = f"{REAL} check -f {fmt} t.img; rc=$?; [ $rc = 0 ] || [ $rc = 63 ]"  # 63: format has no checks
    yield f"qimg_writes_qemu_reads: {fmt}: convert with unaligned patterns", src + [
        f"{{qimg}} convert -f raw -O {fmt} {o}s.raw t.img",
        reads(REGIONS, fmt) + " t.img",
        f"{REAL} compare -f raw -F {fmt} s.raw t.img",
        check,
    ]
    yield f"qimg_writes_qemu_reads: {fmt}: convert -n over an image qemu-img made", src + [
        f"{REAL} create -q -f {fmt} {o}t.img {SIZE}",
        f"{QEMU_IO} -f {fmt} -c 'write -P 0x77 0 3M' t.img",
        f"{{qimg}} convert -n -f raw -O {fmt} s.raw t.img",
        f"{REAL} compare -f raw -F {fmt} s.raw t.img",
        check,
    ]
    yield f"qimg_writes_qemu_reads: {fmt}: dd", src + [
        f"{{qimg}} create -q -f {fmt} {o}t.img {SIZE}",
        f"{{qimg}} dd -f raw -O {fmt} bs=4k count=64 if=s.raw of=t.img",
        f"{QEMU_IO} -f {fmt} -c 'read -P 0x11 0 4096' -c 'read -P 0x22 4097 5000' t.img",
    ]
    yield f"qimg_writes_qemu_reads: {fmt}: bench -w pattern at an odd step", [
        f"{{qimg}} create -q -f {fmt} {o}t.img 1M",
        f"{{qimg}} bench -q -w -c 8 -d 1 -s 4k -S 12k -o 4096 --pattern=0xcd -f {fmt} t.img",
        f"{QEMU_IO} -f {fmt} -c 'read -P 0 0 4k' -c 'read -P 0xcd 4k 4k' -c 'read -P 0 8k 8k' "
        f"-c 'read -P 0xcd 88k 4k' t.img",
        check,
    ]
    # A format the real qemu-img cannot resize (vmdk): qimg must refuse
    # with the same message; the rest of this case is then skipped.
    yield f"qimg_writes_qemu_reads: {fmt}: resize grow reads zeroes past the old end", [
        f"{REAL} create -q -f {fmt} {o}r.img 1M && ( {REAL} resize -q -f {fmt} r.img 3M 2>r.err || ( "
        f"{{qimg}} create -q -f {fmt} {o}q.img 1M && ! {{qimg}} resize -q -f {fmt} q.img 3M 2>q.err && "
        f"test \"$(sed 's/^[^:]*: //' r.err)\" = \"$(sed 's/^[^:]*: //' q.err)\" && touch no-resize ) )",
        f"test -e no-resize || {{qimg}} create -q -f {fmt} {o}t.img 1M",
        f"test -e no-resize || {QEMU_IO} -f {fmt} -c 'write -P 0x66 1020k 4k' t.img",
        f"test -e no-resize || {{qimg}} resize -q -f {fmt} t.img 3M",
        f"test -e no-resize || {QEMU_IO} -f {fmt} -c 'read -P 0x66 1020k 4k' -c 'read -P 0 1M 2M' t.img",
        f"test -e no-resize || {REAL} info -f {fmt} --output=json t.img | grep -q '\"virtual-size\": 3145728'",
        f"test -e no-resize || ( {check} )",
    ]
    yield f"qimg_writes_qemu_reads: {fmt}: odd size as qemu-img makes it", [
        f"{{qimg}} create -q -f {fmt} {o}t.img 1000001",
        f"{REAL} create -q -f {fmt} {o}r.img 1000001",
        f"test \"$({REAL} info -f {fmt} --output=json t.img | grep virtual-size)\" = "
        f"\"$({REAL} info -f {fmt} --output=json r.img | grep virtual-size)\"",
        f"{QEMU_IO} -f {fmt} -c 'write -P 0x5a 999990 11' r.img",
        f"{{qimg}} convert -n -f {fmt} -O {fmt} r.img t.img",
        f"{QEMU_IO} -f {fmt} -c 'read -P 0x5a 999990 11' t.img",
    ]
    yield f"qemu_writes_qimg_reads: {fmt}: convert and compare agree with qemu-img", src + [
        f"{REAL} convert -f raw -O {fmt} {o}s.raw q.img",
        f"{{qimg}} convert -f {fmt} -O raw q.img back.raw",
        "cmp s.raw back.raw",
        f"{{qimg}} compare -f {fmt} -F raw q.img s.raw",
        f"{QEMU_IO} -f {fmt} -c 'write -P 0x99 2M 512' q.img",
        f"{{qimg}} compare -q -f {fmt} -F raw q.img s.raw; [ $? = 1 ]",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    ap.add_argument("-k", default="")
    ap.add_argument("--formats", help="comma-separated; default: every writable format")
    a = ap.parse_args()
    qimg = os.path.abspath(a.qimg)
    fmts = a.formats.split(",") if a.formats else writable_formats(qimg)
    if not fmts:
        print("FAIL no writable format found\n0 passed, 1 failed")
        return 1
    passed = failed = 0
    for fmt in fmts:
        for name, steps in cases(fmt):
            if a.k not in name:
                continue
            with tempfile.TemporaryDirectory(prefix="qimg-conformance-") as d:
                bad = None
                for s in steps:
                    cmd = s.format(qimg=shlex.quote(qimg))
                    r = subprocess.run(cmd, cwd=d, shell=True, capture_output=True, text=True,
                                       env=dict(os.environ, LC_ALL="C"), executable="/bin/bash")
                    # qemu-io prints failures (pattern mismatches) and still exits 0.
                    if r.returncode != 0 or "Pattern verification failed" in r.stdout or "failed:" in r.stdout:
                        bad = f"{cmd}: exit {r.returncode}\n{r.stdout}{r.stderr}"
                        break
            if bad:
                failed += 1
                print(f"FAIL {name}: {bad}")
            else:
                passed += 1
                print(f"PASS {name}")
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
