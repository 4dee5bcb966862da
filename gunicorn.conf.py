"""Gunicorn serving the edge app: the alternative to Granian (``linkedge edge``), same app and env.

    gunicorn -c gunicorn.conf.py

Gunicorn 24 and later ship an asyncio ASGI worker (``worker_class = "asgi"``), so no uvicorn is
needed. The app is a factory: ``wsgi_app = "edge.app:create_app()"``. Gunicorn parses the part
after the colon as a call expression and calls it once in each worker after the fork (we do not
preload), so each worker reads its settings and opens its own Redis and Postgres pools in the
lifespan. The same string works on the command line: ``gunicorn -c gunicorn.conf.py
'edge.app:create_app()'``; a positional app there overrides ``wsgi_app``.

Configuration comes from the variables every linkedge process reads (linkedge/settings.py):
HOST, PORT, EDGE_WORKERS (0: the CPU count), PROMETHEUS_MULTIPROC_DIR, LOG_LEVEL. Any gunicorn
setting can still be overridden per run with GUNICORN_CMD_ARGS (e.g. "--graceful-timeout 40"),
which gunicorn applies after this file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from linkedge.settings import Settings

_settings = Settings.from_env()

wsgi_app = "edge.app:create_app()"
worker_class = "asgi"
# uvloop is a dependency of linkedge; "auto" would silently fall back to asyncio without it.
asgi_loop = "uvloop"
# The edge opens its pools in the lifespan: a startup failure must stop gunicorn, not serve 500s.
asgi_lifespan = "on"

bind = [
    f"[{_settings.host}]:{_settings.port}"
    if ":" in _settings.host
    else f"{_settings.host}:{_settings.port}"
]
workers = _settings.workers
# A redirect is a few microseconds of work: the Kubernetes Service or the proxy in front keeps
# connections open, so keep-alive a little longer than the usual 2 s of a proxy's idle pool.
keepalive = 5
# SIGTERM: stop accepting, finish requests in flight, run the lifespan shutdown (which flushes
# buffered clicks to Redis), then exit. Workers still alive after this are killed, so it must stay
# below the pod's terminationGracePeriodSeconds (helm/linkedge: edge.terminationGracePeriodSeconds).
graceful_timeout = 25
# A worker silent for this long is killed and replaced (the ASGI worker heartbeats from its loop).
timeout = 30
loglevel = _settings.log_level.lower()
accesslog = None  # no per-request log line on the redirect path
errorlog = "-"
# gunicorn 25.1+ opens a control socket under $HOME by default: two servers on one machine would
# share it, and a read-only root filesystem has no $HOME to write. linkedge needs no such control.
control_socket_disable = True

# Prometheus multiprocess mode: every worker writes its samples to files in this directory, the
# /metrics endpoint of any worker merges them. It must be set before a worker imports
# prometheus_client, hence here, in the master, which the workers inherit from.
_multiproc_dir = _settings.prometheus_multiproc_dir or os.path.join(
    tempfile.gettempdir(), f"linkedge-prometheus-{_settings.port}"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _multiproc_dir


def on_starting(server: Any) -> None:
    """Wipe the metric files of a previous run: stale files would add old counts to new ones."""
    path = Path(_multiproc_dir)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (e.g. clicks pending) so they stop being summed."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _multiproc_dir)
