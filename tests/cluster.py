"""A two-node Ray cluster on this machine, for tests: a head (``ray start --head``) and a worker node (``ray start
--address ...``) with its own CPUs and a custom ``worker_node`` resource, each a separate ``ray start --block`` in its
own process group with every port chosen free and its own temp dir, so it never meets another Ray on the machine.

Every ``ray start`` (and the driver, for the context's duration) runs with ``RAY_AUTH_MODE=disabled``: a Ray that
finds the variable unset turns token authentication on for a new cluster, and a second node or a driver without the
token cannot join it (the last wave's fixture failed on that). Nothing here leaves loopback.

Teardown stops only these nodes: every process each ``ray start`` started (found as its descendants, plus any process
whose command line names this cluster's temp dir) is killed by pid; never ``ray stop``, which would stop every Ray on
the machine. :meth:`TwoNodeCluster.kill_worker_raylet` loses the worker node as a crashed machine would.

    with two_node_cluster() as cluster:
        ray.init(address=cluster.address)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipelines.server.local import free_port

WORKER_RESOURCE = "worker_node"
"""A custom resource only the worker node has (``{"worker_node": 1}``): pins work there when a test needs to."""


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path
    pids: set[int] = field(default_factory=set)

    def refresh(self) -> None:
        """Remember every process this node has started so far (teardown kills them even if the tree breaks)."""
        try:
            self.pids |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass


@dataclass
class TwoNodeCluster:
    address: str
    temp_dir: Path
    head: Node
    worker: Node
    dashboard: str = ""  # Ray's dashboard on the head: the state API's address
    worker_node_id: str | None = None

    def processes(self, node: Node) -> list[psutil.Process]:
        node.refresh()
        out = []
        for pid in node.pids | {node.proc.pid}:
            with contextlib.suppress(psutil.NoSuchProcess):
                out.append(psutil.Process(pid))
        return out

    def kill_worker_raylet(self) -> int:
        """SIGKILL the worker node's raylet (the node is lost: its workers and replicas die with it); its pid."""
        (raylet,) = [p for p in self.processes(self.worker) if p.name() == "raylet"]
        os.kill(raylet.pid, signal.SIGKILL)
        return raylet.pid

    def stop(self) -> None:
        """Kill this cluster's processes only: the two ``ray start`` process groups, every descendant seen, and any
        process whose command line names this cluster's temp dir."""
        for node in (self.worker, self.head):
            node.refresh()
        mine = {p.pid for p in psutil.process_iter(["cmdline"])
                if any(str(self.temp_dir) in part for part in (p.info["cmdline"] or []))}
        for node in (self.worker, self.head):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.proc.pid, signal.SIGKILL)
        for pid in self.worker.pids | self.head.pids | mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for node in (self.worker, self.head):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(10)


def _start(args: list[str], log: Path, env: dict[str, str]) -> Node:
    out = open(log, "wb")
    proc = subprocess.Popen([_ray_bin(), "start", "--block", "--disable-usage-stats", *args], stdout=out,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Node(proc=proc, log=log)


def _node_ports() -> list[str]:
    """Every port a node opens, chosen free: two nodes on one IP must not share any."""
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]


AUTH_ENV = {"RAY_AUTH_MODE": "disabled"}
"""What every process of the cluster, its driver included, needs in its environment."""


def _wait_nodes(address: str, n: int, nodes: list[Node], env: dict[str, str], timeout: float = 120) -> None:
    """Until the cluster at ``address`` has ``n`` alive nodes (asked from a throwaway process: the test's own
    driver connects only once the cluster is up)."""
    code = ("import ray, json; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps(sum(1 for x in ray.nodes() if x['Alive'])))" % address)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for node in nodes:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {node.proc.returncode}: {node.log.read_text()[-2000:]}")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        if out.returncode == 0 and out.stdout.strip() and int(out.stdout.strip().splitlines()[-1]) >= n:
            return
        time.sleep(1)
    raise TimeoutError(f"the cluster at {address} did not reach {n} nodes in {timeout:.0f} s")


@contextlib.contextmanager
def _driver_env(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment (the driver's ``ray.init`` reads them), as they were afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def two_node_cluster(head_cpus: int = 1, worker_cpus: int = 2,
                     object_store_bytes: int = 100 * 2**20) -> Iterator[TwoNodeCluster]:
    """Start the head and the worker node, wait until both are alive, yield, and always stop both."""
    temp_dir = Path(tempfile.mkdtemp(prefix="pbray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **AUTH_ENV}
    common = ["--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", f"--object-store-memory={object_store_bytes}"]
    dashboard_port = free_port()  # Ray's state API (list_actors: which node holds which replica) is served there
    head = _start(["--head", f"--port={port}", f"--num-cpus={head_cpus}", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                   f"--ray-client-server-port={free_port()}", *common, *_node_ports()], temp_dir.with_suffix(".head.log"),
                  env)
    worker = None
    cluster = None
    try:
        _wait_nodes(address, 1, [head], env)
        worker = _start([f"--address={address}", f"--num-cpus={worker_cpus}",
                         f"--resources={json.dumps({WORKER_RESOURCE: 1})}", *common, *_node_ports()],
                        temp_dir.with_suffix(".worker.log"), env)
        cluster = TwoNodeCluster(address=address, temp_dir=temp_dir, head=head, worker=worker,
                                 dashboard=f"http://127.0.0.1:{dashboard_port}")
        _wait_nodes(address, 2, [head, worker], env)
        head.refresh(), worker.refresh()
        with _driver_env(AUTH_ENV):
            yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        else:
            for node in (worker, head):
                if node is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(node.proc.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
