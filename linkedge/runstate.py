"""What ``linkedge up`` keeps under ``LINKEDGE_HOME`` between runs, and the files' formats.

- ``run.env``: ``NAME=value`` lines a shell can source (URLs, the demo key, secrets), mode 0600;
- ``ports.json``: the ports picked for the embedded stores, reused while still free;
- ``up.json``: the pid of the running ``up`` and of every process it started, so that a later
  run can clean up after one that was SIGKILLed (``runs_ours`` guards against reused pids).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
from pathlib import Path
from typing import Any

_OURS = (b"linkedge", b"redis-server", b"postgres", b"granian")  # what a recorded pid may run


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines as written by ``write_env_file`` (values shell-quoted)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            parts = shlex.split(raw) if raw.strip() else [""]
            values[name.strip()] = parts[0] if parts else ""
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write ``NAME=value`` lines a shell can source (``set -a; . FILE; set +a``); 0600: it holds a key."""
    body = "# Written by `linkedge up`; source it: set -a; . " + path.name + "; set +a\n"
    body += "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """The object in ``path``; ``{}`` when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` at once (written beside it, then renamed)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``host:port`` now (a socket in TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def reuse_port(port: object) -> int | None:
    """A port saved by a previous run, when it is still free; None picks a new one."""
    if isinstance(port, int) and 0 < port < 65536 and port_free(port):
        return port
    return None


def runs_ours(pid: int) -> bool:
    """Whether ``pid`` is alive and runs something ``up`` starts (guards against pid reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return any(word in cmdline for word in _OURS)
