#!/usr/bin/env bash
# Seeds for fuzz_vmdk_sesparse: seSparse extent files written by
# tests/interop/tools/make-sesparse (qemu-img cannot create seSparse), each
# with allocated, zero and unmapped grains, one or two grain tables. The
# fuzz target supplies the descriptor; only the extent file is a seed.
# Usage: tests/fuzz/make_sesparse_seeds.sh [OUT_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/tests/fuzz/corpus/fuzz_vmdk_sesparse}
MAKE=$ROOT/tests/interop/tools/make-sesparse
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
seed() {
    local name=$1; shift
    "$MAKE" "$tmp/d.vmdk" "$@"
    cp "$tmp/d-sesparse.vmdk" "$OUT/seed_$name.sesparse"
}
seed one_table --size 1M --data 0:8K:0xaa --zero 12K:4K --unmap 16K:4K --data 64K:4K:0x11
seed two_tables --size 17M --data 16M:4K:0xcc --data 4K:4K:0x01 --zero 0:4K
seed odd_size --size 3000K --data 2996K:4K:0x5c --unmap 8K:4K
