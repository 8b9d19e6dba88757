#!/usr/bin/env bash
# Build (once) and print the path of a CPython 3.13 or 3.14, with the GIL or free-threaded.
#
# No Debian binary package of this machine and no package index provides these interpreters
# (a free-threaded one least of all), but Debian's source packages python3.13 (trixie) and
# python3.14 (forky) build them. The upstream tarball is fetched with a private apt
# configuration (the system's apt sources and lists stay untouched), verified against the
# signed index of that suite, configured (with --disable-gil for a free-threaded build) and
# installed under the cache directory, which lives outside the clone so a second run takes
# well under a second.
#
# Usage: tools/build_python.sh VERSION [--free-threaded]   -> prints the interpreter's path
#        (VERSION is 3.13 or 3.14; 3.14 --free-threaded is python3.14t)
# Environment: PIPELINE_FT_CACHE  the cache directory (default ~/.cache/pipeline-ft)
#              PIPELINE_FT_JOBS   parallel make jobs (default 2)
set -euo pipefail

log() { echo "build_python: $*" >&2; }
usage() {
    log "usage: tools/build_python.sh VERSION [--free-threaded] (VERSION: 3.13 or 3.14)"
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
version=$1
free_threaded=
if [ $# -eq 2 ]; then
    [ "$2" = --free-threaded ] || usage
    free_threaded=t
fi
# The Debian suite whose source package of that version is the one to build.
case "$version" in
3.13) suite=trixie ;;
3.14) suite=forky ;;
*) usage ;;
esac

cache="${PIPELINE_FT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-ft}"
jobs="${PIPELINE_FT_JOBS:-2}"
name="python$version$free_threaded"
prefix="$cache/$name"
interpreter="$prefix/bin/$name"
stamp="$prefix/.built-by-pipeline"
configure_options=(--prefix="$prefix" --with-ensurepip=install)
if [ -n "$free_threaded" ]; then configure_options+=(--disable-gil); fi

# The interpreter runs, is the build asked for, and (free-threaded) runs without the GIL.
is_right_build() {
    PYTHON_GIL=0 "$interpreter" -c '
import sys, sysconfig
free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
gil_off = free_threaded and not sys._is_gil_enabled()
sys.exit(free_threaded != bool(sys.argv[1]) or free_threaded != gil_off)' "$free_threaded" 2>/dev/null
}

is_ready() { [ -f "$stamp" ] && [ -x "$interpreter" ] && is_right_build; }

if is_ready; then
    echo "$interpreter"
    exit 0
fi

mkdir -p "$cache"
# Two runs at once (two checkouts on one machine) would build into the same prefix, and
# share the private apt lists.
exec 9>"$cache/.lock"
flock 9
if is_ready; then
    echo "$interpreter"
    exit 0
fi

# shellcheck source=tools/debian_mirror.sh
source "$(dirname "$0")/debian_mirror.sh"
log "python$version source package from $mirror ($suite main), verified with $keyring"

apt_dir="$cache/apt-$suite"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
cat >"$apt_dir/$suite-src.sources" <<SOURCES
Types: deb-src
URIs: $mirror
Suites: $suite
Components: main
Signed-By: $keyring
SOURCES
apt_options=(
    -o "Dir::Etc::SourceList=$apt_dir/$suite-src.sources"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_options[@]}" -q update >&2

work="$cache/build-$name"
rm -rf "$work"
mkdir -p "$work"
(cd "$work" && apt-get "${apt_options[@]}" -q source --download-only "python$version" >&2) || {
    log "apt-get could not download python$version's source package ($suite main, above)"
    rm -rf "$work"
    exit 1
}
tarball=$(find "$work" -maxdepth 1 -name "python${version}_*.orig.tar.xz" | head -n 1)
if [ -z "$tarball" ]; then
    log "no python$version .orig.tar.xz was downloaded into $work"
    exit 1
fi
log "unpacking $(basename "$tarball")"
tar -C "$work" -xJf "$tarball"
source_dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name "Python-$version*" | head -n 1)
if [ -z "$source_dir" ]; then
    log "the tarball did not unpack into a Python-$version* directory"
    exit 1
fi

rm -rf "$prefix"
log "building $name in $source_dir (several minutes on 2 cores; output in $work/build.log)"
(
    cd "$source_dir"
    ./configure "${configure_options[@]}"
    make -j"$jobs"
    make install
) >"$work/build.log" 2>&1 || {
    log "the build failed; the last lines of $work/build.log:"
    tail -n 40 "$work/build.log" >&2
    exit 1
}

if ! is_right_build; then
    log "$interpreter was built but is not $name (a free-threaded build runs with PYTHON_GIL=0 without the GIL)"
    exit 1
fi
"$interpreter" -VV >"$stamp"
rm -rf "$work"
log "built $("$interpreter" -VV)"
echo "$interpreter"
