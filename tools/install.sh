#!/usr/bin/env bash
# Builds msharefs and installs everything under PREFIX, so that
# `mount -t fuse.msharefs msharefs /run/mshare` and an /etc/fstab line work
# (mount(8) runs mount.fuse3, which finds the server only in the default
# PATH: /usr/local/sbin is in it):
#   PREFIX/sbin/msharefs                 the FUSE server
#   PREFIX/bin/msharectl                 the command line
#   PREFIX/include/mshare.h, PREFIX/lib/libmshare.{so,a}, PREFIX/lib/pkgconfig/mshare{,-static}.pc
#   PREFIX/lib/libmshare-preload.so      what msharectl run preloads
#   PREFIX/share/man/man8/msharefs.8, PREFIX/share/man/man1/msharectl*.1
#   PREFIX/lib/systemd/system/msharefs.service   (mounts /run/mshare at boot)
#   PREFIX/share/msharefs/postgresql-msharefs.conf   (a drop-in for Debian's
#                                        postgresql@.service: postgresql.md)
#   PREFIX/share/bash-completion/completions/msharectl,
#   PREFIX/share/zsh/site-functions/_msharectl,
#   PREFIX/share/fish/vendor_completions.d/msharectl.fish   (shell completions)
#   PREFIX/share/msharefs/installed      the list of files, for --uninstall
#   PREFIX/share/msharefs/directories    the directories it made, for --uninstall
# and installs Debian's fuse3 (mount.fuse3) if it is missing.
#
# usage: tools/install.sh [--prefix DIR] [--from DIR] [--uninstall]
#   --prefix     where to install (default /usr/local)
#   --from       install binaries already built there (e.g. target/debug)
#                instead of running `cargo build --release`
#   --uninstall  remove what an earlier install under PREFIX put there
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
from=
uninstall=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --from) from=$2; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
manifest=$prefix/share/msharefs/installed
made_dirs=$prefix/share/msharefs/directories

if [ -n "$uninstall" ]; then
    [ -f "$manifest" ] || { echo "install.sh: nothing installed under $prefix ($manifest is missing)" >&2; exit 1; }
    while IFS= read -r f; do
        rm -f "$f"
    done < "$manifest"
    rm -f "$manifest"
    # The directories the install made, deepest first; one that holds
    # something else now stays.
    if [ -f "$made_dirs" ]; then
        dirs=$(sort -r "$made_dirs")
        rm -f "$made_dirs"
        while IFS= read -r d; do
            [ -n "$d" ] && rmdir "$d" 2>/dev/null || true
        done <<<"$dirs"
    fi
    rmdir "$prefix/share/msharefs" 2>/dev/null || true
    ldconfig 2>/dev/null || true
    echo "removed msharefs from $prefix"
    exit 0
fi

if ! command -v mount.fuse3 >/dev/null; then
    echo "install.sh: installing fuse3 (mount.fuse3)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
fi

if [ -z "$from" ]; then
    cargo build --release --workspace --quiet
    from=target/release
fi
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
"$from/msharefs" --generate-man "$staging"
"$from/msharectl" generate-man "$staging"
"$from/msharectl" generate-completions "$staging/completions"
sed "s|@SBINDIR@|$prefix/sbin|" msharefs/systemd/msharefs.service.in > "$staging/msharefs.service"
sed "s|/usr/local/|$prefix/|g" tools/systemd/postgresql-msharefs.conf > "$staging/postgresql-msharefs.conf"

# The directories that do not exist yet, to remove them on --uninstall.
made=()
for d in sbin bin include lib/pkgconfig lib/systemd/system share/man/man8 share/man/man1 \
    share/msharefs share/bash-completion/completions share/zsh/site-functions \
    share/fish/vendor_completions.d; do
    d=$prefix/$d
    while [ ! -e "$d" ]; do
        made+=("$d")
        d=$(dirname "$d")
    done
done
install -d "$prefix/sbin" "$prefix/bin" "$prefix/share/man/man8" "$prefix/share/man/man1" \
    "$prefix/lib/systemd/system" "$prefix/share/msharefs" \
    "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
    "$prefix/share/fish/vendor_completions.d"
install -m 755 "$from/msharefs" "$prefix/sbin/msharefs"
install -m 755 "$from/msharectl" "$prefix/bin/msharectl"
install -m 644 "$staging/msharefs.8" "$prefix/share/man/man8/msharefs.8"
install -m 644 "$staging"/msharectl*.1 "$prefix/share/man/man1/"
install -m 644 "$staging/msharefs.service" "$prefix/lib/systemd/system/msharefs.service"
install -m 644 "$staging/postgresql-msharefs.conf" "$prefix/share/msharefs/postgresql-msharefs.conf"
install -m 644 "$staging/completions/msharectl.bash" "$prefix/share/bash-completion/completions/msharectl"
install -m 644 "$staging/completions/_msharectl" "$prefix/share/zsh/site-functions/_msharectl"
install -m 644 "$staging/completions/msharectl.fish" "$prefix/share/fish/vendor_completions.d/msharectl.fish"
bash tools/install-libmshare.sh --prefix "$prefix" --from "$from" >/dev/null
{
    echo "$prefix/sbin/msharefs"
    echo "$prefix/bin/msharectl"
    echo "$prefix/share/man/man8/msharefs.8"
    for f in "$staging"/msharectl*.1; do echo "$prefix/share/man/man1/${f##*/}"; done
    echo "$prefix/lib/systemd/system/msharefs.service"
    echo "$prefix/share/msharefs/postgresql-msharefs.conf"
    echo "$prefix/share/bash-completion/completions/msharectl"
    echo "$prefix/share/zsh/site-functions/_msharectl"
    echo "$prefix/share/fish/vendor_completions.d/msharectl.fish"
    echo "$prefix/include/mshare.h"
    for f in "$prefix"/lib/libmshare.*; do echo "$f"; done
    echo "$prefix/lib/libmshare-preload.so"
    echo "$prefix/lib/pkgconfig/mshare.pc"
    echo "$prefix/lib/pkgconfig/mshare-static.pc"
} | sort -u > "$manifest"
if [ ${#made[@]} -gt 0 ]; then
    printf '%s\n' "${made[@]}" | sort -u >> "$made_dirs"
fi
mandb -q 2>/dev/null || true
echo "installed msharefs in $prefix:"
sed 's/^/  /' "$manifest"
case "$prefix/sbin" in
/usr/local/sbin|/usr/sbin|/sbin)
    mount_it="mkdir -p /run/mshare && mount -t fuse.msharefs msharefs /run/mshare" ;;
*)
    # mount(8) runs mount.fuse3, which finds the server only in its own
    # PATH (/usr/local/sbin, /usr/sbin, /sbin, ...), not in PREFIX.
    mount_it="mkdir -p /run/mshare && $prefix/sbin/msharefs /run/mshare
           (mount -t fuse.msharefs and fstab lines need the server in /usr/local/sbin or /usr/sbin)" ;;
esac
cat <<MSG
mount it:  $mount_it
at boot:   systemctl enable --now msharefs.service   (or the fstab line in msharefs(8))
remove:    tools/install.sh --uninstall --prefix $prefix
MSG
