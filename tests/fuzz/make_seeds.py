#!/usr/bin/env python3
"""Seed corpora for the per-format fuzz targets, made by the real qemu-img.

For each format (default: every folder of src/format that the real qemu-img
can create), writes small images to tests/fuzz/corpus/fuzz_<format>/
seed_gen_<variant>.<format>: `qemu-img create` with the variant's -o options
on a small virtual disk, then qemu-io writes of data, zeroes and (where the
format has them) compressed clusters, so the fuzzer starts from every kind
of metadata the format has. A format gets the generic variant unless VARIANTS
lists its own; seeds above MAX_SEED bytes are left out (small seeds mutate
faster). Existing seeds are kept unless --force.

Usage: tests/fuzz/make_seeds.py [--force] [--out DIR] [FORMAT...]
"""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
QEMU_IMG = "/usr/bin/qemu-img"
QEMU_IO = "/usr/bin/qemu-io"
MAX_SEED = 64 * 1024
SIZE = "128k"

DATA = ["write -P 0x11 0 4k", "write -P 0x22 9k 3k", "write -z 64k 8k", "write -P 0x33 120k 8k"]
COMPRESSED = DATA + ["write -c -P 0x44 32k 16k"]

# format: [(variant, -o options, qemu-io commands)]; others get GENERIC.
GENERIC = [("plain", "", DATA)]
VARIANTS = {
    "raw": [],  # no metadata to fuzz
    # (extended L2 needs 16k clusters: five of them already pass MAX_SEED)
    "qcow2": [
        ("c512", "cluster_size=512", COMPRESSED),
        ("v2_c512", "compat=0.10,cluster_size=512", COMPRESSED),
        ("zstd", "compression_type=zstd,cluster_size=4k", COMPRESSED),
        ("rc1", "refcount_bits=1,cluster_size=512", DATA),
    ],
    # Written VHDs grow by 2 MiB blocks, past MAX_SEED: the generated seeds
    # are the empty layouts (fixed ones only past MAX_SEED too), and
    # seed_hand_*.vpc (src/format/vpc/make_hand_seeds.py) have small blocks
    # with data, a fixed disk and a differencing disk.
    "vpc": [
        ("dynamic", "subformat=dynamic", []),
        ("force_size", "force_size=on", []),
    ],
    "qcow": [
        ("plain", "", DATA),
        # qcow compresses one cluster (4 KiB) per write
        ("compressed", "", DATA + ["write -c -P 0x44 32k 4k", "write -c -P 0x45 36k 4k"]),
    ],
    # 4 KiB clusters in two-cluster tables keep written images small
    "qed": [
        ("c4k", "cluster_size=4k,table_size=2", DATA),
    ],
    # qemu-img's smallest vhdx is 8 MiB: no generated seed fits; the
    # seed_hand_*.vhdx (src/format/vhdx/make_hand_seeds.py) pack the regions
    # after the 1 MiB header section, one with data, one with a dirty log.
    "vhdx": [],
    # A sparse vmdk's header area alone is 64 KiB (grains start at sector
    # 128), so only empty images fit MAX_SEED: the header, descriptor and
    # both grain directories are what the fuzzer mutates.
    "vmdk": [
        ("sparse", "", []),
        ("zeroed", "zeroed_grain=on", []),
        ("stream", "subformat=streamOptimized", []),
    ],
    # VDI blocks are 1 MiB, so a written image passes MAX_SEED: the
    # generated seed is an empty map; seed_hand_*.vdi
    # (src/format/vdi/make_hand_seeds.py) have allocated, discarded and
    # static blocks with their data area cut short.
    "vdi": [
        ("dynamic", "", []),
    ],
    # Small clusters, so that written images fit MAX_SEED.
    "parallels": [
        ("c4k", "cluster_size=4k", DATA),
        ("c512", "cluster_size=512", DATA),
    ],
}


def run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True)


def default_formats():
    fmts = []
    for f in sorted(os.listdir(os.path.join(ROOT, "src", "format"))):
        if VARIANTS.get(f) == []:
            continue
        with tempfile.TemporaryDirectory() as d:
            if run(f"{QEMU_IMG} create -q -f {f} x {SIZE}", d).returncode == 0:
                fmts.append(f)
            else:
                print(f"make_seeds: {f}: qemu-img cannot create it; hand-made seeds only")
    return fmts


def make(fmt, out, force):
    dest = os.path.join(out, f"fuzz_{fmt}")
    os.makedirs(dest, exist_ok=True)
    made = 0
    for variant, opts, cmds in VARIANTS.get(fmt, GENERIC):
        target = os.path.join(dest, f"seed_gen_{variant}.{fmt}")
        if os.path.exists(target) and not force:
            continue
        with tempfile.TemporaryDirectory() as d:
            o = f"-o {shlex.quote(opts)} " if opts else ""
            steps = [f"{QEMU_IMG} create -q -f {fmt} {o}img {SIZE}"]
            if cmds:
                steps.append(f"{QEMU_IO} -f {fmt} " + " ".join(f"-c {shlex.quote(c)}" for c in cmds) + " img")
            for s in steps:
                r = run(s, d)
                if r.returncode != 0:
                    print(f"make_seeds: {fmt}/{variant}: {s}: {r.stdout}{r.stderr}", file=sys.stderr)
                    return -1
            size = os.path.getsize(os.path.join(d, "img"))
            if size > MAX_SEED:
                print(f"make_seeds: {fmt}/{variant}: {size} bytes, above {MAX_SEED}; left out")
                continue
            os.replace(os.path.join(d, "img"), target)
            made += 1
    print(f"make_seeds: {fmt}: {made} new seeds in {os.path.relpath(dest, ROOT)}")
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("formats", nargs="*")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fuzz", "corpus"))
    ap.add_argument("--force", action="store_true", help="remake existing seeds")
    a = ap.parse_args()
    bad = sum(make(f, a.out, a.force) < 0 for f in (a.formats or default_formats()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
