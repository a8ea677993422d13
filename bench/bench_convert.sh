#!/usr/bin/env bash
# A-vs-B benchmark of `convert`: qimg against the real qemu-img on the same
# multi-GiB raw images, alternating tools run by run, checking every output
# with the real `qemu-img compare`. See bench/README.md.
#
# Environment:
#   QIMG=build/qimg        the qimg binary
#   DATASETS="ext4 mixed"  ext4: a guest disk with an ext4 filesystem half
#                          full of this machine's files (make_ext4.py);
#                          mixed: synthetic random/text/zero/hole extents
#                          (make_image.py)
#   SIZE_GIB=4             source image size (whole GiB)
#   RUNS=3                 runs per tool and operation
#   BENCH_TMP=/var/tmp     where the scratch dir goes (needs ~3x SIZE_GIB free)
#   SEED=20240501          image content seed
#   OPS="raw-raw raw-raw-m16W raw-qcow2 raw-qcow2-m16W qcow2-raw qcow2-raw-m16W
#        qcow2-qcow2 qcow2-qcow2-m16W raw-qcow2-c raw-qcow2-czstd raw-qcow2-cfast"
#                          operations to run (qcow2 ones only if qimg can
#                          create a qcow2 the real tool accepts); an -m16W
#                          operation runs qemu-img with `-m 16 -W` (its
#                          fastest settings) against qimg's default
#                          also known, not run by default: raw-vpc,
#                          raw-vpc-fixed (subformat=fixed), vpc-raw (from
#                          a dynamic VHD the real qemu-img wrote), raw-vdi,
#                          raw-vdi-static (static=on), raw-qcow, qcow-raw,
#                          raw-qed, qed-raw, raw-vhdx, vhdx-raw, raw-vmdk,
#                          raw-vmdk-stream (subformat=streamOptimized),
#                          vmdk-raw, vmdk-qcow2, raw-luks, luks-raw,
#                          vdi-raw, raw-parallels, parallels-raw (each
#                          FMT-raw from an image the real qemu-img wrote;
#                          luks: aes-256-xts-plain64, the default, with
#                          iter-time=10 so that key derivation, the same
#                          fixed cost for both, does not hide the data path),
#                          and for the read-only formats dmg-raw, cloop-raw,
#                          bochs-raw (sources written by tests/interop/tools'
#                          make-dmg, make-cloop, make-bochs, as qemu-img
#                          cannot create them)
#   TASKSET=0              run both tools under `taskset -c $TASKSET` (e.g. one core)
#   KEEP_SOURCE=1          keep the generated source image for the next run
#   QIMG_ARGS=             extra arguments for qimg's convert (e.g. --write-behind=0)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
QIMG=$(realpath -m "${QIMG:-$ROOT/build/qimg}")
QEMU_IMG=/usr/bin/qemu-img
SIZE_GIB=${SIZE_GIB:-4}
RUNS=${RUNS:-3}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
SEED=${SEED:-20240501}
ALL_OPS="raw-raw raw-raw-m16W raw-qcow2 raw-qcow2-m16W qcow2-raw qcow2-raw-m16W qcow2-qcow2 qcow2-qcow2-m16W raw-qcow2-c raw-qcow2-czstd raw-qcow2-cfast"
OPS=${OPS:-$ALL_OPS}
TASKSET=${TASKSET:-}
KEEP_SOURCE=${KEEP_SOURCE:-0}
QIMG_ARGS=${QIMG_ARGS:-}
DATASETS=${DATASETS:-ext4 mixed}

die() { echo "bench_convert.sh: $*" >&2; exit 1; }
note() { echo "# $*"; }

KNOWN_OPS="$ALL_OPS raw-vpc raw-vpc-fixed vpc-raw raw-vdi raw-vdi-static raw-qcow qcow-raw raw-qed qed-raw raw-vhdx vhdx-raw raw-vmdk raw-vmdk-stream vmdk-raw vmdk-qcow2 raw-luks luks-raw vdi-raw raw-parallels parallels-raw dmg-raw cloop-raw bochs-raw"
for op in $OPS; do
    [[ " $KNOWN_OPS " == *" $op "* ]] || die "unknown operation $op (known: $KNOWN_OPS)"
done
[[ $SIZE_GIB =~ ^[1-9][0-9]*$ ]] || die "SIZE_GIB must be a whole number of GiB"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"
[[ -x $QIMG ]] || die "no qimg binary at $QIMG (build it, or set QIMG=)"
[[ -x $QEMU_IMG ]] || die "the real qemu-img is missing: apt-get install qemu-utils"
if [[ ! -x /usr/bin/time ]]; then
    note "installing GNU time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >/dev/null ||
        die "/usr/bin/time is missing and could not be installed (apt-get install time)"
fi

# Source images are cached by (dataset, size, seed, generator) so that
# repeated benchmark runs do not pay for them again when KEEP_SOURCE=1.
CACHE=$BENCH_TMP/qimg-bench-source
mkdir -p "$CACHE"
WORK=$(mktemp -d "$BENCH_TMP/qimg-bench.XXXXXX")
cleanup() {
    rm -rf "$WORK"
    [[ $KEEP_SOURCE == 1 ]] || rm -rf "$CACHE"
}
trap cleanup EXIT

need_kib=$(( (3 * SIZE_GIB + 1) * 1024 * 1024 ))
free_kib=$(df -Pk "$BENCH_TMP" | awk 'NR == 2 { print $4 }')
((free_kib > need_kib)) || note "warning: $BENCH_TMP has $((free_kib / 1024)) MiB free, the benchmark wants ~$((need_kib / 1024)) MiB"

# make_source DATASET: generates (or reuses) the dataset's raw source, sets SRC.
make_source() {
    local gen
    case $1 in
        mixed) gen=$HERE/make_image.py ;;
        ext4)  gen=$HERE/make_ext4.py ;;
        *) die "unknown dataset $1 (known: ext4 mixed)" ;;
    esac
    SRC=$CACHE/$1-${SIZE_GIB}G-$SEED-$(sha256sum "$gen" | cut -c1-12).raw
    if [[ -f $SRC.done ]]; then
        note "reusing $SRC"
        return
    fi
    rm -f "$CACHE/$1"-*
    note "generating the ${SIZE_GIB} GiB $1 source image"
    case $1 in
        mixed) python3 "$gen" --size-gib "$SIZE_GIB" --seed "$SEED" "$SRC" ;;
        ext4)  python3 "$gen" --size-gib "$SIZE_GIB" "$SRC" ;;
    esac
    touch "$SRC.done"
}

# Both tools read the same qcow2, written once by the real qemu-img.
ensure_source_qcow2() {
    [[ -f $SRC_QCOW2 ]] && return
    note "making the qcow2 source with the real qemu-img"
    "$QEMU_IMG" convert -O qcow2 "$SRC" "$SRC_QCOW2"
}

# The same for vpc-raw: a dynamic VHD the real qemu-img wrote.
ensure_source_vpc() {
    [[ -f $SRC_VPC ]] && return
    note "making the vpc source with the real qemu-img"
    "$QEMU_IMG" convert -O vpc "$SRC" "$SRC_VPC"
}

# The same for qcow-raw, qed-raw, vhdx-raw, vmdk-raw, vdi-raw and
# parallels-raw; dmg, cloop and bochs sources come from the interop tools
# (qemu-img cannot create those formats; dmg chunks of 1 MiB zlib, cloop
# blocks of 64 KiB, bochs extents of 64 KiB).
ensure_source_fmt() {
    [[ -f $WORK/source-$ds.$1 ]] && return
    local tools=$ROOT/tests/interop/tools out=$WORK/source-$ds.$1
    case $1 in
        dmg)   note "making the dmg source with make-dmg"
               python3 "$tools/make-dmg" "$out" "$SRC" --chunk-sectors 2048 ;;
        cloop) note "making the cloop source with make-cloop"
               python3 "$tools/make-cloop" "$out" "$SRC" ;;
        bochs) note "making the bochs source with make-bochs"
               python3 "$tools/make-bochs" "$out" --input "$SRC" --extent 65536 ;;
        *)     note "making the $1 source with the real qemu-img"
               "$QEMU_IMG" convert -O "$1" "$SRC" "$out" ;;
    esac
}

# qcow2 operations only if this qimg can write a qcow2 the real tool accepts.
qimg_has_qcow2() {
    local probe=$WORK/probe.qcow2
    "$QIMG" create -q -f qcow2 "$probe" 1M >/dev/null 2>&1 &&
        "$QEMU_IMG" check -q "$probe" >/dev/null 2>&1
    local rc=$?
    rm -f "$probe"
    return $rc
}

CAN_DROP_CACHES=0
if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    CAN_DROP_CACHES=1
    note "page cache is dropped before every run (cold-cache numbers)"
else
    note "cannot write /proc/sys/vm/drop_caches (not root, or a container):" \
         "runs are warm-cache, the first run of each pair may differ"
fi
# Also lets the previous run's writeback and file deletion settle, which
# otherwise lands in the next run's wall time.
drop_caches() {
    sync
    ((CAN_DROP_CACHES)) && echo 3 >/proc/sys/vm/drop_caches
    sleep "${SETTLE_S:-1}"
}

# op_spec OP: prints "<source> <source fmt> <out fmt> <extra convert args>".
op_spec() {
    case $1 in
        raw-raw|raw-raw-m16W)         echo "$SRC raw raw" ;;
        raw-qcow2|raw-qcow2-m16W)     echo "$SRC raw qcow2" ;;
        qcow2-raw|qcow2-raw-m16W)     echo "$SRC_QCOW2 qcow2 raw" ;;
        qcow2-qcow2|qcow2-qcow2-m16W) echo "$SRC_QCOW2 qcow2 qcow2" ;;
        raw-vpc)       echo "$SRC raw vpc" ;;
        raw-vpc-fixed) echo "$SRC raw vpc -o subformat=fixed" ;;
        vpc-raw)       echo "$SRC_VPC vpc raw" ;;
        raw-vdi)       echo "$SRC raw vdi" ;;
        raw-vdi-static) echo "$SRC raw vdi -o static=on" ;;
        raw-qcow|raw-qed|raw-vhdx|raw-vmdk|raw-parallels) echo "$SRC raw ${1#raw-}" ;;
        raw-vmdk-stream) echo "$SRC raw vmdk -o subformat=streamOptimized" ;;
        qcow-raw|qed-raw|vhdx-raw|vmdk-raw|vdi-raw|parallels-raw|dmg-raw|cloop-raw|bochs-raw)
            echo "$WORK/source-$ds.${1%-raw} ${1%-raw} raw" ;;
        vmdk-qcow2) echo "$WORK/source-$ds.vmdk vmdk qcow2" ;;
        # luks: the secret is an --object; the encrypted side is named by a
        # json: filename carrying key-secret (no -f for it: "-").
        raw-luks) echo "$SRC raw luks -o key-secret=sec0,iter-time=10" ;;
        luks-raw) echo "$(luks_json "$WORK/source-$ds.luks") - raw" ;;
        raw-qcow2-c)  echo "$SRC raw qcow2 -c" ;;
        raw-qcow2-czstd) echo "$SRC raw qcow2 -c -o compression_type=zstd" ;;
        # qemu-img has no faster deflate: it runs plain -c as the baseline.
        raw-qcow2-cfast) echo "$SRC raw qcow2 -c" ;;
        *) die "unknown operation $1 (known: $KNOWN_OPS)" ;;
    esac
}

LUKS_OBJECT=(--object secret,id=sec0,data=qimg-bench)
luks_json() { printf 'json:{"driver":"luks","key-secret":"sec0","file":{"filename":"%s"}}' "$1"; }

# The luks source of luks-raw, written by the real qemu-img.
ensure_source_luks() {
    [[ -f $WORK/source-$ds.luks ]] && return
    note "making the luks source with the real qemu-img"
    local try
    for try in 1 2 3 4 5 6; do
        "$QEMU_IMG" convert "${LUKS_OBJECT[@]}" -O luks -o key-secret=sec0,iter-time=10 "$SRC" \
            "$WORK/source-$ds.luks" 2>"$WORK/luks.log" && return
        # qemu-img 7.2's PBKDF calibration fails at random on VMs (issue 16).
        grep -q 'Unable to get accurate CPU usage' "$WORK/luks.log" || break
        note "qemu-img's PBKDF calibration failed (try $try), again"
    done
    cat "$WORK/luks.log" >&2
    die "could not make the luks source"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# run_one OP TOOL_NAME TOOL_PATH RUN: one timed conversion, then its check.
run_one() {
    local op=$1 name=$2 tool=$3 run=$4
    local src src_fmt out_fmt extra out timing status
    read -r src src_fmt out_fmt extra <<<"$(op_spec "$op")"
    # qimg-only arguments of an operation.
    [[ $op == raw-qcow2-cfast && $tool == "$QIMG" ]] && extra="$extra --compress-level=fast"
    # qemu-img at its fastest (16 coroutines, out-of-order writes) against
    # qimg's default: the comparison issue 11 asks for.
    [[ $op == *-m16W && $tool == "$QEMU_IMG" ]] && extra="$extra -m 16 -W"
    [[ $tool == "$QIMG" && -n $QIMG_ARGS ]] && extra="$extra $QIMG_ARGS"
    local pin=()
    [[ -n $TASKSET ]] && pin=(taskset -c "$TASKSET")
    out=$WORK/out.$out_fmt
    rm -f "$out"
    drop_caches
    timing=$WORK/time.txt
    # shellcheck disable=SC2086  # extra is a word list on purpose
    local fmt_args=(-f "$src_fmt") obj=()
    [[ $src_fmt == - ]] && fmt_args=()
    [[ $src_fmt == luks || $out_fmt == luks || $op == *luks* ]] && obj=("${LUKS_OBJECT[@]}")
    local cmd=("$tool" convert "${obj[@]}" "${fmt_args[@]}" -O "$out_fmt" $extra "$src" "$out")
    # The floor for raw-raw: the same sparse copy done by cp.
    [[ $name == cp ]] && cmd=(cp --sparse=always "$src" "$out")
    local rc=0 sync_s t0
    "${pin[@]}" /usr/bin/time -f '%e %U %S %M' -o "$timing" "${cmd[@]}" >"$WORK/convert.log" 2>&1 || rc=$?
    # qemu-img 7.2's LUKS key-slot calibration fails at random on VMs
    # ("Unable to get accurate CPU usage", issue 16): such a run measured
    # nothing, so it is run again (at most 5 times), and said.
    local again=0
    while ((rc != 0 && again < 5)) && grep -q 'Unable to get accurate CPU usage' "$WORK/convert.log"; do
        again=$((again + 1))
        note "$op $name run $run: qemu-img's PBKDF calibration failed, running again ($again)"
        rm -f "$out"
        rc=0
        "${pin[@]}" /usr/bin/time -f '%e %U %S %M' -o "$timing" "${cmd[@]}" >"$WORK/convert.log" 2>&1 || rc=$?
    done
    # What the tool left dirty in the page cache still has to reach the disk
    # (qemu-img's cache=unsafe target leaves all of it; qimg's write-behind
    # little): the sync right after the run is the rest of the cost of a
    # durable copy, reported as "+sync".
    t0=$(date +%s.%N)
    sync
    sync_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    if ((rc == 0)); then
        local cmp=(-f "$src_fmt" -F "$out_fmt" "$src" "$out")
        [[ $out_fmt == luks ]] && cmp=(-f "$src_fmt" "$src" "$(luks_json "$out")")
        [[ $src_fmt == - ]] && cmp=(-F "$out_fmt" "$src" "$out")
        if "$QEMU_IMG" compare "${obj[@]}" -q "${cmp[@]}" 2>"$WORK/compare.log" &&
            { [[ $out_fmt != qcow2 ]] || "$QEMU_IMG" check -q "$out" >"$WORK/compare.log" 2>&1; }; then
            status=ok
        else
            status=mismatch
            note "$op $name run $run: qemu-img compare says the output differs:"
            sed 's/^/#   /' "$WORK/compare.log"
        fi
    else
        status=failed
        note "$op $name run $run: convert failed:"
        sed 's/^/#   /' "$WORK/convert.log" | tail -n 5
    fi
    local wall user sys rss
    read -r wall user sys rss < <(grep -E '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$' "$timing" | tail -1) || true
    local out_kib=0
    [[ -e $out ]] && out_kib=$(du -k "$out" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$ds/$op" "$name" "$run" "${wall:-0}" "${user:-0}" "${sys:-0}" "${rss:-0}" "$out_kib" "$status" "$sync_s" \
        >>"$RESULTS"
    printf '%-20s %-8s run %d: %6.2f s wall, %5.2f s sync, %s\n' "$ds/$op" "$name" "$run" "${wall:-0}" "$sync_s" "$status"
    rm -f "$out"
}

HAS_QCOW2=0
if qimg_has_qcow2; then HAS_QCOW2=1; else note "qimg cannot create qcow2 yet: qcow2 operations skipped"; fi

note "qimg: $QIMG"
note "qemu-img: $("$QEMU_IMG" --version | head -n 1)"
# Other work on the machine swamps the differences being measured: show it.
note "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (want ~0: run on an idle machine)"
[[ -n $TASKSET ]] && note "both tools pinned: taskset -c $TASKSET"
note "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $BENCH_TMP on $(df -PT "$BENCH_TMP" | awk 'NR == 2 { print $2 }')"
for ds in $DATASETS; do
make_source "$ds"
SRC_QCOW2=$WORK/source-$ds.qcow2
SRC_VPC=$WORK/source-$ds.vhd
for op in $OPS; do
    op_spec "$op" >/dev/null
    if [[ $op == *qcow2* ]]; then
        ((HAS_QCOW2)) || continue
        [[ $op == qcow2-* ]] && ensure_source_qcow2
    fi
    [[ $op == vpc-* ]] && ensure_source_vpc
    case $op in
        qcow-raw|qed-raw|vhdx-raw|vmdk-raw|vdi-raw|parallels-raw|dmg-raw|cloop-raw|bochs-raw)
            ensure_source_fmt "${op%-raw}" ;;
        vmdk-qcow2) ensure_source_fmt vmdk ;;
    esac
    [[ $op == luks-raw ]] && ensure_source_luks
    # One untimed run first: the first conversion after the source was
    # written is often much slower, whichever tool does it.
    run_one "$op" warmup "$QEMU_IMG" 0 >/dev/null
    sed -i '/\twarmup\t/d' "$RESULTS"
    for ((run = 1; run <= RUNS; run++)); do
        # Alternate who goes first so that neither always gets the warmer disk.
        if ((run % 2)); then
            run_one "$op" qemu-img "$QEMU_IMG" "$run"
            run_one "$op" qimg "$QIMG" "$run"
        else
            run_one "$op" qimg "$QIMG" "$run"
            run_one "$op" qemu-img "$QEMU_IMG" "$run"
        fi
        [[ $op == raw-raw ]] && run_one "$op" cp cp "$run"
    done
done
rm -f "$SRC_QCOW2" "$SRC_VPC" "$WORK/source-$ds".{qcow,qed,vhdx,vmdk,luks,vdi,parallels,dmg,cloop,bochs}
done

echo
note "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "convert benchmark: ${SIZE_GIB} GiB raw sources ($DATASETS), $RUNS runs per tool," \
     "$( ((CAN_DROP_CACHES)) && echo cold || echo warm) cache"
python3 "$HERE/report.py" "$RESULTS"
