"""Child processes in process groups of their own, and how they are stopped.

Every long-lived child that linkedge starts (``linkedge up``'s apps and stores, the bench's
servers, the test harness's processes) leads a new session, so that one signal to its group
reaches what it started in turn (Granian's workers, Postgres's backends). Stopping is always the
same: a signal to the group, a wait, then SIGKILL for whatever of the group is left.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the parent dies, even by SIGKILL (Linux only)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    output: IO[bytes] | None = None,
    user: str | None = None,
    tied: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``args`` as the leader of a new process group, stdin closed, stdout and stderr to
    ``output`` (inherited when None); ``tied``: it gets SIGTERM when this process dies."""
    return subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
        user=user,
        preexec_fn=die_with_parent if tied else None,  # noqa: PLW1509 -- one prctl call
    )


def signal_pid(pid: int, sig: int) -> None:
    """``kill(pid, sig)``; a process already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def signal_group(pgid: int, sig: int) -> None:
    """``killpg(pgid, sig)``; a group already gone (or no longer ours) is not an error."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pgid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal the process group ``pgid``; SIGKILL what is left of it after ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        os.killpg(pgid, sig)
        while time.monotonic() < deadline:
            time.sleep(0.05)
            os.killpg(pgid, 0)
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """Stop the group ``proc`` leads: SIGTERM, up to ``timeout`` for the leader to exit, then
    SIGKILL for the leader if it is still there and for anything of its group that outlived it
    (workers carry the group id). Returns the leader's exit status."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    signal_group(proc.pid, signal.SIGKILL)
    return proc.returncode
