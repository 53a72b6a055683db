"""A throwaway Redis Cluster: six Debian ``redis-server`` processes, 3 masters + 3 replicas.

Made the way an operator makes one (``redis-cli --cluster create ... --cluster-replicas 1``),
on free ports, in a temporary directory that holds only each node's ``nodes.conf``. A short
``cluster-node-timeout`` keeps a failover test quick: a killed master's replica takes over
within a few seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.support.services import free_port, installed_binary, redis_answers, wait_for

NODE_TIMEOUT_MS = 1000
# Creating the cluster, or a failover, on a loaded machine: generous, and waited on as a
# condition (never slept).
SETTLE_S = 60.0


def _info(port: int, section: str) -> dict[str, str]:
    """``CLUSTER INFO`` (section "cluster") or ``INFO <section>`` of one node as a dict;
    {} when the node does not answer."""
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        command = ("CLUSTER", "INFO") if section == "cluster" else ("INFO", section)
        raw = client.execute_command(*command)
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parses INFO itself
        return {key: str(value) for key, value in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


@dataclass
class Node:
    port: int
    directory: Path
    bus_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    installed_binary("redis-server"),
                    "--port", str(self.port),
                    "--cluster-port", str(self.bus_port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.directory),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def wait_answering(self) -> None:
        """Return once the node answers; a node that exited is started again on other
        ports (a port taken between choosing and binding it). Its log is in the error."""
        for _ in range(3):
            if self.process is None:
                self.start()
            assert self.process is not None
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                if redis_answers(f"redis://127.0.0.1:{self.port}"):
                    return
                time.sleep(0.05)
            self.kill()
            self.port, self.bus_port = free_port(), free_port()
        log = self.log.read_text(errors="replace")[-2000:]
        raise TimeoutError(f"a cluster node did not come up; its log ends:\n{log}")

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a word, as a crashed host does."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def role(self) -> str:
        return _info(self.port, "replication").get("role", "")


@dataclass
class RedisCluster:
    nodes: list[Node]
    directory: Path

    @property
    def url(self) -> str:
        """The ``COINLINK_REDIS_URL`` that names this cluster (one seed node suffices)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def masters(self) -> list[Node]:
        return [node for node in self.nodes if node.process and node.role() == "master"]

    def master_of(self, key: str) -> Node:
        """The node that serves ``key``'s slot now."""
        slot = key_slot(key.encode())
        client = redis.Redis(port=self.masters()[0].port, socket_timeout=2)
        try:
            ranges = client.execute_command("CLUSTER SLOTS")
        finally:
            client.close()
        for start, end, master, *_ in ranges:
            if start <= slot <= end:
                port = int(master[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def wait_healthy(self, timeout_s: float = SETTLE_S) -> None:
        """Every running node says ``cluster_state:ok``, knows every running node, and
        every replica is in sync with its master."""
        running = [node for node in self.nodes if node.process is not None]

        def healthy() -> bool:
            for node in running:
                cluster = _info(node.port, "cluster")
                if cluster.get("cluster_state") != "ok":
                    return False
                if int(cluster.get("cluster_known_nodes", 0)) < len(running):
                    return False
                replication = _info(node.port, "replication")
                role = replication.get("role")
                if role == "slave" and replication.get("master_link_status") != "up":
                    return False
            return True

        wait_for(healthy, timeout_s, "a healthy Redis Cluster")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def running_cluster() -> Iterator[RedisCluster]:
    """A fresh cluster for the ``with`` block, stopped and removed after it."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def start_cluster() -> RedisCluster:
    directory = Path(tempfile.mkdtemp(prefix="coinlink-redis-cluster-"))
    nodes = [Node(free_port(), directory / str(i)) for i in range(6)]
    made = RedisCluster(nodes, directory)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_answering()
        subprocess.run(
            [
                installed_binary("redis-cli"),
                "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas", "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=SETTLE_S,
        )  # fmt: skip
        made.wait_healthy()
    except BaseException:
        made.stop()
        raise
    return made


def wait_replicated(master: Node) -> None:
    """Return once ``master``'s replica has every write the master has (replication is
    asynchronous: what a test needs to survive a failover must have arrived)."""

    def caught_up() -> bool:
        client = redis.Redis(port=master.port, socket_timeout=1)
        try:
            info = client.info("replication")
        finally:
            client.close()
        offsets = [int(info[f"slave{i}"]["offset"]) for i in range(int(info["connected_slaves"]))]
        return bool(offsets) and min(offsets) >= int(info["master_repl_offset"])

    wait_for(caught_up, SETTLE_S, "the replica to catch up")


def wait_promoted(cluster: RedisCluster, killed: Node) -> None:
    """Return once ``killed``'s replica has taken over and the cluster is whole again."""
    wait_for(lambda: len(cluster.masters()) == 3, SETTLE_S, "a replica's promotion")
    cluster.wait_healthy()
