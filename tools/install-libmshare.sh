#!/usr/bin/env bash
# Builds and installs the C library:
#   PREFIX/include/mshare.h
#   PREFIX/lib/libmshare.so -> libmshare.so.0 -> libmshare.so.0.1.0
#   PREFIX/lib/libmshare.a
#   PREFIX/lib/pkgconfig/mshare.pc, mshare-static.pc (links libmshare.a)
#   PREFIX/lib/libmshare-preload.so (LD_PRELOAD library of msharectl run)
#
# usage: tools/install-libmshare.sh [--prefix DIR] [--from TARGET_PROFILE_DIR]
#   --prefix  where to install (default /usr/local)
#   --from    use libraries already built there (e.g. target/debug) instead
#             of running `cargo build --release -p libmshare`
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
from=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --from) from=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "install-libmshare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
major=${version%%.*}
if [ -z "$from" ]; then
    cargo build --release -p libmshare -p mshare-preload --quiet
    from=target/release
fi
for f in "$from/liblibmshare.so" "$from/liblibmshare.a" "$from/libmshare_preload.so"; do
    [ -f "$f" ] || { echo "install-libmshare.sh: $f is missing (build libmshare first)" >&2; exit 1; }
done

# What a static link needs besides libmshare.a (rustc --print
# native-static-libs for the Rust standard library on linux-gnu).
private="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

libdir=$prefix/lib
# Outside the directories the dynamic linker searches, a program built with
# mshare.pc must say where the library is.
case "$prefix" in
/usr|/usr/local) rpath= ;;
*) rpath=" -Wl,-rpath,\${libdir}" ;;
esac
install -d "$prefix/include" "$libdir/pkgconfig"
install -m 644 libmshare/include/mshare.h "$prefix/include/mshare.h"
install -m 755 "$from/liblibmshare.so" "$libdir/libmshare.so.$version"
ln -sf "libmshare.so.$version" "$libdir/libmshare.so.$major"
ln -sf "libmshare.so.$major" "$libdir/libmshare.so"
install -m 644 "$from/liblibmshare.a" "$libdir/libmshare.a"
install -m 755 "$from/libmshare_preload.so" "$libdir/libmshare-preload.so"
cat > "$libdir/pkgconfig/mshare.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: mshare
Description: msharefs client library: shared memory regions with shared page tables
Version: $version
Libs: -L\${libdir} -lmshare$rpath
Libs.private: $private
Cflags: -I\${includedir}
PC
# With both libraries in one directory, -lmshare is the .so even with
# --static: a program that wants the .a names it.
cat > "$libdir/pkgconfig/mshare-static.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: mshare-static
Description: msharefs client library, linked statically (libmshare.a)
Version: $version
Libs: \${libdir}/libmshare.a $private
Cflags: -I\${includedir}
PC
if [ "$prefix" = /usr/local ] || [ "$prefix" = /usr ]; then
    ldconfig 2>/dev/null || true
fi
echo "installed libmshare $version in $prefix"
