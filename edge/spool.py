"""The local spool: click batches that could not reach Redis and no longer fit in memory.

A batch is spooled exactly as it was built, flush id and shard included, so replaying it later is
the same idempotent script call as the first attempt: a batch that did reach Redis before its
reply was lost replays as a no-op.

Files live in ``CLICK_SPOOL_DIR``; their total size is bounded by ``CLICK_SPOOL_MAX_BYTES``. Each
worker appends to its own file (``clicks-<pid>-<token>.spool``) and holds an exclusive ``flock``
on it while it has it open; every write is fsync'd. A file is replayed by whoever can take its lock
(its writer has released it, or died), after claiming it with an atomic rename to
``replay-<pid>-<token>.spool``; a replayer that dies leaves the claimed file behind, and the next
worker takes it over the same way. One line per batch::

    <events> <json {"f": flush id, "s": shard, "c": {counter field: n}, "e": [event, ...]}>\\n

The leading event count lets a torn last line (a crash in the middle of a write) still be counted
as dropped clicks.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

from linkedge.events import (
    FLUSH_COUNTERS_PREFIX as FLUSH_FIELD,
)
from linkedge.events import (
    counter_items,
    join_counters,
    join_entry,
    split_entry,
)

SUFFIX = ".spool"


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """One flush: what the script applies on one shard, at most once per ``flush_id``.

    ``counters`` are ``events.join_counters`` lines, ``entry`` the ``clicks`` events as one stream
    entry (``events.join_entry``): the script's arguments as they are sent, built once.
    """

    flush_id: str
    shard: int
    counters: bytes
    entry: bytes
    clicks: int

    @property
    def size(self) -> int:
        """Bytes the batch holds in memory: its counters and its entry (the memory bound's unit)."""
        return len(self.counters) + len(self.entry)

    @classmethod
    def of(cls, flush_id: str, shard: int, counts: dict[str, int], events: list[bytes]) -> Batch:
        """The batch of ``events`` counted in ``counts``."""
        return cls(flush_id, shard, join_counters(counts).encode(), join_entry(events), len(events))

    def counts(self) -> dict[str, int]:
        """``counters`` as a dict (a batch never names a field twice)."""
        return {
            field.decode(): int(n) for field, n in counter_items([(FLUSH_FIELD, self.counters)])
        }

    def to_line(self) -> bytes:
        body = orjson.dumps(
            {
                "f": self.flush_id,
                "s": self.shard,
                "c": self.counts(),
                "e": [event.decode() for event in split_entry(self.entry)],
            }
        )
        return b"%d %s\n" % (self.clicks, body)

    @classmethod
    def from_line(cls, line: bytes) -> Batch:
        _, _, body = line.partition(b" ")
        data = orjson.loads(body)
        return cls.of(
            flush_id=str(data["f"]),
            shard=int(data["s"]),
            counts={str(k): int(v) for k, v in data["c"].items()},
            events=[str(event).encode() for event in data["e"]],
        )


class CorruptLine(ValueError):
    """A spool line that is not a whole batch (torn by a crash); ``events`` clicks are lost."""

    def __init__(self, events: int) -> None:
        super().__init__(f"unreadable spool line of {events} clicks")
        self.events = events


def _line_events(line: bytes) -> int:
    head = line.partition(b" ")[0]
    return int(head) if head.isdigit() else 1


class Claimed:
    """A spool file this worker has locked and renamed; read it, then ``finish`` or ``release``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._file = os.fdopen(fd, "rb")

    def batches(self) -> Iterator[Batch | CorruptLine]:
        """The file's batches in order; a line that cannot be read yields ``CorruptLine``."""
        for line in self._file:
            if not line.endswith(b"\n"):
                yield CorruptLine(_line_events(line))
                continue
            try:
                yield Batch.from_line(line)
            except (ValueError, KeyError, TypeError, AttributeError):
                yield CorruptLine(_line_events(line))

    def finish(self) -> None:
        """Every batch is in Redis: delete the file, then drop the lock."""
        self.path.unlink(missing_ok=True)
        self._file.close()

    def release(self) -> None:
        """Give the file up unfinished (it stays, claimed name and all, for a later replay)."""
        self._file.close()


class Spool:
    """This worker's spool file, and the door to every worker's spool files."""

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._fd: int | None = None

    def size(self) -> int:
        """Bytes in every spool file of the directory (all workers)."""
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(SUFFIX):
                        try:
                            total += entry.stat().st_size
                        except FileNotFoundError:
                            pass
        except FileNotFoundError:
            pass
        return total

    def has_files(self) -> bool:
        try:
            with os.scandir(self.directory) as entries:
                return any(entry.name.endswith(SUFFIX) for entry in entries)
        except FileNotFoundError:
            return False

    def write(self, batches: list[Batch]) -> int:
        """Append as many of ``batches`` as fit under the size bound, fsync; return how many.

        Raises ``OSError`` when the file cannot be written; nothing is then counted as written.
        """
        room = self.max_bytes - self.size()
        lines: list[bytes] = []
        for batch in batches:
            line = batch.to_line()
            if len(line) > room:
                break
            room -= len(line)
            lines.append(line)
        if not lines:
            return 0
        fd = self._own_file()
        data = memoryview(b"".join(lines))
        while data:
            written = os.write(fd, data)
            data = data[written:]
        os.fsync(fd)
        return len(lines)

    def _own_file(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"clicks-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            _fsync_dir(self.directory)
            self._fd = fd
        return self._fd

    def release(self) -> None:
        """Close this worker's own file so that it can be claimed and replayed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def claim(self) -> Claimed | None:
        """Lock and rename one spool file nobody else holds; ``None`` when there is none."""
        try:
            names = sorted(p.name for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except FileNotFoundError:
            return None
        for name in names:
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer, or another replayer, is alive
                os.close(fd)
                continue
            claimed = self.directory / f"replay-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
            try:
                # Locked, but it may have been replayed and deleted between our open and our lock.
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    raise FileNotFoundError(path)
                os.rename(path, claimed)
            except FileNotFoundError:
                os.close(fd)
                continue
            return Claimed(claimed, fd)
        return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
