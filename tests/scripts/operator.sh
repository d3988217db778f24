#!/usr/bin/env bash
# What an operator's shell script does with msharectl, end to end: create a
# region, load a file into it, let several processes attach it, check that
# `msharectl show` names exactly those processes with the right sizes, read
# the data back and remove the region, relying on quiet success, the
# tab-separated output and the documented exit codes.
#
# usage: operator.sh MSHARECTL MOUNT BINDIR   (BINDIR: the built libmshare)
# Prints "operator.sh: ok" and exits 0, or says what failed and exits 1.
set -euo pipefail
ctl_bin=$1 mnt=$2 bindir=$3
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d)
pids=()
cleanup() {
    touch "$t/stop"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$t"
}
trap cleanup EXIT
fail() { echo "operator.sh: $*" >&2; exit 1; }
ctl() { "$ctl_bin" -d "$mnt" "$@"; }

# The holder, built against the library as a client would (pkg-config).
bash "$here/../../tools/install-libmshare.sh" --prefix "$t/prefix" --from "$bindir" >/dev/null
export PKG_CONFIG_PATH=$t/prefix/lib/pkgconfig LD_LIBRARY_PATH=$t/prefix/lib MSHARE_DIR=$mnt
# shellcheck disable=SC2046
cc -O2 -Wall -Werror -o "$t/hold" "$here/hold.c" $(pkg-config --cflags --libs mshare)

[ -z "$(ctl create sga 8M --mode 644)" ] || fail "create is not quiet"
set +e; ctl create sga 8M 2>/dev/null; rc=$?; set -e
[ "$rc" -eq 4 ] || fail "create of an existing region exits $rc, not 4"

head -c $((3 * 1024 * 1024 + 777)) /dev/urandom > "$t/in"
[ -z "$(ctl write sga --offset 1M < "$t/in")" ] || fail "write is not quiet"

for i in 1 2 3; do
    "$t/hold" sga "$t/ready.$i" "$t/stop" &
    pids+=($!)
done
for _ in $(seq 500); do
    [ -e "$t/ready.1" ] && [ -e "$t/ready.2" ] && [ -e "$t/ready.3" ] && break
    sleep 0.02
done
[ -e "$t/ready.3" ] || fail "the holders did not attach"

shown=$(ctl show sga 2>/dev/null)
rows=$(printf '%s\n' "$shown" | awk -F'\t' '/^PID\t/ { t = 1; next } t && NF')
got=$(printf '%s\n' "$rows" | cut -f1 | sort -n | tr '\n' ' ')
want=$(printf '%s\n' "${pids[@]}" | sort -n | tr '\n' ' ')
[ "$got" = "$want" ] || fail "show lists pids [$got], the holders are [$want]"
printf '%s\n' "$rows" | awk -F'\t' '$3 != 8388608 || $4 < 2097152 { exit 1 }' \
    || fail "a holder's MAPPED is not 8 MiB or RESIDENT is under 2 MiB: $rows"
printf '%s\n' "$shown" | grep -qx "mappers	3" || fail "show does not count 3 mappers"
size=$(printf '%s\n' "$shown" | awk -F'\t' '$1 == "size" { print $2 }')
[ "$size" = 8388608 ] || fail "size is $size"

ctl read sga --offset 1M --length "$(stat -c %s "$t/in")" | cmp -s - "$t/in" \
    || fail "read does not give back what write put"

touch "$t/stop"
for p in "${pids[@]}"; do wait "$p" || fail "holder $p failed"; done
pids=()
[ -z "$(ctl rm sga)" ] || fail "remove is not quiet"
set +e; ctl show sga 2>/dev/null; rc=$?; set -e
[ "$rc" -eq 3 ] || fail "show of a removed region exits $rc, not 3"
echo "operator.sh: ok"
