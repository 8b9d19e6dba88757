"""Tests for pipeline.native.buffers: fresh output memory, its huge pages and its fallbacks."""

from __future__ import annotations

import array
import mmap
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.native import buffers
from pipeline.native.buffers import checked_output, fresh_doubles, huge_page_size, overlap

LARGE = 200_000  # 1.6 MB: past the size below which fresh output comes from the heap


@pytest.fixture(autouse=True)
def fresh_huge_page_size() -> Iterator[None]:
    """Forget the cached THP size before and after each test, so monkeypatches apply."""
    huge_page_size.cache_clear()
    yield
    huge_page_size.cache_clear()


def test_fresh_doubles_is_a_writable_view_of_zeros_of_the_asked_length() -> None:
    for count in (0, 1, 1000, LARGE):
        view = fresh_doubles(count)
        assert (view.format, view.itemsize, len(view), view.readonly) == ("d", 8, count, False)
        assert view.tobytes() == bytes(8 * count)
        if count:
            view[count - 1] = 2.5
            assert view[count - 1] == 2.5


def test_small_outputs_come_from_the_heap_and_large_ones_from_a_mapping() -> None:
    assert isinstance(fresh_doubles(1000).obj, bytearray)
    assert isinstance(fresh_doubles(LARGE).obj, mmap.mmap)
    assert isinstance(fresh_doubles(LARGE, huge_pages=False).obj, mmap.mmap)


def test_fresh_doubles_rejects_a_negative_count() -> None:
    with pytest.raises(ValueError, match=r"^count must be >= 0, got -1$"):
        fresh_doubles(-1)


def write_thp_files(directory: Path, enabled: str, size: str) -> None:
    directory.mkdir()
    (directory / "enabled").write_text(enabled + "\n")
    (directory / "hpage_pmd_size").write_text(size + "\n")


@pytest.mark.parametrize(
    ("enabled", "size", "expected"),
    [
        ("always [madvise] never", "2097152", 2_097_152),
        ("[always] madvise never", "2097152", 2_097_152),
        ("always madvise [never]", "2097152", 0),
        ("always [madvise] never", "not a number", 0),
        ("always [madvise] never", "0", 0),
    ],
)
def test_huge_page_size_follows_the_kernel_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, enabled: str, size: str, expected: int
) -> None:
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        pytest.skip("no MADV_HUGEPAGE on this platform")
    write_thp_files(tmp_path / "thp", enabled, size)
    monkeypatch.setattr(buffers, "_TRANSPARENT_HUGE_PAGES", tmp_path / "thp")
    assert huge_page_size() == expected


def test_without_transparent_huge_pages_fresh_output_is_an_ordinary_mapping(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(buffers, "_TRANSPARENT_HUGE_PAGES", tmp_path / "missing")
    assert huge_page_size() == 0
    view = fresh_doubles(LARGE)
    assert isinstance(view.obj, mmap.mmap)
    assert len(view.obj) == 8 * LARGE  # no room added for huge-page alignment


class RefusingMapping(mmap.mmap):
    """A mapping whose madvise fails, as on a kernel built without THP."""

    def madvise(self, option: int, start: int = 0, length: int = 0) -> None:
        raise OSError(22, "Invalid argument")


def test_a_refused_madvise_falls_back_to_ordinary_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    if not huge_page_size():
        pytest.skip("no transparent huge pages here")
    monkeypatch.setattr(
        buffers,
        "_anonymous_mapping",
        lambda size: RefusingMapping(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS),
    )
    view = fresh_doubles(LARGE)
    assert isinstance(view.obj, RefusingMapping)
    view[LARGE - 1] = 1.0
    assert (len(view), view[LARGE - 1]) == (LARGE, 1.0)


def test_overlap_tells_shared_memory_from_separate_and_read_only_views_apart() -> None:
    buffer = memoryview(array.array("d", [0.0] * 10)).cast("B").cast("d")
    assert overlap(buffer[:5], buffer[4:])
    assert overlap(buffer[2:3], buffer)
    assert not overlap(buffer[:5], buffer[5:])
    assert not overlap(buffer[:0], buffer)
    assert not overlap(buffer, memoryview(array.array("d", [0.0] * 10)).cast("B").cast("d"))
    assert not overlap(buffer.toreadonly(), buffer)  # read-only: cannot be told


def test_checked_output_names_both_arguments() -> None:
    message = "out holds 1 float64 items but data has 3; out needs room for every input item"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        checked_output(array.array("d", [0.0]), 3, argument="out", input_argument="data")
