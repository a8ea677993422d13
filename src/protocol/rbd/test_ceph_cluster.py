#!/usr/bin/env python3
"""tests/interop/tools/ceph-cluster leaves nothing behind: its daemons end
with it when it ends normally, when it is sent SIGTERM, and when it is
killed with SIGKILL (then the next run removes its directory); a command's
exit status is passed on. Usage: test_ceph_cluster.py [--tool PATH]."""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TOOL = os.path.join(HERE, "..", "..", "..", "tests", "interop", "tools", "ceph-cluster")


def daemons_in(root: str) -> list[int]:
    """ceph-mon/ceph-osd processes whose CEPH_CONF lies under `root`."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
            if os.path.basename(argv0) not in (b"ceph-mon", b"ceph-osd"):
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue  # dead, waiting for its reaper
        if any(e.startswith(b"CEPH_CONF=" + root.encode()) for e in env):
            found.append(int(d))
    return found


def command_group(marker: str) -> int | None:
    """The process group of the command whose command line names `marker`."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if argv[0] == b"sh" and any(marker.encode() in a for a in argv):
            return int(fields[2])
    return None


def live_in_group(pgid: int) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(d))
    return found


def wait_gone(root: str, timeout: float = 10) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = daemons_in(root)
        if not left:
            return []
        time.sleep(0.1)
    return daemons_in(root)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tool", default=DEFAULT_TOOL)
    args = p.parse_args()
    tool = os.path.abspath(args.tool)
    failures = []
    with tempfile.TemporaryDirectory(prefix="qimg-ceph-cluster-test-") as tmp:
        env = dict(os.environ, TMPDIR=tmp)

        # 1. A normal run: the command sees the cluster, its status is passed on.
        r = subprocess.run([sys.executable, tool, "--", "sh", "-c",
                            'rados -p rbd ls >/dev/null && rbd create --size 1M rbd/x && exit 7'],
                           env=env, capture_output=True, text=True, timeout=120)
        if r.returncode != 7:
            failures.append(f"normal run: exit {r.returncode}, expected 7; stderr: {r.stderr.strip()}")
        if os.listdir(tmp):
            failures.append(f"normal run left {os.listdir(tmp)}")

        # 2./3. Killed while the command runs: SIGTERM tears down, SIGKILL
        # leaves the daemons to PR_SET_PDEATHSIG.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            marker = os.path.join(tmp, "up")
            proc = subprocess.Popen([sys.executable, tool, "--", "sh", "-c", f'touch {marker}; sleep 300; true'],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            end = time.monotonic() + 60
            while not os.path.exists(marker) and proc.poll() is None and time.monotonic() < end:
                time.sleep(0.05)
            roots = [os.path.join(tmp, d) for d in os.listdir(tmp) if d.startswith("ceph-cluster-")]
            if not os.path.exists(marker) or len(roots) != 1:
                proc.kill()
                failures.append(f"{sig.name}: the cluster did not come up: {proc.communicate()[1].strip()}")
                continue
            group = command_group(marker)
            os.unlink(marker)
            root = roots[0]
            if group is None:
                failures.append(f"{sig.name}: the command's shell was not found (the check itself is broken)")
                group = -1
            if not daemons_in(root):
                failures.append(f"{sig.name}: no daemons found for {root} (the check itself is broken)")
            t0 = time.monotonic()
            proc.send_signal(sig)
            proc.wait(timeout=30)
            if time.monotonic() - t0 > 5:
                failures.append(f"{sig.name}: the tool took {time.monotonic() - t0:.1f} s to end")
            left = wait_gone(root)
            if left:
                failures.append(f"{sig.name}: daemons {left} outlived the tool")
                for pid in left:
                    os.kill(pid, signal.SIGKILL)
            if sig == signal.SIGTERM and os.path.exists(root):
                failures.append(f"SIGTERM: {root} was not removed")
            time.sleep(0.2)
            left = live_in_group(group) if group > 0 else []
            if sig == signal.SIGTERM and left:
                failures.append(f"SIGTERM: the command's processes {left} outlived the tool")
            for pid in left:  # after SIGKILL the command gets SIGTERM; its children may stay
                os.kill(pid, signal.SIGKILL)

        # The next run removes what the SIGKILLed one left.
        r = subprocess.run([sys.executable, tool, "--", "true"], env=env, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            failures.append(f"run after SIGKILL: exit {r.returncode}; stderr: {r.stderr.strip()}")
        if os.listdir(tmp):
            failures.append(f"stale directories not removed: {os.listdir(tmp)}")

    for f in failures:
        print(f"FAIL {f}")
    print("ok" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
