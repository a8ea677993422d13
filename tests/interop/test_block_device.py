#!/usr/bin/env python3
"""Block devices (host_device, host_cdrom) against the real qemu-img.

Cloud tools write images straight onto block devices (an LVM volume, a
Ceph-mapped disk): `qemu-img create -f qcow2 /dev/vg/lv`, `convert -O raw
img /dev/vg/lv`, `resize`, `info -f host_device`. A loop device stands in
for one. Every command runs with the real qemu-img and with qimg (both
called `qemu-img`, through a symlink) on a freshly zeroed device; stdout,
stderr, exit code and the device's content afterwards must be identical.

Needs root and loop devices (losetup); elsewhere it says so and passes,
since nothing can be tested.

Usage: python3 test_block_device.py --qimg PATH   (last line: N passed, N failed)
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

REAL = "/usr/bin/qemu-img"
DEV_SIZE = 4 << 20

# Commands, run in a directory where `dev` links to the loop device (so
# both tools print the same name), `r.raw` is a 1 MiB raw image with data
# and `plain.img` a regular file.
COMMANDS = [
    "create -f host_device dev 1M",
    "create -f host_device dev 8M",                       # Cannot grow device files
    "create -f host_device -o preallocation=full dev 1M",  # only off
    "create -f host_device -o preallocation=bogus dev 1M",
    "create -f host_cdrom dev 1M",                        # a loop device has no medium
    "create -f host_device missing.img 1M",               # simple create: opening fails
    "create -f host_device plain.img 1M",                 # not a device
    "create -f host_device -o help dev 1M",
    "create -f raw dev 1M",                               # the protocol is host_device
    "create -f raw dev 8M",
    "create -f raw -o nocow=on dev 1M",                   # file's option, not host_device's
    "create -f qcow2 dev 1M",
    "create -f qcow2 dev 3M",
    "info dev",
    "info -f host_device dev",
    "info -f host_cdrom dev",
    "info -f host_device plain.img",
    "info host_device:dev",
    "info --output=json dev",
    "check dev",
    "resize -f host_device dev 8M",                       # Cannot resize device files
    "resize --shrink -f raw dev 2M",
    "resize -f raw dev 4M",
    "convert -O host_device r.raw dev",
    "convert -O raw r.raw dev",
    "convert -n -O raw r.raw dev",
    "convert -O qcow2 r.raw dev",
    "map --output=json -f raw dev",
]


def sh(cmd, cwd=None, check=True):
    return subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, check=check)


def device_digest(dev):
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def zero_device(dev):
    with open(dev, "r+b") as f:
        f.write(b"\0" * DEV_SIZE)
        f.flush()
        os.fsync(f.fileno())


def run_side(tool_dir, cwd, cmd, dev):
    zero_device(dev)
    env = dict(os.environ, PATH=tool_dir + ":" + os.environ["PATH"], LC_ALL="C")
    r = subprocess.run("qemu-img " + cmd, cwd=cwd, shell=True, capture_output=True, text=True, env=env)
    # After a successful create/convert the real tool reads back the result,
    # so a qcow2 written by qimg is also checked by QEMU's reader.
    after = sh(f"{REAL} info --output=json -U dev", cwd=cwd, check=False).stdout
    return r.stdout, r.stderr, r.returncode, device_digest(dev), after


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    args = ap.parse_args()
    qimg = os.path.abspath(args.qimg)
    if os.geteuid() != 0 or not shutil.which("losetup"):
        print("test_block_device: needs root and losetup; nothing tested")
        print("0 passed, 0 failed")
        return 0
    passed = failed = 0
    with tempfile.TemporaryDirectory() as root:
        backing = os.path.join(root, "backing.img")
        with open(backing, "wb") as f:
            f.truncate(DEV_SIZE)
        r = sh(f"losetup -f --show {backing}", check=False)
        if r.returncode != 0:
            print(f"test_block_device: no loop device ({r.stderr.strip()}); nothing tested")
            print("0 passed, 0 failed")
            return 0
        dev = r.stdout.strip()
        try:
            tools = {}
            for name, binary in (("ref", REAL), ("qimg", qimg)):
                tdir = os.path.join(root, name + "-bin")
                os.mkdir(tdir)
                os.symlink(binary, os.path.join(tdir, "qemu-img"))
                work = os.path.join(root, name)
                os.mkdir(work)
                os.symlink(dev, os.path.join(work, "dev"))
                with open(os.path.join(work, "plain.img"), "wb") as f:
                    f.truncate(1 << 20)
                sh(f"{REAL} create -q -f raw r.raw 1M && qemu-io -f raw -c 'write -P 0x5a 0 300k' r.raw", cwd=work)
                tools[name] = (tdir, work)
            for cmd in COMMANDS:
                ref = run_side(*tools["ref"], cmd, dev)
                got = run_side(*tools["qimg"], cmd, dev)
                if ref == got:
                    passed += 1
                    continue
                failed += 1
                print(f"FAIL qemu-img {cmd}")
                for label, a, b in zip(("stdout", "stderr", "rc", "device sha256", "info after"), ref, got):
                    if a != b:
                        print(f"  {label}:\n    qemu-img: {a!r}\n    qimg:     {b!r}")
        finally:
            sh(f"losetup -d {dev}", check=False)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
