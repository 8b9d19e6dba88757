#!/usr/bin/env bash
# The release check (`make check-release`, run by .ci/run): what a user installs, installed
# the way a user would, in fresh venvs outside the project's own.
#
# 1. Build the sdist and the cp311-abi3 wheel (PIPELINE_NATIVE=required: a C stage that
#    does not build fails the check), and the pure py3-none-any wheel (PIPELINE_NATIVE=skip);
#    `twine check --strict` all three.
# 2. Install the sdist where no C compiler can be found (PATH holds only the venv's bin):
#    the install succeeds without the C stage, `python -m pipeline demo` runs, `pipeline
#    data` says in one line that the C stage is not built, and the test suite passes with
#    the C stage's tests skipped (PIPELINE_NATIVE=skip tells the tests that it is meant).
# 3. Install the one abi3 wheel on every CPython 3.11+ found under pyenv (3.11, 3.12 and
#    3.13 here) and run the C stage's tests there.
#
# Environment: PYTHON (the interpreter that builds, default .venv/bin/python),
# RELEASE_DIR (scratch folder, default a new temporary one, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-.venv/bin/python}"
scratch="${RELEASE_DIR:-$(mktemp -d)}"
if [ -z "${RELEASE_DIR:-}" ]; then trap 'rm -rf "$scratch"' EXIT; fi
dist="$scratch/dist"
pure="$scratch/pure"
step_started=$SECONDS

step() {
    echo
    echo "== check-release: $* (previous step $((SECONDS - step_started)) s)"
    step_started=$SECONDS
}

# The test runner's pinned versions, from the dev extra: one place for them.
test_requirements=$("$python" - <<'EOF'
import tomllib
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
print(" ".join(d for d in dev if d.startswith(("pytest", "hypothesis"))))
EOF
)

step "build the sdist and the abi3 wheel, then the pure wheel"
PIPELINE_NATIVE=required "$python" -m build --outdir "$dist" . >"$scratch/build.log" 2>&1 ||
    { cat "$scratch/build.log"; exit 1; }
PIPELINE_NATIVE=skip "$python" -m build --wheel --outdir "$pure" . >"$scratch/build-pure.log" 2>&1 ||
    { cat "$scratch/build-pure.log"; exit 1; }
sdist=$(ls "$dist"/*.tar.gz)
abi3=$(ls "$dist"/*-cp311-abi3-*.whl)
pure_wheel=$(ls "$pure"/*-py3-none-any.whl)
ls -l "$sdist" "$abi3" "$pure_wheel"
"$python" -m twine check --strict "$sdist" "$abi3" "$pure_wheel"

step "the sdist where no C compiler can be found"
venv="$scratch/venv-sdist"
"$python" -m venv "$venv"
PATH="$venv/bin" "$venv/bin/python" -m pip install --quiet "$sdist"
if "$venv/bin/python" -c 'import cffi' 2>/dev/null; then
    echo "check-release: cffi was installed with a package that has no C stage" >&2
    exit 1
fi
(cd "$scratch" && "$venv/bin/python" -m pipeline demo)
set +e
said=$(cd "$scratch" && "$venv/bin/pipeline" data --count 10 2>&1 >/dev/null)
status=$?
set -e
echo "pipeline data: status $status: $said"
if [ "$status" -ne 2 ] || [ "$(printf '%s\n' "$said" | wc -l)" -ne 1 ]; then
    echo "check-release: pipeline data must say in one line that the C stage is not built" >&2
    exit 1
fi
(cd "$scratch" && "$venv/bin/pipeline" data --count 10 --implementation reference \
    --skip-reference --output "$scratch/results.csv" >/dev/null)
# The dev extra's packages (the C stage's absence stays: cffi may come with one of them,
# but the installed pipeline has no compiled module).
PATH="$venv/bin" "$venv/bin/python" -m pip install --quiet "threaded-pipeline[dev] @ file://$sdist"
PIPELINE_NATIVE=skip "$venv/bin/python" -m pytest -p no:cacheprovider -q -o faulthandler_timeout=90

step "the abi3 wheel on every CPython 3.11+ under pyenv"
found=0
for interpreter in "$HOME"/.pyenv/versions/3.1[1-9].*/bin/python3; do
    [ -x "$interpreter" ] || continue
    # Final releases with the GIL only: the stable ABI is not for free-threaded builds.
    [[ "$(basename "$(dirname "$(dirname "$interpreter")")")" =~ ^3\.1[1-9]\.[0-9]+$ ]] || continue
    version=$("$interpreter" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    venv="$scratch/venv-$version"
    "$interpreter" -m venv "$venv"
    # shellcheck disable=SC2086  # the requirements are words
    "$venv/bin/python" -m pip install --quiet "$abi3" $test_requirements numpy
    "$venv/bin/python" -c 'import pipeline.native.compiled as c, sys; print(sys.version.split()[0], c.__name__, "built")'
    "$venv/bin/python" -m pytest -p no:cacheprovider -q tests/native
    found=$((found + 1))
done
if [ "$found" -lt 3 ]; then
    echo "check-release: the abi3 wheel was tried on $found CPython versions, not 3 or more" >&2
    exit 1
fi

step "done"
