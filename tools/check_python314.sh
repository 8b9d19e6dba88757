#!/usr/bin/env bash
# The check on CPython 3.14 (`make check-314`, run by .ci/run): make check's test suite on
# Debian's python3.14 (the GIL build), with the C stage built by cffi.
#
# Debian ships CPython 3.14 as binary packages of its next release (forky). They need that
# release's C library, newer than this machine's, so they run in a minimal forky root:
# debootstrap makes it once (python3.14, its venv, headers and tests, gcc) from the machine's own
# Debian mirror, verified with its keyring, under the cache directory outside the clone,
# so a second run reuses it. Each run enters it in a private mount namespace: the checkout
# is bind-mounted at its own path, and the machine's CA certificates over the root's (pip
# trusts what the machine trusts); the mounts end with the run. The venv (.venv-314) lives
# in the checkout and is remade when the packaging changes.
#
# Environment: PIPELINE_FT_CACHE  the cache directory (default ~/.cache/pipeline-ft)
#              PY314_VENV         the venv, relative to the checkout (default .venv-314)
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${PIPELINE_FT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-ft}"
root="$cache/debian-forky"
venv="${PY314_VENV:-.venv-314}"
checkout=$PWD
# CPython's test package (its queue tests run against SafeQueue), make and git for the tests
# of the Makefile; the root is made again when this list changes.
packages=python3.14,python3.14-venv,python3.14-dev,libpython3.14-testsuite,gcc,make,git
# The run goes on in a private mount namespace (below): the first step's time carries over.
step_started=$((SECONDS - ${CHECK_314_STEP_SECONDS:-0}))

step() {
    echo
    echo "== check-314: $* (previous step $((SECONDS - step_started)) s)"
    step_started=$SECONDS
}

if [ -z "${CHECK_314_IN_NAMESPACE:-}" ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v debootstrap >/dev/null; then
        echo "check-314: needs root (it mounts and chroots) and debootstrap (apt-get install debootstrap)" >&2
        exit 1
    fi
    step "the forky root with python3.14 ($root)"
    mkdir -p "$cache"
    exec 9>"$cache/.lock-debian-forky"
    flock 9
    if [ "$(cat "$root/.made-by-pipeline" 2>/dev/null)" != "$packages" ]; then
        # shellcheck source=tools/debian_mirror.sh
        source tools/debian_mirror.sh
        echo "debootstrap forky from $mirror, verified with $keyring"
        rm -rf "$root" "$root.partial"
        # The "sid" script makes any release after trixie (debootstrap names them so).
        debootstrap --variant=minbase --include="$packages" --keyring="$keyring" \
            forky "$root.partial" "$mirror" /usr/share/debootstrap/scripts/sid >"$cache/debootstrap.log" 2>&1 || {
            echo "check-314: debootstrap failed; the last lines of $cache/debootstrap.log:" >&2
            tail -n 20 "$cache/debootstrap.log" >&2
            exit 1
        }
        mv "$root.partial" "$root"
        echo "$packages" >"$root/.made-by-pipeline"
    fi
    exec 9>&-
    exec unshare --mount --propagation private \
        env CHECK_314_IN_NAMESPACE=1 CHECK_314_STEP_SECONDS=$((SECONDS - step_started)) bash "$0" "$@"
fi

mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mkdir -p "$root$checkout"
mount --bind "$checkout" "$root$checkout"
# A worktree's git directory lies outside it: it is mounted at its own path too.
git_dir=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
if [ -n "$git_dir" ] && [ "${git_dir#"$checkout"/}" = "$git_dir" ]; then
    mkdir -p "$root$git_dir"
    mount --bind "$git_dir" "$root$git_dir"
fi
mkdir -p "$root/etc/ssl/certs"
mount --bind -o ro /etc/ssl/certs "$root/etc/ssl/certs"
cp /etc/resolv.conf "$root/etc/resolv.conf"

in_root() {
    chroot "$root" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_DEFAULT_TIMEOUT=180 "$@"
}
in_checkout() { in_root bash -c 'cd "$1" && shift && exec "$@"' in_checkout "$checkout" "$@"; }

in_root python3.14 -VV
step "the venv $venv"
stamp="$venv/.installed"
# The venv's interpreter is a link to the root's, so it is looked at from inside.
if [ ! -f "$stamp" ] || ! in_checkout test -x "$venv/bin/python" ||
    [ -n "$(find pyproject.toml setup.py csrc -newer "$stamp")" ]; then
    rm -rf "$venv"
    in_checkout python3.14 -m venv "$venv"
    in_checkout "$venv/bin/python" -m pip install --quiet --upgrade pip
    # PIPELINE_NATIVE=required: a C stage that does not build on 3.14 fails the check.
    in_checkout env PIPELINE_NATIVE=required "$venv/bin/python" -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi
in_checkout "$venv/bin/python" -c 'import sys, pipeline.native.compiled; print(sys.version)'

# A test stuck for 90 s dumps every thread's stack, and the run is bounded as a whole
# (as in tools/check_freethreaded.sh), so that a hang fails the check.
step "make check's test suite on 3.14"
in_checkout timeout --signal=ABRT --kill-after=30 1200 \
    "$venv/bin/python" -m pytest -p no:cacheprovider -o faulthandler_timeout=90 -q

step "done"
