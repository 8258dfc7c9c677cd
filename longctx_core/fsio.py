"""Durable on-disk state: replacing a folder so a crash never leaves a hole, and the one config hash.

A folder that readers rely on (the final adapter, a merged model, a cached checkpoint) is replaced in
steps, each a single `os.rename` within one parent folder:

    1. write        the caller fills   <parent>/.<name>.tmp-<host>-<pid>-<rand>/    (never read by anyone)
    2. seal         rename it to       <parent>/<name>.new-<token>                 (complete by construction:
                                                                                    only a finished folder gets
                                                                                    this name)
    3. set aside    rename <dest> to   <parent>/<name>.old-<token>
    4. move in      rename .new-<token> to <dest>
    5. clean        delete .old-<token>

At every instant a complete folder exists under one of the names <dest>, `.new-*` or `.old-*`. `recover`
(run by every swap before it starts, and by readers before they look) turns any interrupted state back
into a complete <dest>: a missing <dest> gets the newest sealed `.new-*` (the swap is finished), else the
newest `.old-*` (the swap is undone); leftovers next to a present <dest> are deleted. Steps 2-5 and
`recover` hold an exclusive `flock` on the parent folder, so two processes never interleave their swaps;
step 1, the slow one, runs unlocked.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


# ---- the one config hash ---------------------------------------------------------------------------------------


def digest(obj, length: int = 16) -> str:
    """The first `length` hex digits of the SHA-256 of `obj` as canonical JSON (sorted keys): the hash every
    marker and cache-folder name in the project uses. Returns a hex string."""
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# ---- folder replacement ------------------------------------------------------------------------------------------


def _new_prefix(dest: Path) -> str:
    return f"{dest.name}.new-"


def _old_prefix(dest: Path) -> str:
    return f"{dest.name}.old-"


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp-"


@contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """Hold an exclusive flock on folder `parent` (serialises swaps and recovery between processes).

    On a filesystem without flock (some network mounts) the swap runs unlocked, which is still safe for a
    single writer."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            logger.debug("no flock on %s (%s); swapping without a lock", parent, e)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _siblings(dest: Path, prefix: str) -> list[Path]:
    """Folders beside `dest` whose name starts with `prefix`, oldest first (by modification time)."""
    found = [p for p in dest.parent.iterdir() if p.name.startswith(prefix)]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _dead_writer(tmp: Path) -> bool:
    """True when the process that was writing temp folder `tmp` (its name carries host and pid) is gone."""
    try:
        host, pid = tmp.name.rsplit(".tmp-", 1)[1].rsplit("-", 2)[:2]
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False  # cannot tell from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False


def _recover_locked(dest: Path) -> None:
    news, olds = _siblings(dest, _new_prefix(dest)), _siblings(dest, _old_prefix(dest))
    if not dest.exists():
        if news:  # interrupted between set-aside and move-in: finish the swap
            os.rename(news.pop(), dest)
            logger.warning("recovered %s: finished an interrupted replacement", dest)
        elif olds:  # no sealed new folder: put the previous one back
            os.rename(olds.pop(), dest)
            logger.warning("recovered %s: restored the previous folder of an interrupted replacement", dest)
    for leftover in news + olds:
        shutil.rmtree(leftover, ignore_errors=True)
    for tmp in _siblings(dest, _tmp_prefix(dest)):
        if _dead_writer(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def recover(dest: str | Path) -> Path:
    """Repair an interrupted `replace_dir` of `dest` (see the module docstring); returns `dest`.

    Cheap when there is nothing to do; safe to call from readers before they open `dest`."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return dest
    with _parent_lock(dest.parent):
        _recover_locked(dest)
    return dest


def replace_dir(new: str | Path, dest: str | Path, keep_existing: bool = False) -> Path:
    """Put the fully written folder `new` at `dest` (same parent filesystem), replacing a previous `dest`
    so that a complete folder, old or new, is always there; returns `dest`.

    `keep_existing=True`: when `dest` already exists it wins and `new` is deleted (for caches that several
    processes may build at once; their folders are equivalent). If a rename fails, the previous folder is
    put back and the error raised.
    """
    new, dest = Path(new), Path(dest)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sealed = dest.with_name(_new_prefix(dest) + token)
    aside = dest.with_name(_old_prefix(dest) + token)
    with _parent_lock(dest.parent):
        _recover_locked(dest)
        if keep_existing and dest.exists():
            shutil.rmtree(new, ignore_errors=True)
            return dest
        os.rename(new, sealed)  # a missing or unmovable `new` fails here, before `dest` is touched
        had_old = dest.exists()
        try:
            if had_old:
                os.rename(dest, aside)
            os.rename(sealed, dest)
        except OSError:
            # Undo: the previous folder goes back (retrying the failed move-in could fail the same way).
            if not dest.exists() and aside.exists():
                os.rename(aside, dest)
            shutil.rmtree(sealed, ignore_errors=True)
            raise
        if had_old:
            shutil.rmtree(aside, ignore_errors=True)
    return dest


def _tmp_name(dest: Path) -> Path:
    """A fresh temp-folder path beside `dest` naming this host and process (so `recover` can tell whether
    its writer is gone)."""
    return Path(
        tempfile.mkdtemp(prefix=f"{_tmp_prefix(dest)}{socket.gethostname()}-{os.getpid()}-", dir=dest.parent)
    )


def remove_dir(dest: str | Path) -> None:
    """Delete folder `dest` (if present) so that it is never seen half-deleted: it is renamed to a temp
    name first; a crash during the deletion leaves a temp folder that `recover` removes."""
    dest = Path(dest)
    if not dest.exists():
        return
    trash = _tmp_name(dest)
    os.rename(dest, trash / dest.name)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def staged_dir(dest: str | Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside `dest` to write into; on a normal exit it replaces `dest`
    (`replace_dir`), on an exception it is deleted and `dest` is left as it was.

        with staged_dir(layout.train.adapter) as tmp:
            model.save_pretrained(tmp)
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dest)
    try:
        yield tmp
        replace_dir(tmp, dest, keep_existing=keep_existing)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def default_cache_dir() -> Path:
    """Where built tiny checkpoints are cached: $LONGCTX_CACHE_DIR or ~/.cache/longctx."""
    return Path(os.environ.get("LONGCTX_CACHE_DIR", Path.home() / ".cache" / "longctx")).expanduser()
