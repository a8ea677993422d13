#!/usr/bin/env python3
"""Writes a realistic guest disk for bench_convert.sh: a sparse raw image of
SIZE_GIB holding an ext4 filesystem (made by mkfs.ext4 -d, no root or mount
needed) filled to about FILL of its size with real files of this machine
(executables, libraries, documentation from /usr), the rest free space that
stays holes.

Which files go in depends only on the machine's /usr: regular files are
taken in the order of the SHA-1 of their path (a mix of every kind of file,
the same on every run) until the fill target. They are hard-linked into a
staging directory when it is on the same filesystem, copied otherwise.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOTS = ("/usr/lib", "/usr/share", "/usr/bin", "/usr/sbin", "/usr/include")


def candidates():
    for root in ROOTS:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if os.path.isfile(path) and not os.path.islink(path) and st.st_size > 0 and os.access(path, os.R_OK):
                    yield hashlib.sha1(path.encode()).digest(), path, st.st_size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=int, required=True)
    ap.add_argument("--fill", type=float, default=0.5, help="fraction of the disk to fill with files")
    ap.add_argument("path")
    a = ap.parse_args()
    size = a.size_gib << 30
    budget = int(size * a.fill)
    picked, total = [], 0
    for _h, path, n in sorted(candidates()):
        # Keep room for ext4's own metadata: count whole 4 KiB blocks.
        blocks = (n + 4095) // 4096 * 4096
        if total + blocks > budget:
            continue
        picked.append(path)
        total += blocks
    stage = tempfile.mkdtemp(prefix="ext4-stage.", dir=os.path.dirname(os.path.abspath(a.path)))
    try:
        for i, src in enumerate(picked):
            # Flattened into numbered directories: no name clashes, no deep trees.
            d = os.path.join(stage, f"d{i // 1000:04d}")
            os.makedirs(d, exist_ok=True)
            dst = os.path.join(d, f"{i:06d}-{os.path.basename(src)}")
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        with open(a.path, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0,nodiscard", "-d", stage, a.path],
                       check=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"make_ext4.py: {len(picked)} files, {total >> 20} MiB, in a {a.size_gib} GiB ext4 image", file=sys.stderr)


if __name__ == "__main__":
    main()
