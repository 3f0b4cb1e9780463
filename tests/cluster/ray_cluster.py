"""A throwaway Ray cluster on this machine (ray.cluster_utils.Cluster): a head without GPUs and worker nodes
each declaring one GPU (the tiny model runs on the CPU), and this test process connected to it as a driver,
so tests can ask fluxedit's actors where they run and what they did. With `client_port`, the head also runs the Ray
Client server there (`ray://127.0.0.1:PORT`, what `--workers ray://HEAD:PORT` connects to)."""

from __future__ import annotations

import socket
import time

NAMESPACE = "fluxedit"  # worker/ray_pool.py names its actors there


class TestCluster:
    __test__ = False  # not a test class

    def __init__(self, worker_nodes: int, client_port: int | None = None):
        import ray
        from ray.cluster_utils import Cluster

        self.ray = ray
        self.client_port = client_port
        head = {"num_cpus": 0, "num_gpus": 0} | ({"ray_client_server_port": client_port} if client_port else {})
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        self.nodes = [self.add_worker_node(wait=False) for _ in range(worker_nodes)]
        self.cluster.wait_for_nodes()
        self.cluster.connect(namespace=NAMESPACE)
        if client_port:
            self._wait_for_client_server()

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def client_address(self) -> str:
        """The head's Ray Client address, when it was started with a client port."""
        return f"ray://127.0.0.1:{self.client_port}"

    def _wait_for_client_server(self, timeout: float = 30) -> None:
        """The client server is a process of its own that the head starts: wait until it listens."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.client_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def add_worker_node(self, wait: bool = True):
        node = self.cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=80 * 1024**2)
        if wait:
            self.cluster.wait_for_nodes()
        self.nodes = [*getattr(self, "nodes", []), node]
        return node

    def remove_worker_node(self, node_id: str) -> None:
        node = next(node for node in self.nodes if node.node_id == node_id)
        self.cluster.remove_node(node)  # its raylet and everything on it end
        self.nodes.remove(node)

    def actors(self, stats: bool = True) -> dict[str, dict]:
        """fluxedit's placed actors by name: where each runs (node_id, pid) and, with `stats`, what it did (runs,
        lora_loads; a busy actor answers that after its job)."""
        found = {}
        for entry in self.ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] != NAMESPACE or not entry["name"].startswith("fluxedit-"):
                continue
            actor = self.ray.get_actor(entry["name"], namespace=NAMESPACE)
            try:
                where = self.ray.get(actor.where.remote(), timeout=3)
                if stats:
                    where |= self.ray.get(actor.stats.options(concurrency_group="stats").remote(), timeout=60)
            except (self.ray.exceptions.GetTimeoutError, self.ray.exceptions.RayActorError):
                continue  # not placed yet (pending), or just gone
            found[entry["name"]] = where
        return found

    def wait_for_actors(self, count: int, timeout: float = 60) -> dict[str, dict]:
        """fluxedit's placed actors, once there are `count` of them (or what there is at the timeout)."""
        deadline = time.monotonic() + timeout
        while len(actors := self.actors()) != count and time.monotonic() < deadline:
            time.sleep(0.5)
        return actors

    def shutdown(self) -> None:
        self.ray.shutdown()
        self.cluster.shutdown()
