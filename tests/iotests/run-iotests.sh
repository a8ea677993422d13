#!/usr/bin/env bash
# QEMU 7.2's own qemu-iotests with qimg as qemu-img, scored against the tests
# the real qemu-img passes (baselines beside the runner), and held to
# tests/iotests/expected-<fmt>.txt: every baseline test must pass except the
# ones listed there, each with its reason (a driver a later issue brings).
# A listed test that passes is reported, so the list only shrinks.
#
# Usage: tests/iotests/run-iotests.sh [--img BIN] [FMT ...]   (default: qcow2 raw)
# Environment: IOTESTS_RUN (the runner; default ../shared/tools/iotests/run
# beside the checkout, else /work/shared/tools/iotests/run), IOTESTS_JOBS (2),
# IOTESTS_OUT (results dir; default a fresh temp dir), IOTESTS_ARGS (more
# runner options, e.g. "--timeout-factor 20" on a loaded machine, where the
# default 6x-the-baseline-time timeouts fire).
# Ends with `N passed, N failed`; exit 0 only if no unexpected failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMG=$ROOT/build/qimg
if [[ ${1:-} == --img ]]; then IMG=$(realpath "$2"); shift 2; fi
FORMATS=("$@")
((${#FORMATS[@]})) || FORMATS=(qcow2 raw vmdk vpc)

RUN=${IOTESTS_RUN:-}
if [[ -z $RUN ]]; then
    for c in "$ROOT/../shared/tools/iotests/run" /work/shared/tools/iotests/run; do
        [[ -x $c ]] && { RUN=$c; break; }
    done
fi
[[ -n $RUN && -x $RUN ]] || { echo "run-iotests.sh: no iotests runner (set IOTESTS_RUN)"; echo "0 passed, 1 failed"; exit 1; }
BASELINE=$(dirname "$RUN")
OUT=${IOTESTS_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/qimg-iotests.XXXXXX")}
mkdir -p "$OUT"

# The suite runs for minutes: test a copy, so that a rebuild meanwhile does
# not mix two binaries into one result.
BIN_COPY=$OUT/qimg
cp "$IMG" "$BIN_COPY"

rc=0
"$RUN" --img "$BIN_COPY" --fmt "${FORMATS[@]}" --baseline "$BASELINE" \
    --jobs "${IOTESTS_JOBS:-2}" --out "$OUT" ${IOTESTS_ARGS:-} || rc=$?

python3 - "$OUT/results.tsv" "$ROOT/tests/iotests" "${FORMATS[@]}" <<'PY'
import sys, pathlib
results, listdir, fmts = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
expected = {}
for fmt in fmts:
    f = listdir / f"expected-{fmt}.txt"
    if f.exists():
        for line in f.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                test, _, why = line.partition(" ")
                expected[(fmt, test)] = why.strip()
passed = failed = listed = 0
unexpected, fixed = [], []
for row in open(results):
    cols = row.rstrip("\n").split("\t")
    if len(cols) < 3 or cols[0] not in fmts:
        continue
    fmt, test, status = cols[0], cols[1], cols[2]
    ok = status == "pass"
    if ok:
        passed += 1
        if (fmt, test) in expected:
            fixed.append(f"{fmt} {test}")
    elif (fmt, test) in expected:
        listed += 1  # an explained exception: neither a pass nor a failure
    else:
        failed += 1
        unexpected.append(f"{fmt} {test} {status} {cols[4] if len(cols) > 4 else ''}")
for u in unexpected:
    print("UNEXPECTED:", u)
for f in fixed:
    print("now passes (remove from expected list):", f)
print(f"{listed} listed exceptions (tests/iotests/expected-*.txt) not counted")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
