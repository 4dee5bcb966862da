"""The processes the bench starts: each in its own process group, all stopped on the way out."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import httpx

from linkedge import procgroup
from linkedge.embedded import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# The Granian flags of the edge (linkedge/serve.py), so that the reference runs the same server.
GRANIAN_FLAGS = [
    "--interface",
    "asgi",
    "--http",
    "1",
    "--no-ws",
    "--loop",
    "uvloop",
    "--backpressure",
    "512",
    "--log-level",
    "warning",
    "--no-access-log",
]


class Proc:
    """A child process in a new session; ``stop()`` signals its whole group."""

    def __init__(
        self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 -- open for the process's life, closed by stop()
        self.proc = procgroup.spawn(args, env=env, cwd=ROOT, output=self._out)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        procgroup.stop(self.proc, timeout)  # workers that outlived their parent carry its group id
        self._out.close()

    def tail(self, lines: int = 30) -> str:
        self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Server:
    def __init__(self, name: str, proc: Proc, port: int) -> None:
        self.name = name
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_up(self, path: str = "/", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(
                    f"{self.name} exited {self.proc.proc.returncode}:\n{self.proc.tail()}"
                )
            try:
                httpx.get(self.url + path, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} did not answer on {self.url} within {timeout}s:\n{self.proc.tail()}"
        )

    def worker_pids(self) -> list[int]:
        """Descendant processes that serve requests (Granian workers; nginx's worker)."""
        found = []
        for pid in descendants(self.proc.pid):
            cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
            if "resource_tracker" in cmdline or "taskset" in cmdline:
                continue
            found.append(pid)
        return found or [self.proc.pid]


def pinned(cpu: int | None, args: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *args] if cpu is not None else args


def start_reference(tmp: Path, cpu: int | None) -> Server:
    port = free_port()
    granian = str(Path(sys.executable).with_name("granian"))
    args = [
        granian,
        *GRANIAN_FLAGS,
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "loadtest.bench.reference_app:app",
    ]
    server = Server(
        "granian reference", Proc("granian-ref", pinned(cpu, args), tmp / "granian-ref.log"), port
    )
    server.wait_up()
    return server


def start_nginx(tmp: Path, cpu: int | None) -> Server | None:
    """nginx ``return 302`` with one worker, or None when nginx is not installed."""
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        return None
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text((HERE / "nginx.conf").read_text().format(prefix=prefix, port=port))
    args = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    server = Server("nginx reference", Proc("nginx", pinned(cpu, args), tmp / "nginx.log"), port)
    server.wait_up()
    return server


def start_edge(name: str, tmp: Path, cpu: int | None, env: dict[str, str]) -> Server:
    """``linkedge edge`` with one worker; ``env`` holds the store URLs and this edge's knobs."""
    port = free_port()
    own = dict(
        env,
        PORT=str(port),
        HOST="127.0.0.1",
        EDGE_WORKERS="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp / f"prom-{name}"),
        CLICK_SPOOL_DIR=str(tmp / f"spool-{name}"),
    )
    args = [sys.executable, "-m", "linkedge.cli", "edge"]
    server = Server(
        f"edge {name}", Proc(f"edge-{name}", pinned(cpu, args), tmp / f"edge-{name}.log", own), port
    )
    server.wait_up("/healthz")
    return server


def start_command(name: str, tmp: Path, env: dict[str, str], *command: str) -> Proc:
    """``linkedge COMMAND`` (aggregator, analytics) on the bench's own core."""
    return Proc(name, [sys.executable, "-m", "linkedge.cli", *command], tmp / f"{name}.log", env)


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in _listdir(f"/proc/{parent}/task"):
            for child in _read(f"/proc/{parent}/task/{task}/children").split():
                out.append(int(child))
                todo.append(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_rss_kib(pid: int) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
