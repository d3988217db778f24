#!/usr/bin/env bash
# PostgreSQL 15, unmodified, three ways on the same data in one run:
#
#   off       stock, huge_pages=off (what huge_pages=try gives with an empty
#             hugetlb pool, silently)
#   on        stock, huge_pages=on, vm.nr_hugepages sized by hand from
#             `postgres -C shared_memory_size_in_huge_pages`
#   msharefs  stock settings under `msharectl run`, nothing sized by hand
#
# For each client count: pgbench -S (select-only) for --duration seconds
# after pg_prewarm, and the kernel's PageTables (/proc/meminfo) at its
# highest during the run, less what it was before pgbench started; tps and
# the initial connection time as pgbench reports them. The three ways take
# turns, --repeat times, and the medians are printed, with ratios against
# `on` and how much less than `off` msharefs pays in page tables: on two
# CPUs shared by 300 backends and pgbench, one run's tps varies by 15%.
#
# Root: it makes a temporary cluster (as the postgres user), a private
# msharefs mount and, for `on`, huge pages; it puts all of them back.
#
#   tools/bench-postgres.sh [--clients 100,300] [--scale 120]
#                           [--shared-buffers 2GB] [--duration 40] [--repeat 3]
set -euo pipefail
cd "$(dirname "$0")/.."

clients=100,300
scale=120
shared_buffers=2GB
duration=40
repeat=3
while [ $# -gt 0 ]; do
    case "$1" in
    --clients) clients=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --shared-buffers) shared_buffers=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-postgres: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench-postgres: run it as root" >&2; exit 1; }
pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/postgres" ] || { echo "bench-postgres: needs PostgreSQL 15 in $pgbin (apt-get install postgresql-15)" >&2; exit 1; }

cargo build --release --quiet -p msharefs -p msharectl -p mshare-preload
bin=$PWD/target/release
work=$(mktemp -d /tmp/msharefs-bench-pg.XXXXXX)
chmod 755 "$work"
# The preload library and the programs where the postgres user can read them.
install -m 755 "$bin/msharefs" "$bin/msharectl" "$bin/libmshare_preload.so" "$work/"
data=$work/data
mnt=$work/mnt
mkdir "$mnt"
chown postgres: "$work"
pages_before=$(cat /proc/sys/vm/nr_hugepages)
server=

as_pg() { runuser -u postgres -- "$@"; }
pg_stop() { as_pg "$pgbin/pg_ctl" -D "$data" -m fast -w -t 600 stop >/dev/null 2>&1 || true; }
cleanup() {
    [ -f "$data/postmaster.pid" ] && pg_stop
    if [ -n "$server" ]; then
        umount "$mnt" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    echo "$pages_before" > /proc/sys/vm/nr_hugepages
    rm -rf "$work"
}
trap cleanup EXIT

maxc=$(tr , '\n' <<<"$clients" | sort -n | tail -1)
as_pg "$pgbin/initdb" -A trust -D "$data" >/dev/null
cat >> "$data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work'
shared_buffers = $shared_buffers
max_connections = $((maxc + 10))
EOF

start() { # huge_pages, then the command prefix (may be empty)
    local hp=$1; shift
    "$@" runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" -l "$work/log" -w -t 600 \
        -o "-c huge_pages=$hp" start >/dev/null
}
sql() { as_pg "$pgbin/psql" -X -q -A -t -h "$work" -d postgres -c "$1"; }

echo "bench-postgres: pgbench -i -s $scale (once, the same data for every way)" >&2
start off
as_pg "$pgbin/pgbench" -h "$work" -i -q -s "$scale" postgres >/dev/null 2>&1
sql "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null
pg_stop

"$work/msharefs" "$mnt" -o fresh -f 2>"$work/msharefs.log" &
server=$!
for _ in $(seq 100); do grep -q " $mnt fuse.msharefs " /proc/self/mountinfo && break; sleep 0.1; done

pagetables() { awk '/^PageTables:/ { print $2 * 1024 }' /proc/meminfo; }

results=()
for rep in $(seq "$repeat"); do
for way in off on msharefs; do
    case $way in
    off) start off ;;
    on)
        need=$(as_pg "$pgbin/postgres" -D "$data" -C shared_memory_size_in_huge_pages -c huge_pages=on)
        echo $((pages_before + need)) > /proc/sys/vm/nr_hugepages
        start on
        ;;
    msharefs) start try "$work/msharectl" -d "$mnt" run --quiet --preload "$work/libmshare_preload.so" -- ;;
    esac
    for c in ${clients//,/ }; do
        sql "SELECT pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')" >/dev/null
        base=$(pagetables)
        peak=$base
        as_pg "$pgbin/pgbench" -h "$work" -n -S -c "$c" -j 2 -T "$duration" postgres >"$work/out" 2>&1 &
        bench=$!
        while kill -0 "$bench" 2>/dev/null; do
            now=$(pagetables); [ "$now" -gt "$peak" ] && peak=$now
            sleep 0.5
        done
        wait "$bench" || { cat "$work/out" >&2; exit 1; }
        tps=$(awk '/^tps = / { printf "%d", $3 }' "$work/out")
        conn=$(awk '/initial connection time/ { printf "%d", $5 }' "$work/out")
        results+=("$way $c $((peak - base)) $tps $conn")
        echo "bench-postgres: round $rep of $repeat, $way, $c clients: $tps tps" >&2
    done
    pg_stop
    [ "$way" = on ] && echo "$pages_before" > /proc/sys/vm/nr_hugepages
done
done

# The median of each figure, per way and client count.
printf '%s\n' "${results[@]}" | sort -k1,1 -k2,2n | awk -v sb="$shared_buffers" -v s="$scale" -v d="$duration" -v r="$repeat" '
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        k = $1 " " $2
        if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
        pt[k] = pt[k] " " $3; tps[k] = tps[k] " " $4; conn[k] = conn[k] " " $5
    }
    function mb(b) { return sprintf("%.1f MB", b / 1e6) }
    END {
        for (i = 1; i <= nk; i++) { k = keys[i]; P[k] = median(pt[k]); T[k] = median(tps[k]); C[k] = median(conn[k]) }
        printf "PostgreSQL 15, shared_buffers=%s, pgbench -i -s %s, pg_prewarm, pgbench -S -j 2 -T %s; medians of %d rounds\n\n", sb, s, d, r
        printf "%-9s %7s %14s %14s %8s %10s %12s %10s\n", "way", "clients", "page tables", "per backend", "tps", "connect", "pt vs on", "tps vs on"
        split("off on msharefs", ways, " ")
        for (w = 1; w <= 3; w++) for (i = 1; i <= nk; i++) {
            k = keys[i]; split(k, f, " "); if (f[1] != ways[w]) continue
            on = "on " f[2]
            printf "%-9s %7d %14s %11.1f KB %8d %7d ms %11.2fx %9.2fx\n", f[1], f[2], mb(P[k]), P[k] / f[2] / 1024, T[k], C[k], P[k] / P[on], T[k] / T[on]
        }
        printf "\n"
        for (i = 1; i <= nk; i++) { k = keys[i]; split(k, f, " "); if (f[1] != "msharefs") continue
            printf "%d clients: msharefs pays %.0fx less in page tables than huge_pages=off\n", f[2], P["off " f[2]] / P[k]
        }
    }'
