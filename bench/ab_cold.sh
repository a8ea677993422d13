#!/bin/bash
# A/B of one convert with a cold cache: each binary in turn, N rounds, the
# page cache dropped before every run (needs root), wall times printed one
# per line and the medians at the end. For comparing two qimg builds (and
# qemu-img) on one operation more cheaply than bench_convert.sh, e.g.
#   SRC=/var/tmp/qimg-bench-source/mixed-2G-...raw N=5 \
#     bench/ab_cold.sh qemu-img build-old/qimg build/qimg
# `qemu-img` runs the real tool with -m 16 -W; OUT_FMT (default qcow2) is
# the target format.
set -euo pipefail
: "${SRC:?SRC=raw source image}"
N=${N:-5}
OUT_FMT=${OUT_FMT:-qcow2}
D=$(mktemp -d /var/tmp/ab.XXXX)
trap 'rm -rf "$D"' EXIT
declare -A times
for ((i = 1; i <= N; i++)); do
    for t in "$@"; do
        rm -f "$D/o"
        sync
        echo 3 >/proc/sys/vm/drop_caches
        if [[ $t == qemu-img ]]; then cmd=(/usr/bin/qemu-img convert -m 16 -W -O "$OUT_FMT" "$SRC" "$D/o")
        else cmd=("$t" convert -O "$OUT_FMT" "$SRC" "$D/o"); fi
        s=$(date +%s.%N)
        "${cmd[@]}"
        e=$(date +%s.%N)
        w=$(echo "$e - $s" | bc)
        echo "$t $w"
        times[$t]+="$w "
    done
done
for t in "$@"; do
    echo "median $t $(echo "${times[$t]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')"
done
