#!/usr/bin/env python3
"""Seeds for tests/fuzz/fuzz_luks_unlock.cpp, made by the real qemu-img.

Each seed is a LUKS volume with passphrase "fuzz" (iter-time 0: the
minimum of 1000 PBKDF2 rounds, under the harness's cap), cut to what the harness reads:
the 592 header bytes, then the volume from 4 KiB to the end of slot 0's key
material. aes-128 keeps the material at 64000 bytes.

Usage: tests/fuzz/make_luks_unlock_seeds.py [--out DIR]
"""
import argparse
import os
import struct
import subprocess
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
VARIANTS = {
    "cbc_plain64": "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain64",
    "cbc_essiv_sha1": "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1",
}


def make(name, opts, out, tmp):
    img = os.path.join(tmp, name + ".luks")
    for _ in range(10):  # qemu-img's PBKDF2 benchmark fails now and then on a busy machine
        r = subprocess.run(["qemu-img", "create", "-q", "-f", "luks", "--object", "secret,id=s,data=fuzz",
                            "-o", f"key-secret=s,iter-time=0,{opts}", img, "64k"], capture_output=True, text=True)
        if r.returncode == 0:
            break
        if "accurate CPU" not in r.stderr:
            raise SystemExit(r.stderr)
    with open(img, "rb") as f:
        vol = f.read()
    key_len = struct.unpack(">I", vol[108:112])[0]
    slot0 = 208
    offset, stripes = struct.unpack(">II", vol[slot0 + 40:slot0 + 48])
    end = offset * 512 + key_len * stripes
    with open(os.path.join(out, f"seed_{name}.bin"), "wb") as f:
        f.write(vol[:592] + vol[4096:end])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fuzz/corpus/fuzz_luks_unlock"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in VARIANTS.items():
            make(name, opts, a.out, tmp)


if __name__ == "__main__":
    main()
