#!/usr/bin/env bash
# A-vs-B benchmark of the metadata-bound commands (info, map, measure, check,
# compare) on 1 TiB qcow2 images holding hundreds of thousands of scattered
# clusters, qimg against the real qemu-img, alternating run by run. Every
# command's stdout must be identical between the two tools (a run whose
# output differs counts as "mismatch"). See bench/README.md.
#
# The images are made by the real qemu-img from a deterministic sparse raw
# file (make_scattered.py): CLUSTERS pieces of 4 KiB at random 64 KiB-aligned
# offsets of a 1 TiB disk, then
#   scattered-c.qcow2   64 KiB clusters, every piece a compressed cluster
#   scattered-4k.qcow2  4 KiB clusters, uncompressed (one L2 table per piece)
#
# Environment:
#   QIMG=build/qimg        the qimg binary
#   CLUSTERS=200000        scattered pieces
#   RUNS=5                 runs per tool and operation
#   BENCH_TMP=/var/tmp     scratch space (~2.5 GiB with the default CLUSTERS)
#   OPS="..."              operations (default: all but compare-c-4k, see op_cmd)
#   KEEP_IMAGES=1          keep the generated images for the next run
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
QIMG=$(realpath -m "${QIMG:-$ROOT/build/qimg}")
QEMU_IMG=/usr/bin/qemu-img
CLUSTERS=${CLUSTERS:-200000}
RUNS=${RUNS:-5}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
KEEP_IMAGES=${KEEP_IMAGES:-0}
ALL_OPS="info-c info-json-c map-json-c map-c measure-c check-c check-json-c info-4k map-json-4k measure-4k check-4k compare-c-4k"
# compare reads the whole 1 TiB twice (minutes per run): ask for it in OPS.
DEFAULT_OPS="info-c info-json-c map-json-c map-c measure-c check-c check-json-c info-4k map-json-4k measure-4k check-4k"
OPS=${OPS:-$DEFAULT_OPS}

die() { echo "bench_metadata.sh: $*" >&2; exit 1; }
note() { echo "# $*"; }

[[ $CLUSTERS =~ ^[1-9][0-9]*$ ]] || die "CLUSTERS must be a positive number"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"
[[ -x $QIMG ]] || die "no qimg binary at $QIMG (build it, or set QIMG=)"
[[ -x $QEMU_IMG ]] || die "the real qemu-img is missing: apt-get install qemu-utils"
[[ -x /usr/bin/time ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >/dev/null ||
    die "/usr/bin/time is missing (apt-get install time)"

CACHE=$BENCH_TMP/qimg-bench-scattered
gen_sum=$(sha256sum "$HERE/make_scattered.py" | cut -c1-12)
TAG=$CLUSTERS-$gen_sum
IMG_C=$CACHE/scattered-c-$TAG.qcow2
IMG_4K=$CACHE/scattered-4k-$TAG.qcow2
WORK=$(mktemp -d "$BENCH_TMP/qimg-bench-md.XXXXXX")
cleanup() {
    rm -rf "$WORK"
    [[ $KEEP_IMAGES == 1 ]] || rm -rf "$CACHE"
}
trap cleanup EXIT
mkdir -p "$CACHE"

if [[ -f $IMG_4K.done ]]; then
    note "reusing $CACHE"
else
    rm -f "$CACHE"/scattered-*
    raw=$CACHE/scattered.raw
    note "generating $CLUSTERS scattered 4 KiB pieces in a 1 TiB raw file"
    python3 "$HERE/make_scattered.py" --clusters "$CLUSTERS" "$raw"
    note "making the images with the real qemu-img"
    "$QEMU_IMG" convert -c -O qcow2 "$raw" "$IMG_C"
    "$QEMU_IMG" convert -O qcow2 -o cluster_size=4k "$raw" "$IMG_4K"
    rm -f "$raw"
    touch "$IMG_4K.done"
fi

# op_cmd OP: the qemu-img arguments of an operation.
op_cmd() {
    case $1 in
        info-c)        echo "info $IMG_C" ;;
        info-json-c)   echo "info --output=json $IMG_C" ;;
        map-json-c)    echo "map --output=json $IMG_C" ;;
        map-c)         echo "map $IMG_C" ;;
        measure-c)     echo "measure -O qcow2 $IMG_C" ;;
        check-c)       echo "check $IMG_C" ;;
        check-json-c)  echo "check --output=json $IMG_C" ;;
        info-4k)       echo "info $IMG_4K" ;;
        map-json-4k)   echo "map --output=json $IMG_4K" ;;
        measure-4k)    echo "measure -O qcow2 $IMG_4K" ;;
        check-4k)      echo "check $IMG_4K" ;;
        compare-c-4k)  echo "compare $IMG_C $IMG_4K" ;;
        *) die "unknown operation $1 (known: $ALL_OPS)" ;;
    esac
}
for op in $OPS; do op_cmd "$op" >/dev/null; done

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# run_one OP TOOL_NAME TOOL_PATH RUN: one timed command; its stdout is kept
# in $WORK/out.TOOL_NAME for the comparison between the tools.
run_one() {
    local op=$1 name=$2 tool=$3 run=$4 status=ok wall user sys rss
    # shellcheck disable=SC2046  # the command is a word list on purpose
    if ! /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" \
            "$tool" $(op_cmd "$op") >"$WORK/out.$name" 2>"$WORK/err.$name"; then
        # check and compare exit non-zero on purpose for some images; the
        # comparison with qemu-img's exit code is what matters.
        echo $? >"$WORK/rc.$name"
    else
        echo 0 >"$WORK/rc.$name"
    fi
    read -r wall user sys rss < <(grep -E '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$' "$WORK/time.txt" | tail -1) || true
    if [[ $name == qimg ]]; then
        if ! cmp -s "$WORK/out.qimg" "$WORK/out.qemu-img" || ! cmp -s "$WORK/rc.qimg" "$WORK/rc.qemu-img"; then
            status=mismatch
            note "$op run $run: qimg's output or exit code differs from qemu-img's:"
            diff "$WORK/out.qemu-img" "$WORK/out.qimg" | head -n 5 | sed 's/^/#   /' || true
            sed 's/^/#   stderr: /' "$WORK/err.qimg" | head -n 3
        fi
    fi
    local out_kib=$(( ($(stat -c %s "$WORK/out.$name") + 1023) / 1024 ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$op" "$name" "$run" "${wall:-0}" "${user:-0}" "${sys:-0}" "${rss:-0}" "$out_kib" "$status" >>"$RESULTS"
    printf '%-14s %-8s run %d: %6.2f s wall, %s\n' "$op" "$name" "$run" "${wall:-0}" "$status"
}

note "qimg: $QIMG"
note "qemu-img: $("$QEMU_IMG" --version | head -n 1)"
note "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (want ~0: run on an idle machine)"
note "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
note "images: $(du -h "$IMG_C" | cut -f1) compressed, $(du -h "$IMG_4K" | cut -f1) 4k-cluster; warm page cache"
for op in $OPS; do
    # qemu-img always runs first within a run: qimg's output is compared with it.
    run_one "$op" qemu-img "$QEMU_IMG" 0 >/dev/null   # warm-up, untimed
    sed -i '/\t0\t/d' "$RESULTS"
    for ((run = 1; run <= RUNS; run++)); do
        run_one "$op" qemu-img "$QEMU_IMG" "$run"
        run_one "$op" qimg "$QIMG" "$run"
    done
done

echo
note "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "metadata benchmark: 1 TiB qcow2 images with $CLUSTERS scattered clusters, $RUNS runs per tool, warm cache"
echo "(out MiB here: the size of the command's stdout)"
python3 "$HERE/report.py" "$RESULTS"
