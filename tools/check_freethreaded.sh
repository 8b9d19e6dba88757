#!/usr/bin/env bash
# The free-threaded check (`make check-ft`, run by .ci/run): the package without the GIL.
#
# 1. Build or reuse CPython 3.13t (FT_VERSION=3.14: 3.14t; tools/build_freethreaded_python.sh,
#    cached outside the clone) and a venv of it (.venv-ft) with the test dependencies as
#    wheels, and the package installed: without its C stage on 3.13t (cffi does not build
#    there; setup.py skips it), with it on 3.14t, where cffi builds it.
# 2. Run the core, resilience, observability (and graph, once it exists) tests there with
#    PYTHON_GIL=0 (on 3.14t the C stage's too); tests/core/test_freethreading.py also
#    checks that importing pipeline and every extra leaves the GIL disabled.
# 3. Hunt races: the concurrency tests under pytest-run-parallel on 3.13t (every test body
#    in several threads at once, several times), and the fault fuzzer on 3.13t.
# 4. The same concurrency tests on the GIL build with a 1 us switch interval.
#
# Environment: FT_VERSION (3.13 or 3.14, default 3.13), FT_VENV (default .venv-ft), FT_SCENARIOS (fuzzer scenarios, default 1000),
# FT_THREADS / FT_ITERATIONS (pytest-run-parallel, default 4 / 2), PYTHON (the GIL build's
# venv interpreter, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

version="${FT_VERSION:-3.13}"
venv="${FT_VENV:-.venv-ft}"
scenarios="${FT_SCENARIOS:-1000}"
threads="${FT_THREADS:-4}"
iterations="${FT_ITERATIONS:-2}"
gil_python="${PYTHON:-.venv/bin/python}"
step_started=$SECONDS

step() {
    echo
    echo "== check-ft: $* (previous step $((SECONDS - step_started)) s)"
    step_started=$SECONDS
}

step "the free-threaded interpreter"
interpreter=$(tools/build_freethreaded_python.sh "$version")
"$interpreter" -VV

step "the venv $venv"
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$interpreter" ] || [ ! -x "$venv/bin/python" ] ||
    [ -n "$(find pyproject.toml setup.py csrc tools/freethreaded-requirements.txt -newer "$stamp")" ]; then
    rm -rf "$venv"
    "$interpreter" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --only-binary=:all: -r tools/freethreaded-requirements.txt
    if [ "$version" = 3.13 ]; then
        # No build isolation and no dependencies: the build requirements and the runtime
        # dependency name cffi, which cannot be installed here, and no environment marker
        # can tell a free-threaded interpreter apart. setup.py leaves the C stage out.
        "$venv/bin/python" -m pip install --quiet --no-build-isolation --no-deps -e .
    else
        # cffi (2.0 and later) builds the C stage on 3.14t: it must, or the check fails.
        PIPELINE_NATIVE=required "$venv/bin/python" -m pip install --quiet -e .
    fi
    echo "$interpreter" >"$stamp"
fi
PYTHON_GIL=0 "$venv/bin/python" -c 'import sys, pipeline; assert not sys._is_gil_enabled()'

# The suites that run on 3.13t. Tests of the C stage (tests/native) need cffi, and the
# demos' tests run the C stage too: neither can run there. On 3.14t the C stage is built,
# and cffi marks its module as running without the GIL: importing it must leave it off.
suites=(tests/core tests/resilience tests/observe)
if [ "$version" != 3.13 ]; then
    suites+=(tests/native)
    "$venv/bin/python" -c 'import sys, pipeline.native.compiled; assert not sys._is_gil_enabled(), "importing the C stage turned the GIL on"'
fi
for optional in tests/stages tests/queues tests/graph; do
    if [ -d "$optional" ]; then suites+=("$optional"); fi
done

known=()
# A test stuck for 90 s dumps every thread's stack (pytest's own 60 s timeout raises into
# the main thread, which the code under test may be holding off), and each pytest step is
# bounded as a whole, so a hang fails the check instead of stalling it. (pytest-timeout's
# thread method would end the process instead, but its timer thread shows up in the tests
# that check no thread is left.)
timeouts=(-o faulthandler_timeout=90)
bounded() { timeout --signal=ABRT --kill-after=30 900 "$@"; }

step "tests on ${version}t with PYTHON_GIL=0: ${suites[*]}"
PYTHON_GIL=0 bounded "$venv/bin/python" -m pytest -p no:cacheprovider "${timeouts[@]}" -q -rs "${known[@]}" "${suites[@]}"

# pytest-run-parallel runs each test body in several threads of one process at once. It
# runs a test that uses a per-test fixture such as caplog in one thread only (it cannot be
# shared); --skip-thread-unsafe skips those here, since step 2 ran them. The two tests
# deselected take their argument from one generator, which only the first thread can read.
concurrency_tests=(
    tests/core/test_freethreading.py
    tests/core/test_safequeue.py
    tests/core/test_pipeline.py
    tests/resilience
)
parallel_options=(
    --parallel-threads="$threads"
    --iterations="$iterations"
    --skip-thread-unsafe=true
    -o "thread_unsafe_fixtures=caplog
capsys
capfd
monkeypatch"
    -o "thread_unsafe_functions=_thread.interrupt_main"
    --deselect "tests/resilience/test_breaker.py::test_trip_on_takes_one_class_or_any_iterable_of_them[generator]"
    --deselect "tests/resilience/test_retry.py::test_any_iterable_of_exception_types_is_kept_as_a_tuple[generator]"
    "${known[@]}"
    # It counts every helper thread alive in the process, so copies running at once add up.
    --deselect "tests/resilience/test_timeout.py::test_overrunning_calls_are_bounded_and_the_worker_waits_at_the_bound"
)

step "pytest-run-parallel on ${version}t: $threads threads x $iterations iterations"
PYTHON_GIL=0 bounded "$venv/bin/python" -m pytest -p no:cacheprovider "${timeouts[@]}" -q "${parallel_options[@]}" \
    "${concurrency_tests[@]}"

step "the fault fuzzer on ${version}t: $scenarios scenarios"
PYTHON_GIL=0 bounded "$venv/bin/python" benchmarks/stress_faults.py --scenarios "$scenarios" --seed 0

step "the concurrency tests on the GIL build with a 1 us switch interval"
bounded "$gil_python" -c 'import sys; sys.setswitchinterval(1e-6); import pytest; sys.exit(pytest.main(sys.argv[1:]))' \
    -p no:cacheprovider "${timeouts[@]}" -q "${concurrency_tests[@]}"

step "done"
