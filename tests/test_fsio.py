"""`fsio.replace_dir` / `staged_dir` / `recover`: a folder is always complete, old or new, whatever step of
the swap fails or the process dies at; and `digest`, the one config hash."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from longctx_core import fsio

FILES = ("a.txt", "b.txt", "c.txt")
RENAMES_IN_A_SWAP = 3  # seal .tmp -> .new, set dest aside as .old, move .new in


def _write(folder: Path, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).write_text(f"{version}:{name}")


def _version(folder: Path) -> str:
    """'old' or 'new' when `folder` holds a complete copy of that version; fails the test otherwise."""
    assert folder.is_dir(), f"{folder} is missing"
    contents = {p.name: p.read_text() for p in folder.iterdir()}
    assert sorted(contents) == sorted(FILES), f"half a folder: {sorted(contents)}"
    versions = {text.split(":")[0] for text in contents.values()}
    assert len(versions) == 1, f"a mix of versions: {contents}"
    return versions.pop()


def _listing(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_swap_replaces_and_leaves_nothing_behind(tmp_path):
    dest = tmp_path / "adapter"
    _write(dest, "old")
    with fsio.staged_dir(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        _write(tmp, "new")
        assert _version(dest) == "old"  # readers see the old folder while the new one is written
    assert _version(dest) == "new"
    assert _listing(tmp_path) == ["adapter"]


def test_an_error_while_writing_keeps_the_old_folder(tmp_path):
    dest = tmp_path / "adapter"
    _write(dest, "old")
    with pytest.raises(RuntimeError, match="disk full"), fsio.staged_dir(dest) as tmp:
        (tmp / "a.txt").write_text("new:a.txt")
        raise RuntimeError("disk full")
    assert _version(dest) == "old" and _listing(tmp_path) == ["adapter"]


def test_keep_existing_drops_the_new_folder(tmp_path):
    dest = tmp_path / "cache"
    _write(dest, "old")
    with fsio.staged_dir(dest, keep_existing=True) as tmp:
        _write(tmp, "new")
    assert _version(dest) == "old" and _listing(tmp_path) == ["cache"]


@pytest.mark.parametrize("failing_call", range(1, RENAMES_IN_A_SWAP + 1))
def test_a_failed_rename_at_any_step_keeps_a_complete_folder(tmp_path, monkeypatch, failing_call):
    dest = tmp_path / "adapter"
    _write(dest, "old")
    real_rename, calls = os.rename, []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == failing_call:
            raise OSError(5, "injected I/O error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky)
    with pytest.raises(OSError, match="injected"), fsio.staged_dir(dest) as tmp:
        _write(tmp, "new")
    assert len(calls) >= failing_call  # the injected step was reached
    assert _version(dest) == "old"
    assert _listing(tmp_path) == ["adapter"]  # the temp, sealed and aside copies are gone
    monkeypatch.setattr(os, "rename", real_rename)
    fsio.recover(dest)
    assert _version(dest) == "old"


def _swap_and_die_at(dest: Path, die_at_rename: int, die_in_rmtree: bool) -> None:
    """Child process: replace `dest` with version 'new', dying (os._exit: no cleanup, no finally) right
    before rename number `die_at_rename`, or after deleting one file of the old folder."""
    real_rename, real_rmtree, calls = os.rename, fsio.shutil.rmtree, [0]

    def rename(src, dst):
        calls[0] += 1
        if calls[0] == die_at_rename:
            os._exit(9)
        return real_rename(src, dst)

    def rmtree(path, *args, **kwargs):
        if die_in_rmtree and ".old-" in Path(path).name:
            next(Path(path).iterdir()).unlink()
            os._exit(9)
        return real_rmtree(path, *args, **kwargs)

    os.rename = rename
    fsio.shutil.rmtree = rmtree
    with fsio.staged_dir(dest) as tmp:
        _write(tmp, "new")
    os._exit(0)


@pytest.mark.parametrize(
    ("die_at_rename", "die_in_rmtree", "expected"),
    [
        (1, False, "old"),  # before sealing: the new folder is an unsealed temp folder
        (2, False, "old"),  # sealed, old still in place
        (3, False, "new"),  # old set aside, sealed new not moved in: dest is missing until recover
        (0, True, "new"),  # new in place, killed while deleting the old folder
    ],
)
def test_a_process_killed_at_any_step_leaves_a_complete_folder_after_recover(
    tmp_path, die_at_rename, die_in_rmtree, expected
):
    dest = tmp_path / "adapter"
    _write(dest, "old")
    child = multiprocessing.get_context("fork").Process(
        target=_swap_and_die_at, args=(dest, die_at_rename, die_in_rmtree)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 9  # it really died mid-swap
    left = _listing(tmp_path)
    assert len(left) >= 2, left  # the crash left debris the swap would have cleaned
    if "adapter" in left:
        assert _version(dest) in ("old", "new")  # never half
    fsio.recover(dest)
    assert _version(dest) == expected
    assert _listing(tmp_path) == ["adapter"]  # the dead writer's temp folder is cleaned up too
    # The next swap works normally on the recovered folder.
    with fsio.staged_dir(dest) as tmp:
        _write(tmp, "newer")
    assert _version(dest) == "newer" and _listing(tmp_path) == ["adapter"]


def test_a_swap_after_a_crash_recovers_first(tmp_path):
    """A crash left dest missing with only the previous folder set aside; the next writer restores it
    before its own swap (and would have kept it had its own write failed)."""
    dest = tmp_path / "adapter"
    _write(tmp_path / "adapter.old-123-abcd", "old")
    with pytest.raises(RuntimeError), fsio.staged_dir(dest):
        raise RuntimeError("write failed")
    assert not dest.exists()  # a failed write does not swap, and so does not recover either
    fsio.recover(dest)
    assert _version(dest) == "old" and _listing(tmp_path) == ["adapter"]


def test_a_live_writers_temp_folder_is_not_removed(tmp_path):
    dest = tmp_path / "adapter"
    _write(dest, "old")
    with fsio.staged_dir(dest) as tmp:
        _write(tmp, "new")
        fsio.recover(dest)  # e.g. a reader in another process
        assert tmp.is_dir() and _version(tmp) == "new"
    assert _version(dest) == "new"


def test_digest_is_canonical_and_sensitive():
    a = fsio.digest({"x": 1, "y": [1, 2]})
    assert a == fsio.digest({"y": [1, 2], "x": 1}) and len(a) == 16
    assert a != fsio.digest({"x": 1, "y": [2, 1]})
    assert len(fsio.digest("z", length=12)) == 12
