"""A killed command leaves nothing running: its workers (and any forked
child) notice that their parent is gone and exit within a second or so,
instead of using cores or writing into an unfinished results folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: the fields after it are fixed
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@pytest.mark.parametrize("command", [
    ["run", "scenarios/baseline.yaml", "--patients", "400000", "--n-jobs", "2"],
    ["psa", "scenarios/baseline.yaml", "--draws", "40", "--patients", "3000", "--n-jobs", "2"],
], ids=["run", "psa"])
def test_killing_the_parent_leaves_no_process_behind(tmp_path, command):
    process = subprocess.Popen([sys.executable, "-m", "carsim", *command, "--out", str(tmp_path / "out")],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        parent_command = ""
        while time.monotonic() < deadline and not workers:
            parent_command = parent_command or _cmdline(process.pid)
            # loky workers, or workers forked from the command (the same command line)
            workers = {pid for pid in _children(process.pid)
                       if "loky" in _cmdline(pid) or _cmdline(pid) == parent_command}
            assert process.poll() is None, "the command ended before its workers could be seen"
            time.sleep(0.05)
        assert workers, "expected a worker"
        time.sleep(0.5)  # all of them started
        everything = _children(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(map(_alive, everything)):
            time.sleep(0.1)
        left = [pid for pid in everything if _alive(pid)]
        assert not left, f"still running 5 s after the parent was killed: {[_cmdline(p) for p in left]}"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left, so that the suite goes on
        except ProcessLookupError:
            pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
