"""The two-node cluster fixture (tests/cluster.py) without a cluster: what it hands each ``ray start`` and its driver.
The fixture itself runs in the ``cluster`` tier (tests/test_cluster.py); this checks, in the default run, the one thing
the last wave's fixture got wrong: a Ray left to itself turns token authentication on, so a node or driver started
without ``RAY_AUTH_MODE=disabled`` cannot join."""

from __future__ import annotations

import os
import subprocess

import tests.cluster as cluster_module


class Recorded:
    """Stands in for ``subprocess``: each ``Popen`` (a ``ray start``) becomes a harmless ``sleep`` in its own session
    (teardown kills its group, never this process's), and each ``run`` (the wait for nodes) answers "2 alive"."""

    def __init__(self):
        self.started: list[tuple[list[str], dict[str, str]]] = []
        self.waited: list[dict[str, str]] = []

    def Popen(self, args, *, env, **kwargs):  # noqa: N802 - subprocess's name
        self.started.append((list(args), dict(env)))
        return subprocess.Popen(["sleep", "60"], start_new_session=True, stdout=subprocess.DEVNULL)

    def run(self, args, *, env=None, **kwargs):
        self.waited.append(dict(env or os.environ))
        return subprocess.CompletedProcess(args, 0, stdout="2\n", stderr="")

    def __getattr__(self, name):
        return getattr(subprocess, name)


def test_every_ray_start_and_the_driver_run_with_auth_disabled(monkeypatch):
    recorded = Recorded()
    monkeypatch.setattr(cluster_module, "subprocess", recorded)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with cluster_module.two_node_cluster() as cluster:
        assert os.environ.get("RAY_AUTH_MODE") == "disabled"  # the driver's ray.init(address=...) reads it
        assert cluster.address.startswith("127.0.0.1:")
    assert "RAY_AUTH_MODE" not in os.environ  # put back as it was
    assert [args[1:3] for args, _ in recorded.started] == [["start", "--block"], ["start", "--block"]]
    assert all(env.get("RAY_AUTH_MODE") == "disabled" for _, env in recorded.started)
    assert recorded.waited and all(env.get("RAY_AUTH_MODE") == "disabled" for env in recorded.waited)
