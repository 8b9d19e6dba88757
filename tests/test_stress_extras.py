"""The extras' fault fuzzer, `benchmarks/stress_extras.py --quick`: every count stays zero.

The fuzzer runs its scenarios in worker processes of its own, each killed and replaced
when a scenario hangs, and kills every one of them before it exits; this test runs it
in a subprocess under a timeout. `--time-limit` starts no scenario past 35 s, so that a
broken build still reports its counts within the test's 60 s; scenarios left unrun
make the fuzzer fail too. The failing scenarios are shown with the `--replay SEED:INDEX`
that runs each one again.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "stress_extras.py"
TIME_LIMIT = 35  # seconds after which the fuzzer starts no scenario
TIMEOUT = 52  # seconds: the time limit, a scenario's bound, the workers' start and end


def test_the_quick_preset_of_the_extras_fuzzer_finds_nothing() -> None:
    fuzzer = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--time-limit", str(TIME_LIMIT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout = stderr = ""
    try:
        stdout, stderr = fuzzer.communicate(timeout=TIMEOUT)
    finally:
        if fuzzer.poll() is None:
            fuzzer.send_signal(signal.SIGTERM)  # it kills its worker processes, then exits
            try:
                stdout, stderr = fuzzer.communicate(timeout=5)
            finally:
                fuzzer.kill()
                fuzzer.wait(5)
    report = f"{stdout[-8000:]}\n{stderr[-2000:]}"
    assert fuzzer.returncode == 0, report
    kinds = dict(re.findall(r"([\w-]+) (\d+)", stdout.split("kinds run: ", 1)[1].splitlines()[0]))
    assert all(int(count) >= 3 for count in kinds.values()), report
