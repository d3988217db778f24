#!/usr/bin/env bash
# The abuse probes of Documentation/security.md: hostile local users (uid
# 1000 and 65534) against root's regions by every route, a flood of
# attribute reads, renames and slow requests while root attaches, and a soak of all
# backings with random ioctls. Prints a "figure:" line per probe and fails
# if a probe finds a wrong grant, a slow or failed attach, or a leak.
#
# usage: tools/abuse.sh            (ABUSE_SECONDS=N sets the soak's length, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tools/abuse.sh: the probes mount file systems and switch uids; run it as root" >&2
    exit 1
fi
cargo build --workspace --quiet
exec cargo test --quiet -p msharefs-tests --test msharefs -- --ignored --nocapture --test-threads=1 abuse::
