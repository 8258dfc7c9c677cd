"""headctl.py stops exactly one tagged process tree and judges listening addresses correctly (fast, no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

# A "head" whose child drops the tag from its environment, as Ray's setproctitle'd processes appear to.
_PARENT = (
    "import os, subprocess, sys, time\n"
    "env = {k: v for k, v in os.environ.items() if k != 'LONGCTX_RAY_HEAD'}\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], env=env)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_stop_head_kills_the_tagged_tree_and_nothing_else(headctl, tmp_path):
    temp = tmp_path / "ray"
    temp.mkdir()
    (temp / headctl.ADDRESS_FILE).write_text("127.0.0.1:6379")
    (temp / headctl.STATE_FILE).write_text("DASHBOARD_URL=http://127.0.0.1:8265\n")
    tagged = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        env={**os.environ, headctl.MARKER_ENV: str(temp.resolve())},
        stdout=subprocess.PIPE,
        text=True,
    )
    other_tag = subprocess.Popen(  # another head's process: a different temp dir
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**os.environ, headctl.MARKER_ENV: str(tmp_path / "elsewhere")},
    )
    untagged = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    child_pid = None
    try:
        child_pid = int(tagged.stdout.readline())
        found = {p.pid for p in headctl.head_processes(str(temp.resolve()))}
        assert found == {tagged.pid, child_pid}
        assert headctl.stop_head(temp, grace_s=3.0) == 2
        assert tagged.wait(timeout=10) is not None
        deadline = time.monotonic() + 10
        while headctl.head_processes(str(temp.resolve())) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert headctl.head_processes(str(temp.resolve())) == []
        assert other_tag.poll() is None and untagged.poll() is None  # never anyone else's
        assert not (temp / headctl.ADDRESS_FILE).exists() and headctl.read_state(temp) == {}
        assert headctl.stop_head(temp) == 0  # idempotent
    finally:
        for proc in (tagged, other_tag, untagged):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if child_pid is not None:
            try:
                os.kill(child_pid, 9)
            except ProcessLookupError:
                pass


def test_is_loopback(headctl):
    for ip in ("127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"):
        assert headctl.is_loopback(ip), ip
    # wildcards count as exposed: they listen on every interface
    for ip in ("0.0.0.0", "::", "192.0.2.2", "10.0.0.5", "::ffff:192.0.2.2", "fe80::1%eth0"):
        assert not headctl.is_loopback(ip), ip
