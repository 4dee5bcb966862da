"""Clicks lost: counted by reason, logged once per episode.

A click is dropped only when it cannot be kept: it could not be encoded (``invalid``), memory and
spool were both full (``spool_full``), the spool could not be written (``spool_error``) or read
back (``spool_corrupt``), or the open batch could not be taken at close (``error``). Each one is
counted in ``linkedge_clicks_dropped_total{reason}``. An episode of drops logs one line when it
starts and one with its total when it ends, which is when Redis takes a flush again; a worker
dropping thousands of clicks a second during an outage does not log thousands of lines.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.metrics import CLICKS_DROPPED

log = logging.getLogger("edge.clicks")


class Drops:
    """The worker's dropped clicks: the metric and the episode's log lines."""

    def __init__(self, spool_dir: str | Path) -> None:
        self._spool_dir = str(spool_dir)
        self._episode = 0  # clicks dropped in the current episode; 0 when none

    def count(self, clicks: int, reason: str) -> None:
        """Count ``clicks`` dropped for ``reason``; the first drop of an episode is logged."""
        CLICKS_DROPPED.labels(reason=reason).inc(clicks)
        if not self._episode:
            log.warning(
                "dropping clicks (memory and spool full, or unreadable)",
                extra={"reason": reason, "spool_dir": self._spool_dir},
            )
        self._episode += clicks

    def end_episode(self) -> None:
        """Redis took a flush: log the episode's total, if there was one."""
        if self._episode:
            log.warning("clicks dropped in this episode", extra={"clicks": self._episode})
            self._episode = 0
