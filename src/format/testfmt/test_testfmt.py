#!/usr/bin/env python3
"""testfmt through the CLI (qimg_test, the qimg binary with the test formats).

qimg_writes_qemu_reads: a testfmt image that qimg probes, describes and
converts to raw and qcow2; the real qemu-img must read the copies as the
payload. testfmt is read-only: create, check and writes are refused with
qemu-img's messages.

Usage: python3 test_testfmt.py --qimg PATH   (last line: N passed, N failed)
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile

REAL = "/usr/bin/qemu-img"


def image(payload, virtual_size, header_size=512):
    head = b"QIMGTFMT" + struct.pack("<IIQ", 1, header_size, virtual_size)
    return head.ljust(header_size, b"\0") + payload


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    payload = bytes((i * 7 + (i >> 9)) & 0xff for i in range(200 * 1024 + 13))
    size = 1024 * 1024
    expected = payload + bytes(size - len(payload))
    passed = failed = 0

    def case(name, steps):
        nonlocal passed, failed
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "a.tst"), "wb") as f:
                f.write(image(payload, size))
            with open(os.path.join(d, "want.raw"), "wb") as f:
                f.write(expected)
            for cmd, want_rc, want_out in steps:
                r = subprocess.run(cmd.format(qimg=qimg, real=REAL), cwd=d, shell=True, capture_output=True, text=True)
                if r.returncode != want_rc or (want_out and want_out not in r.stdout + r.stderr):
                    print(f"FAIL {name}: {cmd}: exit {r.returncode}\n{r.stdout}{r.stderr}")
                    failed += 1
                    return
        print(f"PASS {name}")
        passed += 1

    case("qimg: info probes testfmt", [("{qimg} info a.tst", 0, "file format: testfmt")])
    case("qimg_writes_qemu_reads: convert testfmt to raw", [
        ("{qimg} convert -O raw a.tst b.raw", 0, None),
        ("{real} compare -f raw -F raw want.raw b.raw", 0, None),
    ])
    case("qimg_writes_qemu_reads: convert testfmt to qcow2", [
        ("{qimg} convert -f testfmt -O qcow2 a.tst b.qcow2", 0, None),
        ("{real} check b.qcow2", 0, None),
        ("{real} compare -f raw -F qcow2 want.raw b.qcow2", 0, None),
    ])
    case("qimg: testfmt is read-only", [
        ("{qimg} create -f testfmt x.tst 1M", 1, "does not support image creation"),
        ("{qimg} check a.tst", 63, "does not support checks"),
        ("{qimg} resize -f testfmt a.tst 2M", 1, "Could not open 'a.tst': Image is read-only"),
        ("{qimg} snapshot -c s1 a.tst", 1, "Image is read-only"),
        ("{qimg} commit a.tst", 1, "Image is read-only"),
    ])
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
