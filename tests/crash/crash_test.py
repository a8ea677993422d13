#!/usr/bin/env python3
"""Crash-safety test: kill qimg at every write/flush of an in-place operation.

For each operation in OPERATIONS the harness
  1. builds the images with the REAL qemu-img/qemu-io (setup lines),
  2. records the guest content of the checked images before and after an
     uninterrupted qimg run (flat raw copies made by the real qemu-img),
     counting the run's file events (writes, write_zeroes, discards,
     truncates, flushes) through QIMG_FAULT_LOG,
  3. runs the operation again on fresh copies with QIMG_FAULT_AFTER=k for
     every event k (or a spread of MAX_POINTS for long ones): in kill mode
     qimg dies with SIGKILL just before event k, in error mode only that
     call fails with EIO,
  4. after each run asserts with the real tools: `qemu-img check` finds no
     corruption (leaks are allowed) and every checked image reads as its
     before or its after content (per block for images rewritten piece by
     piece by nature, such as a commit's base or convert -n's target); a
     dirty v3 image may fail the check if `qemu-img check -r all` repairs
     it completely, as QEMU repairs dirty images on a read-write open.

Adding an operation is one entry in OPERATIONS; see docs/crash-testing.md.
"""
import argparse
import concurrent.futures
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

QEMU_IMG = os.environ.get("QEMU_IMG_REAL", "/usr/bin/qemu-img")
QEMU_IO = "/usr/bin/qemu-io"
MAX_POINTS = 16        # kill points per operation (all events when fewer)
ERROR_POINTS = 5        # error-mode points per operation


class Op:
    """One in-place operation under test.

    setup:   shell lines run with the real tools (qemu-img/qemu-io on PATH)
    run:     the qimg command line, without the program name
    images:  files whose consistency and guest content are checked; a name
             ending in ":blocks" is compared per block of `unit` bytes
             instead of as a whole (each block reads as before or as
             after): for images an operation rewrites piece by piece by
             nature, such as the base of a commit or the target of
             convert -n
    unit:    the block size of those comparisons (the operation's write unit)
    """

    def __init__(self, name, setup, run, images, unit=65536):
        self.name, self.setup, self.run, self.unit = name, setup, run, unit
        self.images = [i.split(":")[0] for i in images]
        self.by_blocks = {i.split(":")[0] for i in images if i.endswith(":blocks")}


def base_chain(top_writes):
    return [
        "qemu-img create -q -f qcow2 base.qcow2 2M",
        "qemu-io -c 'write -P 0x11 0 2M' base.qcow2",
        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2",
        "qemu-io " + " ".join(f"-c '{w}'" for w in top_writes) + " top.qcow2",
    ]


TOP_WRITES = ["write -P 0x22 0 64k", "write -P 0x33 300k 200k", "write -z 1M 128k", "write -c -P 0x44 1536k 64k"]

# A leaked cluster: one past the end of the file counted in the first refcount block.
LEAKY = [
    "qemu-img create -q -f qcow2 leaky.qcow2 1M",
    "qemu-io -c 'write -P 0x55 0 256k' leaky.qcow2",
    "python3 -c \"import os;f=open('leaky.qcow2','r+b');n=os.path.getsize('leaky.qcow2')//65536;"
    "f.truncate((n+1)*65536);f.seek(2*65536+2*n);f.write(b'\\x00\\x01')\"",
]

OPERATIONS = [
    Op("commit", base_chain(TOP_WRITES), "commit top.qcow2", ["top.qcow2", "base.qcow2:blocks"]),
    Op("commit v2 top (unmap path)",
       ["qemu-img create -q -f qcow2 base.qcow2 1M", "qemu-io -c 'write -P 0x11 0 1M' base.qcow2",
        "qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 top.qcow2",
        "qemu-io -c 'write -P 0x22 0 192k' top.qcow2"],
       "commit top.qcow2", ["top.qcow2", "base.qcow2:blocks"]),
    Op("rebase (safe)",
       base_chain(TOP_WRITES) + ["qemu-img create -q -f qcow2 new.qcow2 2M",
                                 "qemu-io -c 'write -P 0x11 0 512k' new.qcow2"],
       "rebase -b new.qcow2 -F qcow2 top.qcow2", ["top.qcow2"]),
    Op("rebase -b '' (flatten)", base_chain(TOP_WRITES), "rebase -b '' top.qcow2", ["top.qcow2"]),
    Op("rebase -c", base_chain(TOP_WRITES) + ["qemu-img create -q -f raw new.raw 2M"],
       "rebase -c -b new.raw -F raw top.qcow2", ["top.qcow2"]),
    Op("snapshot -c",
       ["qemu-img create -q -f qcow2 s.qcow2 1M", "qemu-io -c 'write -P 0x61 0 512k' s.qcow2"],
       "snapshot -c snap1 s.qcow2", ["s.qcow2"]),
    Op("snapshot -a",
       ["qemu-img create -q -f qcow2 s.qcow2 1M", "qemu-io -c 'write -P 0x61 0 512k' s.qcow2",
        "qemu-img snapshot -c snap1 s.qcow2", "qemu-io -c 'write -P 0x62 256k 512k' s.qcow2"],
       "snapshot -a snap1 s.qcow2", ["s.qcow2"]),
    Op("snapshot -d",
       ["qemu-img create -q -f qcow2 s.qcow2 1M", "qemu-io -c 'write -P 0x61 0 512k' s.qcow2",
        "qemu-img snapshot -c snap1 s.qcow2", "qemu-io -c 'write -P 0x62 256k 512k' s.qcow2"],
       "snapshot -d snap1 s.qcow2", ["s.qcow2"]),
    Op("resize --shrink",
       ["qemu-img create -q -f qcow2 r.qcow2 2M", "qemu-io -c 'write -P 0x71 0 2M' r.qcow2"],
       "resize -f qcow2 --shrink r.qcow2 1M", ["r.qcow2"]),
    Op("convert -n into an existing qcow2",
       ["qemu-img create -q -f qcow2 t.qcow2 1M", "qemu-io -c 'write -P 0x81 0 512k' t.qcow2",
        "qemu-img create -q -f raw s.raw 1M", "qemu-io -f raw -c 'write -P 0x82 128k 640k' s.raw"],
       "convert -n -f raw -O qcow2 s.raw t.qcow2", ["t.qcow2:blocks"]),
    Op("check -r all", LEAKY, "check -r all leaky.qcow2", ["leaky.qcow2"]),
    Op("guest writes (bench -w)",
       ["qemu-img create -q -f qcow2 w.qcow2 1M", "qemu-io -c 'write -P 0x91 0 256k' w.qcow2"],
       "bench -w -c 12 -d 1 -s 64k -S 80k --pattern=0x92 -f qcow2 w.qcow2", ["w.qcow2:blocks"], unit=16384),
]


def sh(cmd, cwd, env=None):
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tools_env(tmp):
    """PATH with the real qemu-img first (setup lines)."""
    env = dict(os.environ, LC_ALL="C")
    for k in ("QIMG_FAULT_AFTER", "QIMG_FAULT_MODE", "QIMG_FAULT_LOG"):
        env.pop(k, None)
    return env


def run_qimg(qimg, op, cwd, extra_env):
    env = tools_env(cwd)
    env.update(extra_env)
    return subprocess.run([qimg] + shlex.split(op.run), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def flat_copy(image, cwd, out):
    r = sh(f"{QEMU_IMG} convert -U -O raw {shlex.quote(image)} {shlex.quote(out)}", cwd)
    if r.returncode != 0:
        return r.stdout
    return None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def content_ok(state, before, after, unit):
    if state == before or state == after:
        return True
    if not unit:
        return False
    size = max(len(state), len(before), len(after))
    pad = lambda b: b + bytes(size - len(b))
    s, b, a = pad(state), pad(before), pad(after)
    return all(s[i:i + unit] in (b[i:i + unit], a[i:i + unit]) for i in range(0, size, unit))


def is_dirty_qcow2(path):
    """The qcow2 v3 dirty bit: refcounts may be stale, repaired on the next read-write open."""
    with open(path, "rb") as f:
        head = f.read(80)
    return (len(head) == 80 and head[:4] == b"QFI\xfb" and int.from_bytes(head[4:8], "big") >= 3
            and int.from_bytes(head[72:80], "big") & 1)


def verify(op, cwd, refs):
    """None if every checked image is consistent and reads as before or after; else why not."""
    for img in op.images:
        chk = sh(f"{QEMU_IMG} check -U {shlex.quote(img)}", cwd)
        # 0: clean, 3: leaks only. 2: corruption, 1: could not check.
        if chk.returncode == 2 and is_dirty_qcow2(os.path.join(cwd, img)):
            # Marked dirty: QEMU repairs it when it opens it read-write
            # (qcow2_do_open), so it must repair completely.
            shutil.copy(os.path.join(cwd, img), os.path.join(cwd, img + ".repaired"))
            rep = sh(f"{QEMU_IMG} check -r all -f qcow2 {shlex.quote(img)}.repaired", cwd)
            again = sh(f"{QEMU_IMG} check -f qcow2 {shlex.quote(img)}.repaired", cwd)
            if again.returncode != 0:
                return f"dirty {img} is not repaired by qemu-img check -r all:\n{rep.stdout}\n{again.stdout}"
        elif chk.returncode not in (0, 3):
            return f"qemu-img check {img} exited {chk.returncode}:\n{chk.stdout}"
        err = flat_copy(img, cwd, img + ".state.raw")
        if err:
            return f"cannot read {img}: {err}"
        state = read(os.path.join(cwd, img + ".state.raw"))
        before, after = refs[img]
        if not content_ok(state, before, after, op.unit if img in op.by_blocks else 0):
            return f"{img}: guest content is neither the before nor the after state"
    return None


def spread(n, count):
    if n <= count:
        return list(range(1, n + 1))
    return sorted({1 + round(i * (n - 1) / (count - 1)) for i in range(count)})


def test_op(qimg, op, root):
    tmpl = os.path.join(root, "template")
    os.makedirs(tmpl)
    env = tools_env(tmpl)
    for line in op.setup:
        r = sh(line, tmpl, env)
        if r.returncode != 0:
            return [f"setup failed: {line}\n{r.stdout}"]
    refs = {}
    for img in op.images:
        if flat_copy(img, tmpl, img + ".before.raw"):
            return [f"cannot read {img} before the operation"]
    # The uninterrupted run: its event count and the after state.
    full = os.path.join(root, "full")
    shutil.copytree(tmpl, full)
    log = os.path.join(root, "events.log")
    r = run_qimg(qimg, op, full, {"QIMG_FAULT_LOG": log})
    if r.returncode != 0:
        return [f"the operation itself failed ({r.returncode}): {r.stderr}"]
    events = read(log).decode().splitlines() if os.path.exists(log) else []
    why = None
    for img in op.images:
        if flat_copy(img, full, img + ".after.raw"):
            return [f"cannot read {img} after the operation"]
        refs[img] = (read(os.path.join(tmpl, img + ".before.raw")), read(os.path.join(full, img + ".after.raw")))
    why = verify(op, full, refs)
    if why:
        return [f"after an uninterrupted run: {why}"]
    failures = []
    points = [(k, "kill") for k in spread(len(events), MAX_POINTS)]
    points += [(k, "error") for k in spread(len(events), ERROR_POINTS)]
    for k, mode in points:
        d = os.path.join(root, f"{mode}-{k}")
        shutil.copytree(tmpl, d)
        fenv = {"QIMG_FAULT_AFTER": str(k)}
        if mode == "error":
            fenv["QIMG_FAULT_MODE"] = "error"
        run_qimg(qimg, op, d, fenv)
        why = verify(op, d, refs)
        if why:
            failures.append(f"{mode} at event {k}/{len(events)} ({events[k - 1]}): {why}")
        else:
            shutil.rmtree(d)
    return failures, len(events), len(points)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qimg", required=True)
    ap.add_argument("-k", default="", help="only operations whose name contains this")
    ap.add_argument("-j", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    qimg = os.path.abspath(a.qimg)
    ops = [o for o in OPERATIONS if a.k in o.name]
    root = tempfile.mkdtemp(prefix="qimg-crash-")
    start = time.time()
    bad = 0
    with concurrent.futures.ThreadPoolExecutor(a.j) as pool:
        futs = {pool.submit(test_op, qimg, o, os.path.join(root, f"{i:02d}")): o for i, o in enumerate(ops)}
        for fut in concurrent.futures.as_completed(futs):
            o = futs[fut]
            res = fut.result()
            if isinstance(res, list):
                res = (res, 0, 0)
            failures, n, points = res
            if failures:
                bad += 1
                print(f"FAIL {o.name} ({n} events, {points} fault points)")
                for f in failures[:5]:
                    print("  " + f.replace("\n", "\n    "))
                if len(failures) > 5:
                    print(f"  ... and {len(failures) - 5} more")
            else:
                print(f"PASS {o.name} ({n} events, {points} fault points)")
            sys.stdout.flush()
    if a.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{len(ops) - bad} passed, {bad} failed in {time.time() - start:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
