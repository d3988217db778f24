#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script).
#
# Installs what the tests need (Debian's fuse3 for mount.fuse3, a C compiler
# and pkg-config for the C examples, systemd for systemd-analyze, man-db,
# util-linux's unshare, setpriv and runuser, and the programs run unmodified
# under msharectl run: PostgreSQL 15 and stress-ng; CPython 3.13 with its
# test suite comes with this machine kind's pyenv), then checks formatting,
# lints and docs and runs every test. The tests mount FUSE file systems, switch uids and
# size the hugetlb pool, so this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tools/test.sh: the tests mount file systems and switch uids; run it as root" >&2
    exit 1
fi

need=()
[ -x /sbin/mount.fuse3 ] || [ -x /usr/sbin/mount.fuse3 ] || need+=(fuse3)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v man >/dev/null || need+=(man-db)
command -v setpriv >/dev/null && command -v unshare >/dev/null && command -v runuser >/dev/null || need+=(util-linux)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15 postgresql-client-15)
command -v stress-ng >/dev/null || need+=(stress-ng)
if [ ${#need[@]} -gt 0 ]; then
    echo "tools/test.sh: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The integration tests run the msharefs and msharectl binaries, which
# `cargo test` alone does not build.
cargo build --workspace --quiet
log=$(mktemp)
# The tests copy the programs here when the checkout is out of other
# users' reach (tests/src/lib.rs, bin_dir).
trap 'rm -f "$log"; rm -rf /tmp/msharefs-tests-bin.*' EXIT
status=0
cargo test --workspace -- --show-output 2>&1 | tee "$log" || status=1
# The integration tests once more with the requests read from /dev/fuse,
# the only transport before Linux 6.14 (tests that need one name it).
echo "tools/test.sh: the integration tests again, over /dev/fuse"
MSHAREFS_TEST_TRANSPORT=dev_fuse cargo test -p msharefs-tests --test msharefs -- --show-output 2>&1 | tee -a "$log" || status=1
# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit $status
