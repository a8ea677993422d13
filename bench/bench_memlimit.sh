#!/usr/bin/env bash
# qimg vs qemu-img `convert` inside a memory cgroup (default 512 MiB): the
# peak memory charged to the cgroup (process and page cache), whether the
# kernel OOM-killed the tool, how often it hit the limit, and wall time.
# Each run gets a fresh cgroup; every output is checked with the real
# `qemu-img compare`. See bench/README.md.
#
# Environment:
#   QIMG=build/qimg        the qimg binary
#   SIZE_GIB=4             source image size (make_image.py's mixed image)
#   LIMIT_MIB=512          the cgroup's memory limit
#   RUNS=1                 runs per tool and operation
#   BENCH_TMP=/var/tmp     scratch location (needs ~2.5 x SIZE_GIB free)
#   SEED=20240501          image content seed
#   OPS="raw-raw raw-qcow2 qcow2-raw"
#   TOOLS="qemu-img qimg"  add qimg-wb0 for qimg with --write-behind=0
#   KEEP_SOURCE=1          keep the generated source for the next run
#
# Needs root and a writable cgroup file system: a child of the cgroup2
# mount's top when its memory controller is there, else one under the v1
# memory hierarchy. (systemd-run --scope -p MemoryMax= would do the limit,
# but its cgroup goes away with the command, memory.peak with it, and it
# needs a running systemd.)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
QIMG=$(realpath -m "${QIMG:-$ROOT/build/qimg}")
QEMU_IMG=/usr/bin/qemu-img
SIZE_GIB=${SIZE_GIB:-4}
LIMIT_MIB=${LIMIT_MIB:-512}
RUNS=${RUNS:-1}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
SEED=${SEED:-20240501}
OPS=${OPS:-raw-raw raw-qcow2 qcow2-raw}
TOOLS=${TOOLS:-qemu-img qimg}
KEEP_SOURCE=${KEEP_SOURCE:-0}

die() { echo "bench_memlimit.sh: $*" >&2; exit 1; }
note() { echo "# $*"; }

[[ $SIZE_GIB =~ ^[1-9][0-9]*$ ]] || die "SIZE_GIB must be a whole number of GiB"
[[ $LIMIT_MIB =~ ^[1-9][0-9]*$ ]] || die "LIMIT_MIB must be a whole number of MiB"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"
[[ -x $QIMG ]] || die "no qimg binary at $QIMG (build it, or set QIMG=)"
[[ -x $QEMU_IMG ]] || die "the real qemu-img is missing: apt-get install qemu-utils"
((EUID == 0)) || die "needs root (to make cgroups and drop caches)"
if [[ ! -x /usr/bin/time ]]; then
    note "installing GNU time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >/dev/null ||
        die "/usr/bin/time is missing and could not be installed (apt-get install time)"
fi

# --- the cgroup ------------------------------------------------------------
# mount_of FSTYPE [SUPER-OPTION]: the first mount point of that type (whose
# super options hold SUPER-OPTION), from mountinfo (fields after " - ").
mount_of() {
    awk -v t="$1" -v o="${2:-}" '{
        for (i = 7; i <= NF; i++) if ($i == "-") break
        if ($(i + 1) != t) next
        if (o != "" && ("," $(i + 3) ",") !~ ("," o ",")) next
        print $5; exit }' /proc/self/mountinfo
}
CG_MODE= CG_TOP=
v2=$(mount_of cgroup2)
if [[ -n $v2 ]] && grep -qw memory "$v2/cgroup.controllers" 2>/dev/null; then
    grep -qw memory "$v2/cgroup.subtree_control" || echo +memory >"$v2/cgroup.subtree_control" ||
        die "cannot enable the memory controller in $v2/cgroup.subtree_control"
    CG_MODE=v2 CG_TOP=$v2
else
    v1=$(mount_of cgroup memory)
    [[ -n $v1 ]] || die "no cgroup2 mount with the memory controller and no cgroup v1 memory mount"
    CG_MODE=v1 CG_TOP=$v1
fi
LIMIT=$((LIMIT_MIB << 20))

# cg_make NAME: a fresh cgroup limited to LIMIT without swap; sets CG.
cg_make() {
    CG=$CG_TOP/$1
    mkdir "$CG"
    if [[ $CG_MODE == v2 ]]; then
        echo "$LIMIT" >"$CG/memory.max"
        [[ -e $CG/memory.swap.max ]] && echo 0 >"$CG/memory.swap.max"
    else
        echo "$LIMIT" >"$CG/memory.limit_in_bytes"
        # Only with swap on: a memsw limit makes 6.18's memory.failcnt stay 0.
        if [[ -e $CG/memory.memsw.limit_in_bytes ]] && (($(wc -l </proc/swaps) > 1)); then
            echo "$LIMIT" >"$CG/memory.memsw.limit_in_bytes"
        fi
    fi
    return 0
}
# cg_sample: one line "<bytes charged> <dirty + writeback bytes>" of CG.
cg_sample() {
    if [[ $CG_MODE == v2 ]]; then
        echo "$(cat "$CG/memory.current") $(awk '$1 == "file_dirty" || $1 == "file_writeback" { n += $2 } END { print n + 0 }' "$CG/memory.stat")"
    else
        echo "$(cat "$CG/memory.usage_in_bytes") $(awk '$1 == "total_dirty" || $1 == "total_writeback" { n += $2 } END { print n + 0 }' "$CG/memory.stat")"
    fi
}
# cg_peak: bytes at most charged to CG (v2 without memory.peak: the sampler's).
cg_peak() {
    if [[ $CG_MODE == v1 ]]; then cat "$CG/memory.max_usage_in_bytes"
    elif [[ -e $CG/memory.peak ]]; then cat "$CG/memory.peak"
    else awk '$1 > m { m = $1 } END { print m + 0 }' "$WORK/samples"
    fi
}
# cg_event KEY: v2 memory.events counter (oom_kill, max); v1: oom_kill from
# memory.oom_control, "max" from memory(.memsw).failcnt (times the limit was hit).
cg_event() {
    if [[ $CG_MODE == v2 ]]; then awk -v k="$1" '$1 == k { print $2 }' "$CG/memory.events"
    elif [[ $1 == max ]]; then
        # With memsw limited as well, the memsw counter is charged (and fails) first.
        cat "$CG/memory.failcnt" "$CG"/memory.memsw.failcnt 2>/dev/null | awk '{ n += $1 } END { print n }'
    else awk -v k="$1" '$1 == k { print $2 }' "$CG/memory.oom_control"
    fi
}
cg_remove() {
    [[ -n ${CG:-} && -d $CG ]] || return 0
    # Processes left (none normally): move them out before rmdir.
    while read -r p; do echo "$p" >"$CG_TOP/cgroup.procs" 2>/dev/null || true; done <"$CG/cgroup.procs"
    rmdir "$CG" 2>/dev/null || note "could not remove $CG"
    CG=
}

# --- the source ------------------------------------------------------------
CACHE=$BENCH_TMP/qimg-bench-source
mkdir -p "$CACHE"
WORK=$(mktemp -d "$BENCH_TMP/qimg-memlimit.XXXXXX")
cleanup() {
    cg_remove
    rm -rf "$WORK"
    [[ $KEEP_SOURCE == 1 ]] || rm -rf "$CACHE"
}
trap cleanup EXIT

SRC=$CACHE/mixed-${SIZE_GIB}G-$SEED-$(sha256sum "$HERE/make_image.py" | cut -c1-12).raw
if [[ ! -f $SRC.done ]]; then
    rm -f "$CACHE"/mixed-*
    note "generating the ${SIZE_GIB} GiB mixed source image"
    python3 "$HERE/make_image.py" --size-gib "$SIZE_GIB" --seed "$SEED" "$SRC"
    touch "$SRC.done"
fi
SRC_QCOW2=$WORK/source.qcow2
if [[ " $OPS " == *" qcow2-"* ]]; then
    note "making the qcow2 source with the real qemu-img"
    "$QEMU_IMG" convert -O qcow2 "$SRC" "$SRC_QCOW2"
fi

op_spec() {
    case $1 in
        raw-raw)   echo "$SRC raw raw" ;;
        raw-qcow2) echo "$SRC raw qcow2" ;;
        qcow2-raw) echo "$SRC_QCOW2 qcow2 raw" ;;
        *) die "unknown operation $1 (known: raw-raw raw-qcow2 qcow2-raw)" ;;
    esac
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# run_one OP TOOL RUN: one conversion in a fresh cgroup, cold cache.
run_one() {
    local op=$1 tool=$2 run=$3 src src_fmt out_fmt out cmd
    read -r src src_fmt out_fmt <<<"$(op_spec "$op")"
    out=$WORK/out.$out_fmt
    case $tool in
        qemu-img) cmd=("$QEMU_IMG" convert) ;;
        qimg) cmd=("$QIMG" convert) ;;
        qimg-wb0) cmd=("$QIMG" convert --write-behind=0) ;;
        *) die "unknown tool $tool (known: qemu-img qimg qimg-wb0)" ;;
    esac
    cmd+=(-f "$src_fmt" -O "$out_fmt" "$src" "$out")
    rm -f "$out"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    sleep 1
    cg_make "qimg-memlimit.$$.$op.$tool.$run"
    # Dirty and writeback pages have no peak counter: sampled every 100 ms.
    : >"$WORK/samples"
    (while [[ -d $CG ]]; do cg_sample >>"$WORK/samples" 2>/dev/null || break; sleep 0.1; done) &
    local sampler=$!
    local rc=0
    # The shell joins the cgroup, then becomes time(1), which runs the tool
    # there; QIMG_DEBUG_WRITE_BEHIND makes qimg say the budget it chose.
    QIMG_DEBUG_WRITE_BEHIND=1 sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$CG" \
        /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "${cmd[@]}" >"$WORK/convert.log" 2>&1 || rc=$?
    local t0 sync_s
    t0=$(date +%s.%N)
    sync
    sync_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    local peak dirty oom hits wall rss status budget
    peak=$(cg_peak)
    dirty=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$WORK/samples")
    oom=$(cg_event oom_kill)
    hits=$(cg_event max)
    read -r wall rss < <(grep -E '^[0-9.]+ [0-9]+$' "$WORK/time.txt" | tail -1) || true
    budget=$(sed -n 's/^write-behind: \([0-9]*\) MiB.*/\1/p' "$WORK/convert.log")
    if ((rc != 0)); then
        status=failed
        grep -q 'signal 9' "$WORK/time.txt" && status=killed
        note "$op $tool run $run: exit $rc: $(grep -v '^write-behind:' "$WORK/convert.log" | tail -n 2 | tr '\n' ' ')"
    elif "$QEMU_IMG" compare -q -f "$src_fmt" -F "$out_fmt" "$src" "$out" >"$WORK/compare.log" 2>&1; then
        status=ok
    else
        status=mismatch
        sed 's/^/#   /' "$WORK/compare.log"
    fi
    cg_remove
    rm -f "$out"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$op" "$tool" "$run" "${wall:-0}" "$sync_s" \
        "$((peak >> 20))" "${oom:-?}" "${hits:-?}" "$(( ${rss:-0} >> 10 ))" "${budget:--}" "$status" \
        "$((dirty >> 20))" >>"$RESULTS"
    printf '%-10s %-9s run %d: %6.2f s wall, %5.2f s sync, peak %4d MiB, dirty %4d MiB, oom_kill %s, %s\n' \
        "$op" "$tool" "$run" "${wall:-0}" "$sync_s" "$((peak >> 20))" "$((dirty >> 20))" "${oom:-?}" "$status"
}

note "qimg: $QIMG"
note "qemu-img: $("$QEMU_IMG" --version | head -n 1)"
note "cgroup: $CG_MODE under $CG_TOP, limit $LIMIT_MIB MiB, no swap; $(uname -r)"
note "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $BENCH_TMP on $(df -PT "$BENCH_TMP" | awk 'NR == 2 { print $2 }')"
note "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for op in $OPS; do
    op_spec "$op" >/dev/null
    for ((run = 1; run <= RUNS; run++)); do
        # Alternate the order of the tools from run to run.
        order=$TOOLS
        ((run % 2)) || order=$(echo "$TOOLS" | tr ' ' '\n' | tac | tr '\n' ' ')
        for tool in $order; do run_one "$op" "$tool" "$run"; done
    done
done
note "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "convert in a $LIMIT_MIB MiB memory cgroup ($CG_MODE): ${SIZE_GIB} GiB mixed source, $RUNS run(s) per tool, cold cache"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
keys = []
for r in rows:
    if (r[0], r[1]) not in keys:
        keys.append((r[0], r[1]))
head = ("operation", "tool", "runs", "wall s", "+sync s", "peak MiB", "dirty MiB", "rss MiB", "limit hits", "oom kills",
        "budget MiB", "status")
out = [head]
for op, tool in keys:
    rs = [r for r in rows if r[0] == op and r[1] == tool]
    ok = [r for r in rs if r[10] == "ok"] or rs
    med = lambda i: "%.2f" % statistics.median(float(r[i]) for r in ok)
    status = ",".join(sorted(set(r[10] for r in rs)))
    out.append((op, tool, str(len(rs)), med(3), "%.2f" % statistics.median(float(r[3]) + float(r[4]) for r in ok),
                str(max(int(r[5]) for r in rs)), str(max(int(r[11]) for r in rs)), str(max(int(r[8]) for r in rs)),
                str(max(int(r[7]) if r[7].isdigit() else 0 for r in rs)),
                str(sum(int(r[6]) if r[6].isdigit() else 0 for r in rs)), rs[0][9], status))
w = [max(len(r[i]) for r in out) for i in range(len(head))]
for n, r in enumerate(out):
    print("  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)).rstrip())
    if n == 0:
        print("  ".join("-" * x for x in w))
EOF
if grep -qP '\t(failed|killed|mismatch)$' "$RESULTS"; then exit 1; fi
