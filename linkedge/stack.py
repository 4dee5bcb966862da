"""``linkedge up``: the whole stack in the foreground, with embedded stores where no URL is given.

State lives under ``LINKEDGE_HOME`` (default ``.linkedge``) and is kept across runs: the store data,
the ports picked for the embedded stores (``ports.json``, reused while still free so that URLs stay
stable), and ``run.env`` with the URLs, the demo API key, the visitor-salt secret (made when none is
given) and ``ANALYTICS_TOKEN`` (the shared secret of the analytics port's data routes: made when
none is given, in the environment of the edge, the aggregator and analytics, and read from run.env
by ``linkedge reconcile``). ``up.json`` lists the pid of every process this run started, each the
leader of its own process group: a later run uses it to clean up after one that was SIGKILLed, and
the tests use it to check that a stop leaves nothing behind.

Those files are ``linkedge.runstate``'s; the demo account, key and link are ``linkedge.demo``'s;
every child leads its own process group (``linkedge.procgroup``).

Stopping (Ctrl-C, SIGTERM, SIGHUP): the edge, the aggregator and analytics get SIGTERM and up to
``STOP_TIMEOUT_S`` to drain, then whatever is left of their groups gets SIGKILL; then Postgres and
Redis stop. A child that exits on its own stops the whole stack with exit status 1 rather than
being restarted: a stack that silently stopped counting clicks would be worse than a loud stop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

import asyncpg

from linkedge import procgroup
from linkedge.demo import DEMO_ACCOUNT, DEMO_CODE, DEMO_TARGET, ensure_demo
from linkedge.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis, chdb_url, free_port
from linkedge.migrate import migrate_postgres
from linkedge.runstate import (
    port_free,
    read_env_file,
    read_json,
    reuse_port,
    runs_ours,
    write_env_file,
    write_json,
)
from linkedge.settings import Settings

log = logging.getLogger("linkedge.up")

APPS = ("edge", "aggregator", "analytics")
STOP_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(Exception):
    """A signal asked the stack to stop."""


class StackError(RuntimeError):
    """The stack cannot run: a port is taken, another ``up`` owns the state, a child died."""


def home_dir() -> Path:
    """Where ``up`` keeps its state: ``LINKEDGE_HOME``, else ``.linkedge`` in the current directory."""
    return Path(os.environ.get("LINKEDGE_HOME") or ".linkedge").resolve()


def run(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(settings, home_dir())
    previous = {sig: signal.signal(sig, _on_signal) for sig in _SIGNALS}
    try:
        return stack.run()
    except Stop as stop:
        log.info("stopping on %s", stop)
        return 0
    except (StackError, EmbeddedError) as exc:
        print(f"linkedge up: {exc}", file=sys.stderr, flush=True)
        return 1
    except (
        OSError,
        asyncpg.PostgresError,
    ) as exc:  # a given DATABASE_URL that does not answer, a full disk
        print(f"linkedge up: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


class Stack:
    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.home = home
        self.state_file = home / "up.json"
        self.stores: dict[str, EmbeddedRedis | EmbeddedPostgres] = {}
        self.apps: dict[str, subprocess.Popen[bytes]] = {}
        self.ready = False
        self.claimed = False  # up.json is ours to write and remove

    # -- start -----------------------------------------------------------------------------

    def run(self) -> int:
        self.home.mkdir(parents=True, exist_ok=True)
        self._claim_home()
        ports = self._app_ports()
        env = self._start_stores()
        env["ANALYTICS_URL"] = f"http://127.0.0.1:{ports['ANALYTICS_PORT']}"
        asyncio.run(migrate_postgres(env["DATABASE_URL"]))
        previous = read_env_file(self.run_env)
        key = asyncio.run(ensure_demo(env["DATABASE_URL"], previous.get("LINKEDGE_API_KEY")))
        if (
            not self.settings.visitor_salt_secret
        ):  # kept across runs, so visitor counts stay comparable
            env["VISITOR_SALT_SECRET"] = previous.get(
                "VISITOR_SALT_SECRET"
            ) or secrets.token_urlsafe(32)
        # Written even when given, so a shell that sources run.env can run `linkedge reconcile`.
        env["ANALYTICS_TOKEN"] = (
            self.settings.analytics_token.get()
            or previous.get("ANALYTICS_TOKEN")
            or secrets.token_urlsafe(32)
        )
        edge_url = self.settings.replace(port=ports["PORT"]).base_url
        write_env_file(self.run_env, {"LINKEDGE_URL": edge_url, "LINKEDGE_API_KEY": key, **env})
        child_env = {**os.environ, **env, **{name: str(port) for name, port in ports.items()}}
        child_env.setdefault("CLICK_SPOOL_DIR", str(self.home / "spool"))
        for name in APPS:
            self._start_app(name, child_env)
        self._wait_ready(ports)
        self.ready = True
        self._record()
        self._banner(edge_url, key, env)
        return self._watch()

    @property
    def run_env(self) -> Path:
        return self.home / "run.env"

    def _claim_home(self) -> None:
        """Refuse a second ``up`` on the same state; stop what a SIGKILLed one left running."""
        state = read_json(self.state_file)
        owner = state.get("pid")
        if isinstance(owner, int) and owner != os.getpid() and runs_ours(owner):
            raise StackError(
                f"another `linkedge up` (pid {owner}) is running from {self.home}; stop it first"
            )
        for name, pid in dict(state.get("processes", {})).items():
            if isinstance(pid, int) and runs_ours(pid):
                log.warning(
                    "stopping %s (pid %d) left running by a killed `linkedge up`", name, pid
                )
                procgroup.stop_group(pid, signal.SIGTERM, 10.0)
        self.claimed = True
        self._record()

    def _app_ports(self) -> dict[str, int]:
        """The ports the edge, analytics and the aggregator bind: as configured, 0 meaning a free one."""
        wanted = {
            "PORT": (self.settings.port, self.settings.host),
            "ANALYTICS_PORT": (self.settings.analytics_port, self.settings.metrics_host),
            "AGGREGATOR_METRICS_PORT": (
                self.settings.aggregator_metrics_port,
                self.settings.metrics_host,
            ),
        }
        ports = {}
        for name, (port, host) in wanted.items():
            if port == 0:
                port = free_port()
            elif not port_free(port, host):
                raise StackError(
                    f"port {port} on {host} is taken: set {name} to another port (0: any free one)"
                )
            ports[name] = port
        return ports

    def _start_stores(self) -> dict[str, str]:
        """Start an embedded store for each store URL that is not set; return the URLs in use."""
        saved = read_json(self.home / "ports.json")
        urls = {
            "REDIS_URL": self.settings.redis_url.get(),
            "DATABASE_URL": self.settings.database_url.get(),
            "CLICKHOUSE_URL": self.settings.clickhouse_url.get(),
        }
        if not urls["REDIS_URL"]:
            log.info("starting embedded redis under %s", self.home / "redis")
            store = EmbeddedRedis(self.home / "redis", reuse_port(saved.get("redis")))
            self.stores["redis"] = store
            urls["REDIS_URL"] = store.start().url
        if not urls["DATABASE_URL"]:
            log.info("starting embedded postgres under %s", self.home / "postgres")
            pg = EmbeddedPostgres(self.home / "postgres", reuse_port(saved.get("postgres")))
            self.stores["postgres"] = pg
            urls["DATABASE_URL"] = pg.start().url
        if not urls["CLICKHOUSE_URL"]:
            urls["CLICKHOUSE_URL"] = chdb_url(self.home / "clickhouse")
        write_json(
            self.home / "ports.json", {**saved, **{n: s.port for n, s in self.stores.items()}}
        )
        self._record()
        return urls

    def _start_app(self, name: str, env: dict[str, str]) -> None:
        if name == "edge":
            env = {**env}
            env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(self.home / "prometheus"))
        self.apps[name] = procgroup.spawn(
            [sys.executable, "-m", "linkedge.cli", name], env=env, tied=True
        )
        self._record()

    def _wait_ready(self, ports: dict[str, int]) -> None:
        host = (
            self.settings.host if self.settings.host not in {"0.0.0.0", "::", ""} else "127.0.0.1"
        )
        host = f"[{host}]" if ":" in host else host
        probes = {
            "edge": f"http://{host}:{ports['PORT']}/healthz",
            "aggregator": f"http://127.0.0.1:{ports['AGGREGATOR_METRICS_PORT']}/healthz",
            "analytics": f"http://127.0.0.1:{ports['ANALYTICS_PORT']}/healthz",
        }
        deadline = time.monotonic() + READY_TIMEOUT_S
        while probes:
            self._check_apps()
            probes = {name: url for name, url in probes.items() if not answers(url)}
            if probes and time.monotonic() > deadline:
                raise StackError(
                    f"{', '.join(probes)} did not answer /healthz within {READY_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.2)

    def _banner(self, edge_url: str, key: str, env: dict[str, str]) -> None:
        auth = f'-H "Authorization: Bearer {key}"'
        run_env = (
            os.path.relpath(self.run_env)
            if self.run_env.is_relative_to(Path.cwd())
            else str(self.run_env)
        )
        print(
            f"""
linkedge is up (Ctrl-C stops everything)
  edge       {edge_url}   ({self.settings.workers} worker(s))
  API key    {key}   (account {DEMO_ACCOUNT!r})
  dashboard  {edge_url}/dashboard/   (sign in with the API key above)
  demo link  {edge_url}/{DEMO_CODE} -> {DEMO_TARGET}
  analytics  {env["ANALYTICS_URL"]}
  stores     {_redact(env["REDIS_URL"])}  {_redact(env["DATABASE_URL"])}  {_redact(env["CLICKHOUSE_URL"])}
  all of it  {run_env}

Try:
  curl -sI {edge_url}/{DEMO_CODE}
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{{"url": "https://example.org/", "code": "try-me"}}' {edge_url}/api/v1/links
  curl -sI {edge_url}/try-me
  curl -s {auth} {edge_url}/api/v1/links
  set -a; . {run_env}; set +a; linkedge reconcile
""",
            flush=True,
        )

    def _watch(self) -> int:
        while True:
            self._check_apps()
            time.sleep(0.2)

    def _check_apps(self) -> None:
        for name, proc in self.apps.items():
            code = proc.poll()
            if code is not None:
                raise StackError(
                    f"`linkedge {name}` (pid {proc.pid}) exited with status {code}; stopping the stack "
                    "(its output is above)"
                )

    # -- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process this run started: the apps first (they drain into the stores), then the stores."""
        for proc in self.apps.values():
            if proc.poll() is None:
                procgroup.signal_pid(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, proc in self.apps.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "%s (pid %d) did not stop within %.0fs; killing it",
                    name,
                    proc.pid,
                    STOP_TIMEOUT_S,
                )
                procgroup.signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            procgroup.stop_group(
                proc.pid, signal.SIGKILL, 5.0
            )  # workers or helpers that outlived their leader
        for name in ("postgres", "redis"):
            store = self.stores.get(name)
            if store is not None and getattr(store, "proc", None) is not None:
                store.stop()
                procgroup.stop_group(store.pid, signal.SIGKILL, 5.0)
        self.apps.clear()
        self.stores.clear()
        if self.claimed:
            self.state_file.unlink(missing_ok=True)

    def _record(self) -> None:
        if not self.claimed:
            return
        processes = {name: proc.pid for name, proc in self.apps.items()}
        for name, store in self.stores.items():
            if getattr(store, "proc", None) is not None:
                processes[name] = store.pid
        write_json(
            self.state_file, {"pid": os.getpid(), "ready": self.ready, "processes": processes}
        )


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` with anything but a 5xx."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _redact(url: str) -> str:
    """A URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"
    return url
