#!/usr/bin/env bash
# Builds msharefs, mounts it on /run/mshare (unless a live msharefs serves
# there already; a dead one, left by a killed server, is replaced by a new
# server, which adopts its regions) and runs the kernel cover letter's donor and consumer
# programs, compiled as C against include/mshare.h, in two processes.
# The mount stays; `umount /run/mshare` removes it and frees its regions.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${MSHARE_DIR:-/run/mshare}

command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null; }
cargo build --release --workspace --quiet
mkdir -p "$dir"
if ! grep -q " $dir [^ ]* - fuse.msharefs " /proc/self/mountinfo \
    || ! [ -r "$dir/mshare_info" ]; then
    target/release/msharefs msharefs "$dir"
fi
echo "== mounted:"; grep " $dir " /proc/self/mountinfo
echo "== $dir/mshare_info: $(cat "$dir/mshare_info")"

mkdir -p target/examples
cc -O2 -Wno-unused-result -Wno-sizeof-pointer-memaccess -Ilibmshare/include -o target/examples/donor examples/donor.c
cc -O2 -Ilibmshare/include -o target/examples/consumer examples/consumer.c
rm -f "$dir/shareme"
echo "== donor:";    MSHARE_DIR=$dir target/examples/donor
echo "== consumer:"; MSHARE_DIR=$dir target/examples/consumer
echo "== regions:";  ls -l "$dir"
rm -f "$dir/shareme"
