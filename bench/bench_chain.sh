#!/usr/bin/env bash
# A-vs-B benchmark of `commit` and `rebase`: qimg against the real qemu-img
# on the same backing chains, built by the real tools, alternating tools run
# by run, every result checked with the real `qemu-img compare`. See
# bench/README.md.
#
# Environment:
#   QIMG=build/qimg     the qimg binary
#   SIZE_MIB=512        virtual size of the chain
#   RUNS=3              runs per tool and operation
#   BENCH_TMP=/var/tmp  scratch (needs ~8 x SIZE_MIB free)
#   SEED=20240501       content seed
#   OPS="commit-qcow2 commit-raw rebase rebase-flatten"
#   KEEP_WORK=1         keep the scratch dir (the chain) and print where
#   QIMG_B=             optional second qimg binary (e.g. an older build),
#                       timed as tool "qimg-b"
#
# The chain: base (qcow2, or raw for commit-raw) fully written with seeded
# random bytes; top (qcow2, 64 KiB clusters) holds seeded random extents of
# 4 KiB-1 MiB at unaligned offsets over ~40 % of the image, some zeroed
# extents and some compressed clusters; `new` (for rebase) differs from the
# base in other extents over ~20 %. Every run starts from fresh copies (the
# copy is not timed, and synced); page caches are warm for both tools
# alike.
#   commit-qcow2    commit -d top.qcow2            (qcow2 base)
#   commit-raw      commit -d top.qcow2            (raw base)
#   rebase          rebase -b new.qcow2 -F qcow2 top.qcow2
#   rebase-flatten  rebase -b '' top.qcow2
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
QIMG=$(realpath -m "${QIMG:-$ROOT/build/qimg}")
QEMU_IMG=/usr/bin/qemu-img
QIMG_B=${QIMG_B:+$(realpath -m "$QIMG_B")}
TOOLS="qemu-img qimg${QIMG_B:+ qimg-b}"
SIZE_MIB=${SIZE_MIB:-512}
RUNS=${RUNS:-3}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
SEED=${SEED:-20240501}
ALL_OPS="commit-qcow2 commit-raw rebase rebase-flatten"
OPS=${OPS:-$ALL_OPS}

die() { echo "bench_chain.sh: $*" >&2; exit 1; }
note() { echo "# $*"; }

for op in $OPS; do
    [[ " $ALL_OPS " == *" $op "* ]] || die "unknown operation $op (known: $ALL_OPS)"
done
[[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a whole number of MiB"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"
[[ -x $QIMG ]] || die "no qimg binary at $QIMG (build it, or set QIMG=)"
[[ -x $QEMU_IMG ]] || die "the real qemu-img is missing: apt-get install qemu-utils"

WORK=$(mktemp -d "$BENCH_TMP/qimg-bench-chain.XXXXXX")
if [[ ${KEEP_WORK:-0} == 1 ]]; then trap 'note "kept $WORK"' EXIT; else trap 'rm -rf "$WORK"' EXIT; fi
cd "$WORK"

# gen_layer OUT.raw SIZE SEED COVER: a sparse raw file holding seeded random
# extents of 4 KiB-1 MiB at unaligned offsets over about COVER % of SIZE
# (or everything with COVER=100), plus qemu-io commands for a few zeroed
# extents and compressed clusters in OUT.zero.
gen_layer() {
    python3 - "$@" <<'EOF'
import os, random, sys
out, size, seed, cover = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
with open(out, "wb") as f:
    f.truncate(size)
    if cover >= 100:
        for off in range(0, size, 1 << 20):
            f.seek(off)
            f.write(rnd.randbytes(min(1 << 20, size - off)))
    else:
        done = 0
        while done < size * cover // 100:
            n = rnd.randint(4096, 1 << 20) + rnd.randint(0, 511)
            off = rnd.randint(0, size - n)
            f.seek(off)
            f.write(rnd.randbytes(n))
            done += n
with open(out + ".zero", "w") as z:
    for _ in range(64):
        n = rnd.randint(1, 256) * 1024 + rnd.randint(0, 4095)
        z.write("-c 'write -z %d %d' " % (rnd.randint(0, size - n), n))
    for _ in range(32):
        c = rnd.randint(0, size // 65536 - 2)
        # compressed writes cannot overwrite an allocated cluster: discard first
        z.write("-c 'discard %d 64k' -c 'write -c -P %d %d 64k' " % (c * 65536, rnd.randint(1, 255), c * 65536))
EOF
}

size=$((SIZE_MIB << 20))
note "building a ${SIZE_MIB} MiB chain in $WORK"
gen_layer base.raw "$size" "$SEED" 100
gen_layer top.raw "$size" $((SEED + 1)) 40
gen_layer new.raw "$size" $((SEED + 2)) 20
$QEMU_IMG convert -f raw -O qcow2 base.raw base.qcow2
# extents FILE: "offset length" of each data extent of a sparse file
extents() {
    python3 - "$1" <<'EOF'
import os, sys
fd, off = os.open(sys.argv[1], os.O_RDONLY), 0
while True:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, off, os.SEEK_HOLE)
    print(off, hole - off)
    off = hole
EOF
}
# overlay LAYER.raw OUT.raw: OUT = base with LAYER's extents written over it
overlay() {
    cp --sparse=always base.raw "$2"
    extents "$1" | while read -r off len; do
        dd if="$1" of="$2" bs=1M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc status=none \
            skip="$off" seek="$off" count="$len"
    done
}
overlay new.raw new.full.raw
$QEMU_IMG convert -f raw -O qcow2 new.full.raw new.qcow2
# top: the extents of top.raw written by qemu-io (from files cut out with
# dd, 100 extents per qemu-io run), then zeroed extents and compressed
# clusters
$QEMU_IMG create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
extents top.raw >top.extents
split -l 100 top.extents top.extents.
for part in top.extents.?*; do
    args=()
    while read -r off len; do
        dd if=top.raw of="ext.$off" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$len" status=none
        args+=(-c "write -s ext.$off $off $len")
    done <"$part"
    qemu-io "${args[@]}" top.qcow2 >/dev/null
    rm -f ext.*
done
eval qemu-io "$(cat top.raw.zero)" top.qcow2 >/dev/null
rm -f new.full.raw new.raw top.raw top.extents*
cp top.qcow2 top-raw.qcow2
$QEMU_IMG rebase -u -b base.raw -F raw top-raw.qcow2
$QEMU_IMG convert -O raw top.qcow2 flat.raw
note "top: $($QEMU_IMG info top.qcow2 | grep 'disk size')"

# run TOOL OP: one timed run on fresh copies; prints seconds.
run() {
    local tool=$1 op=$2 bin
    case $tool in
        qimg) bin=$QIMG ;;
        qimg-b) bin=$QIMG_B ;;
        *) bin=$QEMU_IMG ;;
    esac
    rm -rf run && mkdir run
    case $op in
        commit-qcow2|rebase|rebase-flatten) cp base.qcow2 top.qcow2 run/ ;;
        commit-raw) cp --sparse=always base.raw run/ && cp top-raw.qcow2 run/top.qcow2 ;;
    esac
    [[ $op == rebase ]] && cp new.qcow2 run/
    sync  # the copies' dirty pages are not the tool's to write back
    local cmd
    case $op in
        commit-*) cmd=(commit -d top.qcow2) ;;
        rebase) cmd=(rebase -b new.qcow2 -F qcow2 top.qcow2) ;;
        rebase-flatten) cmd=(rebase -b '' top.qcow2) ;;
    esac
    local t0 t1
    t0=$(date +%s.%N)
    (cd run && "$bin" "${cmd[@]}" >/dev/null)
    t1=$(date +%s.%N)
    case $op in
        commit-qcow2) $QEMU_IMG compare -q -F raw run/base.qcow2 flat.raw ;;
        commit-raw) $QEMU_IMG compare -q -f raw -F raw run/base.raw flat.raw ;;
        rebase|rebase-flatten) $QEMU_IMG compare -q -F raw run/top.qcow2 flat.raw ;;
    esac || die "$tool $op: result differs from the chain's content"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

printf '%-16s %-9s %8s   %s\n' operation tool median runs
for op in $OPS; do
    declare -A times=()
    for ((i = 0; i < RUNS; i++)); do
        # alternate which tool goes first
        if ((i % 2)); then order=$(echo $TOOLS | tr ' ' '\n' | tac | tr '\n' ' '); else order=$TOOLS; fi
        for tool in $order; do
            t=$(run "$tool" "$op")
            times[$tool]+="$t "
        done
    done
    for tool in $TOOLS; do
        m=$(echo "${times[$tool]}" | tr ' ' '\n' | grep . | median)
        printf '%-16s %-9s %8.2f   %s\n' "$op" "$tool" "$m" "${times[$tool]}"
    done
done
