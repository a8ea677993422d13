#!/usr/bin/env bash
# The whole test suite, as CI runs it: a -Werror build and its ctest suite,
# the same suite under ASan+UBSan, then every libFuzzer target for a bounded
# time on its seed corpus. Ends with one line `N passed, N failed`.
#
# Environment: JOBS (default 2), FUZZ_TIME seconds per fuzz target (default 30,
# 0 skips fuzzing), FUZZ_BUDGET seconds for all fuzz targets together (default
# 150: with more targets than FUZZ_BUDGET/FUZZ_TIME each gets an equal share,
# at least 10 s, so that a format's generated fuzz_<format> target does not
# grow CI by FUZZ_TIME), SKIP_ASAN=1 / SKIP_FUZZ=1 to leave a stage out locally,
# NO_CCACHE=1 to build without ccache, CRASH_POINTS kill points per crash-suite
# operation in the ASan stage (default 4; CRASH_POINTS_NORMAL, default 10, in
# the normal stage),
# CRASH_SAMPLE the share of crash-suite operations the ASan stage runs and
# QIMG_INTEROP_SAMPLE the share of interop cases ("N:SALT", one in N;
# default 4 and 6, salted with the commit; 1: all).
# IOTESTS=1 adds QEMU 7.2's own qemu-iotests for qcow2, raw, vmdk and vpc
# with qimg as qemu-img (tests/iotests/run-iotests.sh; ~25 minutes, not in
# CI's default run), IOTESTS="qcow2 raw ..." chooses the formats.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-2}
FUZZ_TIME=${FUZZ_TIME:-30}
FUZZ_BUDGET=${FUZZ_BUDGET:-150}
# Builds go through ccache where it is installed (NO_CCACHE=1: not), with paths
# taken relative to the checkout so that any clone of the same sources hits.
export CCACHE_BASEDIR=$ROOT CCACHE_NOHASHDIR=1
LOG_DIR=$ROOT/build/logs   # inside build/ so that it is ignored like the build
mkdir -p "$LOG_DIR"

TOTAL_PASSED=0
TOTAL_FAILED=0
SUMMARY=()   # one line per stage, printed at the end

stage() { printf '\n==== %s ====\n' "$*"; }

# configure_and_build DIR [cmake args...]: returns non-zero if either fails.
configure_and_build() {
    local dir=$1; shift
    # Keep whatever generator an existing local build dir was made with.
    local generator=(-G Ninja)
    [[ -f $dir/CMakeCache.txt ]] && generator=()
    local launcher=()
    if command -v ccache >/dev/null && [[ ${NO_CCACHE:-0} != 1 ]]; then
        launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
    fi
    cmake -S "$ROOT" -B "$dir" "${generator[@]}" "${launcher[@]}" "$@" &&
        cmake --build "$dir" -j "$JOBS"
}

# run_ctest DIR LABEL: runs the suite, adds its counts to the totals.
# Counts come from ctest's "N tests failed out of M" line; a run without that
# line (ctest crashed, no tests) counts as one failure so it cannot pass silently.
run_ctest() {
    local dir=$1 label=$2 log="$LOG_DIR/ctest-$2.log"
    local rc=0
    ctest --test-dir "$dir" -j "$JOBS" --output-on-failure --timeout 1200 2>&1 |
        tee "$log" || rc=$?
    local line failed total
    line=$(grep -E '[0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)
    if [[ -z $line ]]; then
        echo "test.sh: no ctest summary for $label (ctest exit $rc)"
        add_result "$label" 0 1
        return
    fi
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    if [[ $total -eq 0 ]]; then
        echo "test.sh: $label ran no test"
        failed=1
    fi
    add_result "$label" $((total - failed)) "$failed"
}

add_result() {
    local label=$1 passed=$2 failed=$3
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    # Not in the closing-line format on purpose: only the last line is the total.
    SUMMARY+=("$(printf '  %-7s passed %4d   failed %4d' "$label" "$passed" "$failed")")
}

build_failed() {
    echo "test.sh: the $1 build failed; its tests were not run"
    add_result "$1" 0 1
}

# ---- 1. normal build, warnings are errors --------------------------------
stage "build/ (RelWithDebInfo, -Werror)"
# QIMG_TEST_FORMATS: the test-only formats (src/format/testfmt) go into
# qimg_unit_tests and qimg_test, never into qimg.
if configure_and_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQIMG_WERROR=ON -DQIMG_TEST_FORMATS=ON; then
    stage "ctest build/"
    # The crash suite at 10 kill points per operation here (and 5 error
    # points): 94 operations over ten formats. Every point of every
    # operation is the developers' run before a stop
    # (tests/crash/crash_test.py --points 0), not CI's.
    export CRASH_POINTS=${CRASH_POINTS_NORMAL:-10}
    run_ctest build normal
    unset CRASH_POINTS
else
    build_failed normal
fi

# ---- 2. ASan + UBSan build running the same suite -------------------------
if [[ ${SKIP_ASAN:-0} != 1 ]]; then
    stage "build-asan/ (ASan+UBSan)"
    if configure_and_build build-asan -DCMAKE_BUILD_TYPE=Debug -DQIMG_SANITIZE=ON -DQIMG_TEST_FORMATS=ON; then
        stage "ctest build-asan/"
        export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
        # The crash suite's kill points under ASan look for memory errors on
        # the fault paths; the normal stage samples the orderings more widely
        # (10 per operation), so 4 here, on a quarter of the operations (a
        # different quarter for each commit: 94 operations over ten formats;
        # half of them took ~6 minutes of the stage), keep CI's time in bounds.
        export CRASH_POINTS=${CRASH_POINTS:-4}
        export CRASH_SAMPLE=${CRASH_SAMPLE:-4:$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo none)}
        # The interop cases' comparisons with qemu-img are the normal stage's
        # business; here they look for memory errors, and a sixth of them
        # does (tests/interop/runner.py sample_cases), a different sixth for
        # each commit. QIMG_INTEROP_SAMPLE=1 runs them all. (Each qimg start
        # costs ~1.2 s under ASan+LSan with libcurl, libnbd and librbd
        # linked: CI's whole run, three stages, was 32 minutes with a
        # quarter and a third of the crash operations, over the 30 asked.)
        export QIMG_INTEROP_SAMPLE=${QIMG_INTEROP_SAMPLE:-6:$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo none)}
        run_ctest build-asan asan
        unset ASAN_OPTIONS UBSAN_OPTIONS CRASH_POINTS CRASH_SAMPLE QIMG_INTEROP_SAMPLE
    else
        build_failed asan
    fi
fi

# ---- 3. libFuzzer targets, bounded time each ------------------------------
# Each target counts as one test: passed if it ran FUZZ_TIME seconds without
# a crash, leak or timeout. Seeds: tests/fuzz/corpus/<target>/ (with or
# without the fuzz_ prefix); new inputs go to a scratch dir, not the repo.
run_fuzzers() {
    local bin name seeds work artifacts passed=0 failed=0
    local time=$FUZZ_TIME targets=()
    artifacts=$ROOT/build-fuzz/artifacts
    mkdir -p "$artifacts"
    for bin in build-fuzz/fuzz_*; do
        [[ -x $bin && -f $bin ]] && targets+=("$bin")
    done
    if ((${#targets[@]} > 0 && FUZZ_BUDGET / ${#targets[@]} < time)); then
        time=$((FUZZ_BUDGET / ${#targets[@]}))
        ((time < 10)) && time=10
    fi
    for bin in "${targets[@]}"; do
        name=$(basename "$bin")
        work=$(mktemp -d "${TMPDIR:-/tmp}/qimg-fuzz-$name.XXXXXX")
        seeds=()
        for d in "tests/fuzz/corpus/$name" "tests/fuzz/corpus/${name#fuzz_}"; do
            [[ -d $d ]] && seeds+=("$d")
        done
        stage "fuzz $name (${time}s, seeds: ${seeds[*]:-none})"
        # -close_fd_mask=2: the targets' own stderr (qemu-img's check messages)
        # goes nowhere; libFuzzer and the sanitizers still report to the log.
        if "$bin" -max_total_time="$time" -timeout=20 -rss_limit_mb=2048 -close_fd_mask=2 \
                -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
                "$work" "${seeds[@]}" >"$LOG_DIR/fuzz-$name.log" 2>&1; then
            passed=$((passed + 1))
            tail -n 12 "$LOG_DIR/fuzz-$name.log"
        else
            failed=$((failed + 1))
            echo "test.sh: $name failed; last lines of $LOG_DIR/fuzz-$name.log:"
            tail -n 60 "$LOG_DIR/fuzz-$name.log"
        fi
        rm -rf "$work"
    done
    if ((passed + failed == 0)); then
        echo "test.sh: no fuzz targets were built (no tests/fuzz/fuzz_*.cpp?)"
        return
    fi
    add_result fuzz "$passed" "$failed"
}

if [[ ${SKIP_FUZZ:-0} != 1 && $FUZZ_TIME -gt 0 ]]; then
    if command -v clang++ >/dev/null && compgen -G 'tests/fuzz/fuzz_*.cpp' >/dev/null; then
        stage "build-fuzz/ (clang, libFuzzer)"
        if CXX=clang++ configure_and_build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQIMG_FUZZ=ON -DQIMG_TEST_FORMATS=ON; then
            run_fuzzers
        else
            build_failed fuzz
        fi
    else
        echo "test.sh: fuzzing skipped (no clang++ or no tests/fuzz/fuzz_*.cpp)"
    fi
fi

# ---- 4. QEMU's qemu-iotests (opt-in) ----------------------------------------
if [[ -n ${IOTESTS:-} && ${IOTESTS} != 0 ]]; then
    fmts=(qcow2 raw vmdk vpc)
    [[ $IOTESTS != 1 ]] && read -r -a fmts <<<"$IOTESTS"
    stage "qemu-iotests (${fmts[*]})"
    if [[ -x build/qimg ]]; then
        log="$LOG_DIR/iotests.log"
        tests/iotests/run-iotests.sh --img build/qimg "${fmts[@]}" 2>&1 | tee "$log" || true
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
        if [[ -n $line ]]; then
            add_result iotests "${line%% passed*}" "$(sed -E 's/.* ([0-9]+) failed/\1/' <<<"$line")"
        else
            add_result iotests 0 1
        fi
    else
        build_failed iotests
    fi
fi

stage summary
for line in "${SUMMARY[@]}"; do echo "$line"; done
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
[[ $TOTAL_FAILED -eq 0 ]]
