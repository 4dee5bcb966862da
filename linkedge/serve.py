"""``linkedge edge``: the edge app under Granian, with the settings turned into Granian flags.

The process wipes ``PROMETHEUS_MULTIPROC_DIR`` (samples of an earlier run would add up with this
one's), then replaces itself with the Granian server (``exec``), so the pid a supervisor holds is
Granian's: SIGTERM or SIGINT reaches it directly, and it stops its workers gracefully (each runs
its lifespan shutdown, which flushes buffered clicks), killing any that take longer than
``KILL_TIMEOUT_S``. Workers that die are respawned.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from linkedge.settings import Settings

KILL_TIMEOUT_S = 20  # below the harness's and the pod's grace periods (helm: 30 s)
BACKPRESSURE = 512  # requests in flight per worker before Granian stops accepting more


def multiproc_dir(settings: Settings) -> Path:
    if settings.prometheus_multiproc_dir:
        return Path(settings.prometheus_multiproc_dir)
    return Path(tempfile.gettempdir()) / f"linkedge-prometheus-edge-{settings.port}"


def logging_config(level: str) -> dict[str, object]:
    """Granian's dictConfig, with its loggers and ours in linkedge's JSON line format."""
    json_formatter = {"()": "linkedge.logs.JsonFormatter"}
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": json_formatter},
        "handlers": {"console": handler, "access": handler},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["console"], "level": level.upper()},
    }


def granian_argv(settings: Settings, log_config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "edge.app:create_app",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--backpressure",
        str(BACKPRESSURE),
        "--respawn-failed-workers",
        "--workers-kill-timeout",
        str(KILL_TIMEOUT_S),
        "--log-level",
        settings.log_level.lower(),
        "--log-config",
        str(log_config),
        "--no-access-log",
    ]


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Exec Granian; returns only if that fails."""
    settings.require("redis_url", "database_url")
    prom = multiproc_dir(settings)
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir(parents=True)
    # Next to the samples (the collector reads only *.db), so one directory holds the run's files.
    log_config = prom / "granian-logging.json"
    log_config.write_text(json.dumps(logging_config(settings.log_level)))
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(prom.resolve()))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, granian_argv(settings, log_config), env)
    return 1  # not reached: execve either replaces this process or raises OSError
