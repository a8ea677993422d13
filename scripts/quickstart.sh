#!/usr/bin/env bash
# From a fresh Debian 12 clone to a first conversion: installs the build
# and test dependencies (scripts/debian-packages.txt), builds build/qimg
# (Release), makes a 256 MiB raw image with
# mixed content using the real qemu-io, converts it with qimg and checks the
# copy with the real `qemu-img compare`.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '\n>>> %s\n' "$*"; }

# The build dependencies and those of the test suite (so that the README's
# test command works next), one list with .ci/run.
mapfile -t PACKAGES < <(sed 's/#.*//' scripts/debian-packages.txt | tr -s ' \t' '\n' | sed '/^$/d')

missing=()
for p in "${PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] ||
        missing+=("$p")
done
if ((${#missing[@]})); then
    say "Installing ${missing[*]}"
    SUDO=; ((EUID == 0)) || SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${PACKAGES[@]}"
else
    say "Build and test dependencies already installed"
fi

say "Building build/qimg (Release)"
generator=(-G Ninja)
[[ -f build/CMakeCache.txt ]] && generator=()
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DQIMG_WERROR=OFF
cmake --build build -j "$(nproc)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qimg-quickstart.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/source.raw
DST=$WORK/copy.raw

say "Creating a deterministic 256 MiB raw image in $WORK"
# Seeded random bytes and a licence text as qemu-io pattern files: qemu-io
# repeats a -s file to fill each write.
python3 -c 'import random, sys; sys.stdout.buffer.write(random.Random(20240501).randbytes(4 << 20))' \
    >"$WORK/random.bin"
cat /usr/share/common-licenses/GPL-3 >"$WORK/text.bin"
qemu-img create -q -f raw "$SRC" 256M
# Layout (MiB): 0-32 random | 32-48 text | 48-64 pattern 0xab | 64-96 written
# zeroes | 96-128 hole | 128-130 random | 130-160 hole | 160-192 text |
# 192-200 pattern 0x01 | 200-255 hole | last MiB random.
qemu-io -f raw \
    -c "write -q -s $WORK/random.bin 0 32M" \
    -c "write -q -s $WORK/text.bin 32M 16M" \
    -c "write -q -P 0xab 48M 16M" \
    -c "write -q -z 64M 32M" \
    -c "write -q -s $WORK/random.bin 128M 2M" \
    -c "write -q -s $WORK/text.bin 160M 32M" \
    -c "write -q -P 0x01 192M 8M" \
    -c "write -q -s $WORK/random.bin 255M 1M" \
    "$SRC"
qemu-img info "$SRC"
qemu-img map --output=human "$SRC" || true

say "Converting with: build/qimg convert -p -O raw source.raw copy.raw"
start=$EPOCHREALTIME
"$ROOT/build/qimg" convert -p -O raw "$SRC" "$DST"
python3 -c "print(f'took {$EPOCHREALTIME - $start:.2f} s')"

say "Verifying with the real qemu-img compare"
qemu-img compare -f raw -F raw "$SRC" "$DST"
du -h --apparent-size "$DST" | sed 's/^/apparent size: /'
du -h "$DST" | sed 's/^/allocated:     /'
say "Done: qimg's copy is identical to the source."
