"""asyncio stages under hostile code: each scenario runs in a fresh interpreter under a timeout.

Code on a stage's loop that raises `SystemExit` or `KeyboardInterrupt`, stops the loop,
ignores its cancellation or never finishes must still let the run end, with a
`StageError` naming the original where there is one, and no thread left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from support import WAIT

SCRIPT_TIMEOUT = 6 * WAIT

PREAMBLE = """
import asyncio, threading, time
from pipeline import FunctionStage, Pipeline, PipelineClosed, StageError
from pipeline.aio import AsyncFunctionStage, AsyncStage

def report(case, call):
    try:
        outcome = f"returned {call()!r}"
    except StageError as error:
        cause = error.__cause__
        outcome = f"StageError {error.phase} {type(cause).__name__} {cause.args}"
    except PipelineClosed:
        outcome = "PipelineClosed"
    print(f"{case}: {outcome}", flush=True)

def close_when(pipeline, ready):
    # Close `pipeline` from another thread once `ready` is set; its stream yields nothing.
    def consume():
        report("stream", lambda: list(pipeline.stream(range(100))))
    consumer = threading.Thread(target=consume)
    consumer.start()
    assert ready.wait(5)
    pipeline.close()
    consumer.join()
"""

EPILOGUE = """
print(f"threads left: {threading.active_count() - 1}", flush=True)
"""


def run_alone(body: str) -> list[str]:
    """Run `body` after PREAMBLE in a new interpreter; return the lines it printed.

    Fails if the interpreter does not end within SCRIPT_TIMEOUT (then it is killed), if
    it exits non-zero, or if it says it left a thread; the process is reaped by pid.
    """
    script = PREAMBLE + textwrap.dedent(body) + EPILOGUE
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=SCRIPT_TIMEOUT)
    finally:
        process.kill()
        process.wait(WAIT)
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    assert process.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[-1] == "threads left: 0", stderr
    return lines[:-1]


@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt('user')"])
def test_system_exit_or_keyboard_interrupt_from_a_coroutine_fails_its_item(raised: str) -> None:
    lines = run_alone(f"""
        async def fail_on_five(item):
            await asyncio.sleep(0)
            if item == 5:
                raise {raised}
            return item

        for batch_size in (1, 8):  # an item alone in its batch, or among others
            stage = AsyncFunctionStage(fail_on_five, concurrency=4)
            report(batch_size, lambda: Pipeline(stage, batch_size=batch_size).run(range(20)))
        """)
    name = raised.split("(")[0]
    args = "(3,)" if name == "SystemExit" else "('user',)"
    assert lines == [f"1: StageError process {name} {args}", f"8: StageError process {name} {args}"]


@pytest.mark.parametrize("where", ["open", "close"])
@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt('user')"])
def test_system_exit_or_keyboard_interrupt_from_open_or_close_fails_the_run(
    where: str, raised: str
) -> None:
    lines = run_alone(f"""
        class Client(AsyncStage):
            async def {where}(self):
                await asyncio.sleep(0)
                raise {raised}

            async def process_async(self, item):
                return item

        report("{where}", lambda: Pipeline(Client(concurrency=3)).run(range(20)))
        """)
    name = raised.split("(")[0]
    args = "(3,)" if name == "SystemExit" else "('user',)"
    phase = "setup" if where == "open" else "teardown"
    assert lines == [f"{where}: StageError {phase} {name} {args}"]


def test_system_exit_from_a_task_of_the_coroutines_own_fails_the_run() -> None:
    lines = run_alone("""
        async def start_a_task(item):
            async def leave():
                raise SystemExit(4)

            if item == 2:
                asyncio.get_running_loop().create_task(leave())
                await asyncio.sleep(0.01)
            return item

        stage = AsyncFunctionStage(start_a_task, concurrency=2)
        report("task", lambda: Pipeline(stage, batch_size=1).run(range(10)))
        """)
    assert lines == ["task: StageError process SystemExit (4,)"]


def test_code_that_stops_the_stages_loop_fails_the_run() -> None:
    lines = run_alone("""
        async def stop_the_loop(item):
            if item == 3:
                asyncio.get_running_loop().stop()
            await asyncio.sleep(0)
            return item

        stage = AsyncFunctionStage(stop_the_loop, concurrency=2)
        report("stopped", lambda: Pipeline(stage, batch_size=1).run(range(10)))
        """)
    assert lines == [
        "stopped: StageError process PipelineError (\"code on an asyncio stage's event loop "
        'called loop.stop(); the stage stops its loop itself",)'
    ]


def test_a_coroutine_that_ignores_its_cancellation_is_left_after_stop_timeout() -> None:
    lines = run_alone("""
        started = threading.Event()

        async def stubborn(item):
            started.set()
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        stage = AsyncFunctionStage(stubborn, concurrency=2, stop_timeout=0.2)
        close_when(Pipeline(stage, batch_size=1), started)
        """)
    assert lines == ["stream: PipelineClosed"]


def test_an_open_that_never_ends_is_cancelled_by_the_stop_and_close_is_not_called() -> None:
    lines = run_alone("""
        opening = threading.Event()
        calls = []

        class NeverOpens(AsyncStage):
            async def open(self):
                opening.set()
                try:
                    await asyncio.sleep(3600)
                finally:
                    calls.append("open's finally")

            async def close(self):
                calls.append("close")

            async def process_async(self, item):
                return item

        close_when(Pipeline(NeverOpens(concurrency=3)), opening)
        print(calls)
        """)
    assert lines == ["stream: PipelineClosed", '["open\'s finally"]']


def test_a_close_that_never_ends_after_a_stop_fails_the_teardown_after_stop_timeout() -> None:
    lines = run_alone("""
        started = threading.Event()

        class NeverCloses(AsyncStage):
            async def close(self):
                while True:
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        pass

            async def process_async(self, item):
                started.set()
                await asyncio.sleep(3600)

        close_when(Pipeline(NeverCloses(concurrency=2, stop_timeout=0.2)), started)
        """)
    assert lines == [
        "stream: StageError teardown PipelineError (\"stage 'NeverCloses': close() did not "
        'end within stop_timeout=0.2 s of the stop",)'
    ]


def test_a_stop_cancels_an_async_source_waiting_for_its_next_item() -> None:
    lines = run_alone("""
        from pipeline.aio import iterate_async

        closed = []

        async def two_then_silence():
            try:
                yield 1
                yield 2
                await asyncio.sleep(3600)  # a socket with nothing more to say
                yield 3
            finally:
                await asyncio.sleep(0)
                closed.append(threading.current_thread().name)

        def check(item):
            if item == 2:
                raise ValueError("two")
            return item

        def broken_off():
            for item in Pipeline(FunctionStage(check), batch_size=1).stream(
                iterate_async(two_then_silence())
            ):
                return item

        report("break", broken_off)
        print(closed, flush=True)
        source = iterate_async(two_then_silence())
        report("failure", lambda: Pipeline(FunctionStage(check), batch_size=1).run(source))
        print(closed, flush=True)
        """)
    assert lines == [
        "break: returned 1",
        "['pipeline-source']",
        "failure: StageError process ValueError ('two',)",
        "['pipeline-source', 'pipeline-source']",
    ]
