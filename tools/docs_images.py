"""Draw every picture of docs/images again: `make docs-images`.

Run: .venv/bin/python tools/docs_images.py [FOLDER]   (docs/images by default)

Each picture has one function here that makes it with the command its page names;
tests/test_doc_commands.py draws them all into a temporary folder and checks that each
committed picture is made here, with the committed width and height.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds for one picture


def demo_timeline(path: Path) -> None:
    """docs/observability.md: `.venv/bin/python examples/timeline.py PICTURE.png`."""
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "timeline.py"), str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=TIMEOUT,
    )


def etl_windows(path: Path) -> None:
    """docs/etl.md: `run_stream(readings=6000, paced=False, plot=...)`."""
    from pipeline.demos.etl import run_stream

    run_stream(readings=6000, paced=False, plot=path, out=io.StringIO())


IMAGES: dict[str, Callable[[Path], None]] = {
    "demo_timeline.png": demo_timeline,
    "etl_windows.png": etl_windows,
}


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else ROOT / "docs" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name, draw in IMAGES.items():
        draw(folder / name)
        sys.stdout.write(f"drew {folder / name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
