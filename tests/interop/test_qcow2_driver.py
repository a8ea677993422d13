#!/usr/bin/env python3
"""qcow2 driver interop through the qimg CLI, both directions.

qemu_writes_qimg_reads: images made by the real qemu-img/qemu-io (cluster
sizes, v2, extended L2, compressed zlib/zstd, backing chain) are converted to
raw by qimg and compared with the real qemu-img.
qimg_writes_qemu_reads: qimg creates and converts into qcow2; the real
`qemu-img check` must find no errors or leaks and `qemu-img compare` must
find the content identical.

Usage: python3 test_qcow2_driver.py --qimg PATH   (last line: N passed, N failed)
"""
import argparse
import os
import subprocess
import sys
import tempfile

REAL = "/usr/bin/qemu-img"
QEMU_IO = "/usr/bin/qemu-io"


def run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    args = ap.parse_args()
    qimg = os.path.abspath(args.qimg)
    passed = failed = 0

    def case(name, steps):
        nonlocal passed, failed
        with tempfile.TemporaryDirectory() as d:
            for s in steps:
                r = run(s.format(qimg=qimg, real=REAL, io=QEMU_IO), d)
                if r.returncode != 0:
                    print(f"FAIL {name}: {s}\n{r.stdout}{r.stderr}")
                    failed += 1
                    return
        print(f"PASS {name}")
        passed += 1

    pattern = "-c 'write -P 0x11 0 4k' -c 'write -P 0x22 70k 130k' -c 'write -z 300k 64k' -c 'write -P 0x33 1020k 4k'"
    for opts in ["cluster_size=512", "cluster_size=4k", "cluster_size=65536", "cluster_size=2M",
                 "compat=0.10", "extended_l2=on", "refcount_bits=1", "lazy_refcounts=on"]:
        case(f"qemu_writes_qimg_reads: {opts}", [
            f"{{real}} create -q -f qcow2 -o {opts} a.qcow2 3M",
            f"{{io}} {pattern} a.qcow2",
            "{qimg} convert -f qcow2 -O raw a.qcow2 a.raw",
            "{real} compare -f qcow2 -F raw a.qcow2 a.raw",
        ])
    for ctype in ["zlib", "zstd"]:
        case(f"qemu_writes_qimg_reads: compressed {ctype}", [
            "{real} create -q -f raw s.raw 2M",
            "{io} -f raw " + pattern + " s.raw",
            f"{{real}} convert -c -f raw -O qcow2 -o compression_type={ctype} s.raw c.qcow2",
            "{qimg} convert -f qcow2 -O raw c.qcow2 c.raw",
            "cmp s.raw c.raw",
        ])
    case("qemu_writes_qimg_reads: backing chain", [
        "{real} create -q -f raw base.raw 2M",
        "{io} -f raw -c 'write -P 9 0 2M' base.raw",
        "{real} create -q -f qcow2 -b base.raw -F raw top.qcow2 3M",
        "{io} " + pattern + " top.qcow2",
        "{qimg} convert -O raw top.qcow2 top.raw",
        "{real} compare top.qcow2 top.raw",
    ])
    for opts in ["cluster_size=512", "cluster_size=65536", "extended_l2=on", "compat=0.10", "refcount_bits=64"]:
        case(f"qimg_writes_qemu_reads: convert -O qcow2 -o {opts}", [
            "{real} create -q -f raw s.raw 3M",
            "{io} -f raw " + pattern + " s.raw",
            f"{{qimg}} convert -f raw -O qcow2 -o {opts} s.raw t.qcow2",
            "{real} check t.qcow2",
            "{real} compare -f raw -F qcow2 s.raw t.qcow2",
        ])
    case("qimg_writes_qemu_reads: convert -c", [
        "{real} create -q -f raw s.raw 3M",
        "{io} -f raw " + pattern + " s.raw",
        "{qimg} convert -c -f raw -O qcow2 s.raw t.qcow2",
        "{real} check t.qcow2",
        "{real} compare -f raw -F qcow2 s.raw t.qcow2",
    ])
    case("qimg_writes_qemu_reads: create is byte-identical", [
        "{real} create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on r.qcow2 10G",
        "{qimg} create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on q.qcow2 10G",
        "cmp r.qcow2 q.qcow2",
    ])
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
