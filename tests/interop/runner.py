#!/usr/bin/env python3
"""Differential runner: runs each case once with the real qemu-img and once
with qimg (both reached as `qemu-img` on PATH) and compares what they print.
The case-file format is documented in tests/interop/README.md.

Python 3.11 standard library only (CI machines have no PyPI).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import difflib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

REAL_QEMU_IMG = "/usr/bin/qemu-img"
DEFAULT_TIMEOUT = 120

# Step kinds and where they run.
SETUP, RUN, RUN_RC, CHECK, QIMG = "setup", "run", "run-rc", "check", "qimg"
COMMAND_KINDS = (SETUP, RUN, RUN_RC, CHECK, QIMG)


class CaseFileError(Exception):
    """A case file that cannot be parsed; reported as one failure, never a traceback."""


@dataclasses.dataclass
class Step:
    kind: str
    command: str
    line: int
    expect_rc: int | None = None
    expect_stdout: list[str] | None = None  # one entry per expected line

    def expected_stdout_text(self) -> str | None:
        if self.expect_stdout is None:
            return None
        return "".join(line + "\n" for line in self.expect_stdout)


@dataclasses.dataclass
class Case:
    title: str
    path: str
    line: int
    timeout: int = DEFAULT_TIMEOUT
    steps: list[Step] = dataclasses.field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def qimg_only(self) -> bool:
        """A case with qimg: lines but no run/run-rc lines leaves ref/ unused."""
        kinds = {s.kind for s in self.steps}
        return QIMG in kinds and not ({RUN, RUN_RC} & kinds)


@dataclasses.dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def describe_rc(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.rc < 0:
            try:
                return f"killed by {signal.Signals(-self.rc).name}"
            except ValueError:
                return f"killed by signal {-self.rc}"
        return str(self.rc)


# ---------------------------------------------------------------------------
# Parsing


_DIRECTIVE = re.compile(r"^([a-z-]+):(.*)$")


def _logical_lines(text: str):
    """Yields (first line number, line) with trailing-backslash continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\") and not raw.lstrip().startswith("#"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


def parse_case_file(path: str) -> list[Case]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CaseFileError(f"{path}: cannot read: {e.strerror}") from None
    cases: list[Case] = []
    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{number}"
        if stripped.startswith("==="):
            title = stripped[3:].strip()
            if not title:
                raise CaseFileError(f"{where}: case without a title")
            cases.append(Case(title=title, path=path, line=number))
            continue
        match = _DIRECTIVE.match(line.lstrip())
        if not match:
            raise CaseFileError(f"{where}: expected '=== title' or 'key: value', got {stripped!r}")
        key, value = match.group(1), match.group(2)
        if not cases:
            raise CaseFileError(f"{where}: '{key}:' before the first '=== title'")
        _apply_directive(cases[-1], key, value, where, number)
    for case in cases:
        if not case.steps:
            raise CaseFileError(f"{case.where}: case {case.title!r} has no commands")
    return cases


def _apply_directive(case: Case, key: str, value: str, where: str, number: int) -> None:
    if key in COMMAND_KINDS:
        command = value.strip()
        if not command:
            raise CaseFileError(f"{where}: empty '{key}:' command")
        case.steps.append(Step(kind=key, command=command, line=number))
    elif key == "timeout":
        try:
            case.timeout = int(value.strip())
        except ValueError:
            raise CaseFileError(f"{where}: timeout must be a number of seconds") from None
        if case.timeout <= 0:
            raise CaseFileError(f"{where}: timeout must be positive")
    elif key == "expect-rc":
        step = _preceding_step(case, key, where)
        if step.expect_rc is not None:
            raise CaseFileError(f"{where}: second expect-rc for the same command")
        try:
            step.expect_rc = int(value.strip())
        except ValueError:
            raise CaseFileError(f"{where}: expect-rc must be an integer") from None
    elif key == "expect-stdout":
        step = _preceding_step(case, key, where)
        # Keep the text verbatim apart from the one space after the colon:
        # indentation is part of qemu-img's JSON output.
        text = value[1:] if value.startswith(" ") else value
        if step.expect_stdout is None:
            step.expect_stdout = []
        step.expect_stdout.append(text)
    else:
        raise CaseFileError(f"{where}: unknown directive '{key}:'")


def _preceding_step(case: Case, key: str, where: str) -> Step:
    if not case.steps:
        raise CaseFileError(f"{where}: '{key}:' must follow a command line")
    return case.steps[-1]


# ---------------------------------------------------------------------------
# Running commands


@dataclasses.dataclass
class Side:
    """One of the two worlds a case runs in: its directory and its tools."""
    name: str           # "ref" or "qimg"
    directory: str
    run_bin: str        # PATH prefix for run lines (its own `qemu-img`)
    real_bin: str       # PATH prefix giving the real qemu-img (setup/check)


class Runner:
    def __init__(self, qimg: str, ref: str, root: str, verbose: bool):
        self.qimg = qimg
        self.ref = ref
        self.root = root
        self.verbose = verbose
        self.ref_bin = os.path.join(root, "ref-bin")
        self.qimg_bin = os.path.join(root, "qimg-bin")
        os.makedirs(self.ref_bin)
        os.makedirs(self.qimg_bin)
        os.symlink(ref, os.path.join(self.ref_bin, "qemu-img"))
        os.symlink(qimg, os.path.join(self.qimg_bin, "qemu-img"))
        # The tools (`#!/usr/bin/env python3`) start this interpreter directly,
        # not through whatever launcher PATH has (a pyenv shim: 0.5 s each).
        for d in (self.ref_bin, self.qimg_bin):
            os.symlink(sys.executable, os.path.join(d, "python3"))
        self._counter = 0
        self._counter_lock = threading.Lock()

    def make_case_root(self, case: Case) -> str:
        with self._counter_lock:
            self._counter += 1
            index = self._counter
        slug = re.sub(r"[^A-Za-z0-9]+", "-", case.title).strip("-")[:40] or "case"
        path = os.path.join(self.root, f"{index:03d}-{slug}")
        os.makedirs(path)
        return path

    @staticmethod
    def side_vars(side: str) -> dict[str, str]:
        """Per-side environment: INTEROP_<SIDE>_<NAME>=value in the runner's
        environment is NAME=value for that side's commands (a tool that
        starts one service per side, e.g. tools/ceph-cluster --per-side)."""
        prefix = f"INTEROP_{side.upper()}_"
        return {k[len(prefix):]: v for k, v in os.environ.items() if k.startswith(prefix) and len(k) > len(prefix)}

    def _env(self, bin_dir: str, side: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.side_vars(side))
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["QEMU_IMG_REAL"] = self.ref
        env["QIMG"] = self.qimg
        # Helper scripts for case files (tools/), e.g. $INTEROP_TOOLS/bitmap-ranges.
        env["INTEROP_TOOLS"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools")
        # Same locale and timezone on both sides whatever the caller has.
        env["LC_ALL"] = "C"
        env["TZ"] = "UTC"
        return env

    # The real qemu-img's LUKS key-derivation benchmark gives up on a busy
    # machine before it touches any file; a run that says so is run again.
    LOAD_FLAKE = "Unable to get accurate CPU usage"

    def execute(self, command: str, side: Side, bin_dir: str, timeout: int) -> Result:
        for _ in range(5):
            r = self._execute_once(command, side, bin_dir, timeout)
            # The real qemu-img's curl driver now and then never completes a
            # read over http (seen once in a few hundred runs, not
            # reproducible): a reference run that times out gets one more
            # try. qimg's runs never do.
            if r.timed_out and side.name == "ref":
                r = self._execute_once(command, side, bin_dir, timeout)
            if self.LOAD_FLAKE not in r.stderr:
                break
        return r

    def _execute_once(self, command: str, side: Side, bin_dir: str, timeout: int) -> Result:
        # pipefail: a crashing qemu-img must not hide behind `| head`.
        # A new session so that a timeout kills the whole pipeline, not just bash.
        try:
            proc = subprocess.Popen(
                ["bash", "-o", "pipefail", "-c", command], cwd=side.directory, env=self._env(bin_dir, side.name),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)
        except OSError as e:
            return Result(rc=127, stdout="", stderr=f"runner: cannot start bash: {e}\n")
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            out, err = proc.communicate()
        finally:
            _kill_group(proc.pid)  # stray background children of the command
        return Result(rc=proc.returncode,
                      stdout=self._normalise(out, side),
                      stderr=self._normalise(err, side),
                      timed_out=timed_out)

    def _normalise(self, data: bytes, side: Side) -> str:
        text = data.decode("utf-8", errors="backslashreplace")
        directory = side.directory
        # A per-side value reads as its name ("$CEPH_CONF"), longest first.
        for name, value in sorted(self.side_vars(side.name).items(), key=lambda kv: -len(kv[1])):
            if value:
                text = text.replace(value, "$" + name)
        # Longest first: the case dir lives inside the temp root.
        for path, name in ((directory, "$DIR"), (self.root, "$TMPROOT")):
            for variant in {path, os.path.realpath(path)}:
                text = text.replace(variant, name)
        return text


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------
# One case


class CaseReport:
    def __init__(self, case: Case):
        self.case = case
        self.lines: list[str] = []
        self.failed = False
        self.setup_differs: list[str] = []

    def note(self, text: str = "") -> None:
        self.lines.append(text)

    def fail(self, step: Step, why: str) -> None:
        self.failed = True
        self.note(f"  {self.case.path}:{step.line}: {step.kind}: {step.command}")
        self.note(f"    {why}")
        if self.setup_differs:
            self.note("    note: setup was not deterministic, ref/ and qimg/ started with different "
                      + ", ".join(self.setup_differs[:10])
                      + " (use seeded data, e.g. qemu-io -P, rather than /dev/urandom)")


def run_case(runner: Runner, case: Case) -> CaseReport:
    report = CaseReport(case)
    try:
        _run_case_steps(runner, case, report)
    except OSError as e:  # e.g. disk full while making the case dirs
        report.failed = True
        report.note(f"  runner error: {e}")
    return report


def _run_case_steps(runner: Runner, case: Case, report: CaseReport) -> None:
    case_root = runner.make_case_root(case)
    sides = []
    for name in ("ref", "qimg"):
        directory = os.path.join(case_root, name)
        os.makedirs(directory)
        run_bin = runner.ref_bin if name == "ref" else runner.qimg_bin
        sides.append(Side(name, directory, run_bin, runner.ref_bin))
    ref, qimg = sides
    previous = None
    for step in case.steps:
        if previous is not None and previous.kind == SETUP and step.kind != SETUP:
            report.setup_differs = _setup_differences(ref, qimg)
        previous = step
        if step.kind == QIMG or (step.kind == CHECK and case.qimg_only):
            bin_dir = qimg.run_bin if step.kind == QIMG else qimg.real_bin
            ok = _single_step(runner, case, step, qimg, bin_dir, report)
        else:
            ok = _paired_step(runner, case, step, ref, qimg, report)
        if not ok:
            return  # later steps would only repeat the first difference


# Files up to this size are compared by content after setup; larger ones by
# size only, to keep multi-GiB sparse images cheap.
SETUP_HASH_LIMIT = 64 << 20


def _setup_differences(ref: Side, qimg: Side) -> list[str]:
    """Files in which setup built different ref/ and qimg/ dirs. Not a failure
    by itself (random data compared only within one dir is fine), but any
    later difference may be due to it, so a failure report mentions it."""
    a, b = _dir_fingerprint(ref.directory), _dir_fingerprint(qimg.directory)
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


def _dir_fingerprint(directory: str) -> dict[str, tuple]:
    prints = {}
    for parent, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, directory)
            try:
                st = os.lstat(path)
                if not os.path.isfile(path) or os.path.islink(path):
                    prints[rel] = ("other",)
                elif st.st_size <= SETUP_HASH_LIMIT:
                    with open(path, "rb") as f:
                        prints[rel] = (st.st_size, hashlib.sha1(f.read()).digest())
                else:
                    prints[rel] = (st.st_size,)
            except OSError:
                prints[rel] = ("unreadable",)
    return prints


def _single_step(runner, case, step, side, bin_dir, report) -> bool:
    result = runner.execute(step.command, side, bin_dir, case.timeout)
    _verbose(runner, report, step, side.name, result)
    if result.timed_out:
        report.fail(step, f"timed out after {case.timeout} s")
        return False
    problem = _expectation_problem(step, result, default_rc=0)
    if problem:
        report.fail(step, f"{side.name}: {problem}")
        _show_output(report, side.name, result)
        return False
    return True


def _paired_step(runner, case, step, ref, qimg, report) -> bool:
    use_real = step.kind in (SETUP, CHECK)
    results = {}
    for side in (ref, qimg):
        bin_dir = side.real_bin if use_real else side.run_bin
        results[side.name] = runner.execute(step.command, side, bin_dir, case.timeout)
        _verbose(runner, report, step, side.name, results[side.name])
    r, q = results["ref"], results["qimg"]
    for name, result in results.items():
        if result.timed_out:
            report.fail(step, f"{name} timed out after {case.timeout} s")
            return False
    if step.kind == SETUP:
        return _check_setup(step, r, q, report)
    # A golden that the real qemu-img does not meet is a broken case, say so.
    problem = _expectation_problem(step, r, default_rc=None)
    if problem:
        report.fail(step, f"the real qemu-img does not meet this case's expectation: {problem}")
        _show_output(report, "ref", r)
        return False
    problem = _expectation_problem(step, q, default_rc=None)
    if problem:
        report.fail(step, f"qimg: {problem}")
        _show_output(report, "qimg", q)
        return False
    if step.kind == RUN_RC:
        return _compare_rc_only(step, r, q, report)
    return _compare_full(step, r, q, report)


def _check_setup(step, r: Result, q: Result, report) -> bool:
    for name, result in (("ref", r), ("qimg", q)):
        problem = _expectation_problem(step, result, default_rc=0)
        if problem:
            report.fail(step, f"setup failed in {name}/: {problem}")
            _show_output(report, name, result)
            return False
    return True


def _expectation_problem(step: Step, result: Result, default_rc: int | None) -> str | None:
    want_rc = step.expect_rc if step.expect_rc is not None else default_rc
    if want_rc is not None and result.rc != want_rc:
        got = result.describe_rc()
        got = f"exit code {got}" if got.lstrip("-").isdigit() else got
        return f"{got}, expected exit code {want_rc}"
    expected = step.expected_stdout_text()
    if expected is not None and result.stdout != expected:
        diff = _diff(expected, result.stdout, "expected stdout", "actual stdout")
        return "stdout differs from expect-stdout:\n" + diff
    return None


def _compare_rc_only(step, r: Result, q: Result, report) -> bool:
    same_rc = r.rc == q.rc
    same_stderr_kind = bool(r.stderr.strip()) == bool(q.stderr.strip())
    if same_rc and same_stderr_kind:
        return True
    why = []
    if not same_rc:
        why.append(f"exit codes differ: ref {r.describe_rc()}, qimg {q.describe_rc()}")
    if not same_stderr_kind:
        why.append("one side wrote to stderr and the other did not")
    report.fail(step, "; ".join(why))
    _show_output(report, "ref", r)
    _show_output(report, "qimg", q)
    return False


def _compare_full(step, r: Result, q: Result, report) -> bool:
    if r.rc == q.rc and r.stdout == q.stdout and r.stderr == q.stderr:
        return True
    report.fail(step, f"outputs differ (exit code: ref {r.describe_rc()}, qimg {q.describe_rc()})")
    for stream in ("stdout", "stderr"):
        a, b = getattr(r, stream), getattr(q, stream)
        if a != b:
            report.note(f"    --- {stream} ---")
            report.note(_diff(a, b, f"ref/{stream}", f"qimg/{stream}"))
    return False


def _diff(a: str, b: str, label_a: str, label_b: str) -> str:
    lines = difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                 fromfile=label_a, tofile=label_b)
    out = []
    for line in lines:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append("    " + line)
    return "".join(out).rstrip("\n")


def _show_output(report: CaseReport, name: str, result: Result) -> None:
    for stream in ("stdout", "stderr"):
        text = getattr(result, stream)
        if text:
            report.note(f"    {name} {stream}:")
            report.note(_indent(text))


def _indent(text: str) -> str:
    return "\n".join("      | " + line for line in text.rstrip("\n").split("\n"))


def _verbose(runner: Runner, report: CaseReport, step: Step, side: str, result: Result) -> None:
    if not runner.verbose:
        return
    report.note(f"  [{side}] {step.kind}: {step.command}  -> {result.describe_rc()}")
    for stream in ("stdout", "stderr"):
        text = getattr(result, stream)
        if text:
            report.note(f"    {stream}:")
            report.note(_indent(text))


# ---------------------------------------------------------------------------
# Driver


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run differential case files against the real qemu-img and qimg.")
    p.add_argument("--qimg", required=True, help="path to the qimg binary")
    p.add_argument("--ref", default=REAL_QEMU_IMG,
                   help=f"the reference qemu-img (default {REAL_QEMU_IMG})")
    p.add_argument("-k", dest="keyword", default=None,
                   help="only run cases whose title contains this substring")
    p.add_argument("-j", dest="jobs", type=int, default=2,
                   help="cases run in parallel threads (default 2)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show every command and its output")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directories and print where they are")
    p.add_argument("casefiles", nargs="+", metavar="CASEFILE")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("-j must be at least 1")
    return args


def sample_cases(cases: list[Case], spec: str) -> tuple[list[Case], list[Case]]:
    """QIMG_INTEROP_SAMPLE="N:SALT" keeps about one case in N: those whose
    title, hashed with SALT, falls in the first of N buckets. The sanitizer
    stage of CI runs a sample (its comparisons are the normal stage's; it
    looks for memory errors), salted with the commit so that every commit
    runs its own, reproducible half. Empty: every case."""
    if not spec:
        return cases, []
    n_text, _, salt = spec.partition(":")
    try:
        n = int(n_text)
    except ValueError:
        n = 1
    if n <= 1:
        return cases, []
    keep, out = [], []
    for case in cases:
        digest = hashlib.sha256(f"{salt}\0{case.title}".encode()).digest()
        (keep if int.from_bytes(digest[:4], "big") % n == 0 else out).append(case)
    # A file never runs nothing: its first case stays.
    if not keep and out:
        keep.append(out.pop(0))
    return keep, out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    qimg = os.path.abspath(args.qimg)
    ref = os.path.abspath(args.ref)
    cases: list[Case] = []
    passed = failed = 0
    for path in args.casefiles:
        try:
            cases.extend(parse_case_file(path))
        except CaseFileError as e:
            print(f"FAIL (case file) {e}")
            failed += 1
    if args.keyword is not None:
        cases = [c for c in cases if args.keyword in c.title]
    cases, sampled_out = sample_cases(cases, os.environ.get("QIMG_INTEROP_SAMPLE", ""))
    for case in sampled_out:
        print(f"SKIP (sampled out) {case.title}  ({case.where})")

    # A dangling symlink in qimg-bin/ would make bash fall through to the
    # real qemu-img further down PATH and pass every case: refuse instead.
    for label, path in (("qimg", qimg), ("reference qemu-img", ref)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            print(f"runner: {label} {path} is not an executable file")
            for case in cases:
                print(f"FAIL {case.title}  ({case.where})")
            print(f"{passed} passed, {failed + len(cases)} failed")
            return 1

    root = tempfile.mkdtemp(prefix="qimg-interop-")
    try:
        runner = Runner(qimg, ref, root, args.verbose)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_case, runner, case) for case in cases]
            # Report in file order so that the log reads the same every time.
            for future in futures:
                report = future.result()
                status = "FAIL" if report.failed else "PASS"
                print(f"{status} {report.case.title}  ({report.case.where})")
                if report.lines and (report.failed or args.verbose):
                    print("\n".join(report.lines))
                sys.stdout.flush()
                if report.failed:
                    failed += 1
                else:
                    passed += 1
    except KeyboardInterrupt:
        print("runner: interrupted", file=sys.stderr)
        failed += 1
    finally:
        if args.keep:
            print(f"runner: kept case directories under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
