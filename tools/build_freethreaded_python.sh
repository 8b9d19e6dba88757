#!/usr/bin/env bash
# Build (once) and print the path of a free-threaded CPython 3.13 (python3.13t).
#
# No Debian binary package and no package index provides a free-threaded interpreter, but
# Debian's source package of python3.13 builds one. The upstream tarball is fetched with a
# private apt configuration (the system's apt sources and lists stay untouched), verified
# against the signed trixie index, configured with --disable-gil and installed under the
# cache directory, which lives outside the clone so a second run takes well under a second.
#
# Usage: tools/build_freethreaded_python.sh      -> prints the interpreter's path on stdout
# Environment: PIPELINE_FT_CACHE  the cache directory (default ~/.cache/pipeline-ft)
#              PIPELINE_FT_JOBS   parallel make jobs (default 2)
set -euo pipefail

cache="${PIPELINE_FT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-ft}"
jobs="${PIPELINE_FT_JOBS:-2}"
prefix="$cache/python3.13t"
interpreter="$prefix/bin/python3.13t"
stamp="$prefix/.built-by-pipeline"

log() { echo "build_freethreaded_python: $*" >&2; }

is_ready() {
    [ -f "$stamp" ] && [ -x "$interpreter" ] &&
        PYTHON_GIL=0 "$interpreter" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null
}

if is_ready; then
    echo "$interpreter"
    exit 0
fi

mkdir -p "$cache"
# Two runs at once (two checkouts on one machine) would build into the same prefix.
exec 9>"$cache/.lock"
flock 9
if is_ready; then
    echo "$interpreter"
    exit 0
fi

# The mirror and keyring of the machine's own Debian entry (deb822, the one that is not the
# security archive), so the private configuration trusts exactly what the system trusts.
system_sources=/etc/apt/sources.list.d/debian.sources
mirror=http://deb.debian.org/debian
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -r "$system_sources" ]; then
    read -r found_mirror found_keyring < <(awk '
        /^[[:space:]]*$/ { if (uri != "" && uri !~ /security/) { print uri, key; done = 1; exit }
                           uri = ""; key = "" }
        /^URIs:/ { uri = $2 }
        /^Signed-By:/ { key = $2 }
        END { if (!done && uri != "" && uri !~ /security/) print uri, key }' "$system_sources") || true
    mirror="${found_mirror:-$mirror}"
    keyring="${found_keyring:-$keyring}"
fi
log "source package from $mirror (trixie main), verified with $keyring"

apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
cat >"$apt_dir/trixie-src.sources" <<SOURCES
Types: deb-src
URIs: $mirror
Suites: trixie
Components: main
Signed-By: $keyring
SOURCES
apt_options=(
    -o "Dir::Etc::SourceList=$apt_dir/trixie-src.sources"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_options[@]}" -q update >&2

work="$cache/build"
rm -rf "$work"
mkdir -p "$work"
(cd "$work" && apt-get "${apt_options[@]}" -q source --download-only python3.13 >&2)
tarball=$(find "$work" -maxdepth 1 -name 'python3.13_*.orig.tar.xz' | head -n 1)
if [ -z "$tarball" ]; then
    log "no python3.13 .orig.tar.xz was downloaded into $work"
    exit 1
fi
log "unpacking $(basename "$tarball")"
tar -C "$work" -xJf "$tarball"
source_dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'Python-3.13*' | head -n 1)
if [ -z "$source_dir" ]; then
    log "the tarball did not unpack into a Python-3.13* directory"
    exit 1
fi

rm -rf "$prefix"
log "building in $source_dir (several minutes on 2 cores; output in $work/build.log)"
(
    cd "$source_dir"
    ./configure --disable-gil --prefix="$prefix" --with-ensurepip=install
    make -j"$jobs"
    make install
) >"$work/build.log" 2>&1 || {
    log "the build failed; the last lines of $work/build.log:"
    tail -n 40 "$work/build.log" >&2
    exit 1
}

if ! PYTHON_GIL=0 "$interpreter" -c 'import sys; sys.exit(sys._is_gil_enabled())'; then
    log "$interpreter was built but the GIL is enabled"
    exit 1
fi
"$interpreter" -VV >"$stamp"
rm -rf "$work"
log "built $("$interpreter" -VV)"
echo "$interpreter"
