"""A worker node lost: the Serve app (fake engines) deployed across a two-node Ray cluster on this machine
(tests/cluster.py), two replicas each of the diffusion, LLM and planner deployments spread over both nodes, so one
campaign's intents are searched by planner workers on both nodes. Mid-campaign the worker node's raylet is killed; the
replicas it held are replaced on the head (the planner's, one per node, waits for a node), the intents its planner
worker held are retried on the head's, and the campaign ends `done` with every intent once in results and every
candidate once in lineage, without a resubmit. The placement before and after comes from Ray's state API. Run alone (`scripts/test -m cluster`): the test's driver joins this cluster, not a local Ray."""

from __future__ import annotations

import httpx
import pytest

from pipelines.server.local import free_port
from pipelines.store import CampaignStore
from tests.cluster import TwoNodeCluster, two_node_cluster
from tests.http_helpers import intents
from tests.store_checks import assert_each_intent_once
from tests.test_faults_real import campaign_through_a_fault
from tests.test_serve_fake import FAKE_ENGINES, SEARCH, write_fake_preset

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.serve]

APP = "cluster"
N = 12
TWO = {"min_replicas": 2, "max_replicas": 2, "initial_replicas": 2}
HEALTH = {"health_check_period_s": 1, "health_check_timeout_s": 5, "graceful_shutdown_timeout_s": 5}


@pytest.fixture(scope="module")
def cluster_app(tmp_path_factory):
    import ray
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    if ray.is_initialized():
        pytest.fail("this module's driver joins its own two-node cluster: run it in its own pytest process "
                    "(scripts/test -m cluster)")
    d = tmp_path_factory.mktemp("cluster")
    state, store = d / "state", d / "store"
    state.mkdir()
    (state / "render_delay_s").write_text("0.3")
    (state / "chat_delay_s").write_text("0.05")
    with two_node_cluster(head_cpus=1, worker_cpus=2) as cluster:
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            # the proxy only on the head: both nodes share 127.0.0.1, so a second proxy could not bind the port
            port = free_port()
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
            config = AppConfig(preset=str(write_fake_preset(d, state)), store_root=str(store), engines=FAKE_ENGINES,
                           planner_workers=True)
            deployments = {
                # half a CPU each: both fit on the head (1 CPU) once the worker node is gone
                "diffusion": {**HEALTH, "autoscaling_config": TWO, "ray_actor_options": {"num_cpus": 0.5},
                              "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05}},
                "llm": {**HEALTH, "autoscaling_config": TWO, "ray_actor_options": {"num_cpus": 0}},
                # one per node: Serve packs zero-CPU replicas onto one node unless told to spread them
                "planner": {**HEALTH, "autoscaling_config": TWO, "ray_actor_options": {"num_cpus": 0},
                            "max_replicas_per_node": 1},
                "ingress": {"graceful_shutdown_timeout_s": 5, "ray_actor_options": {"num_cpus": 0}},
            }
            serve.run(compose_app(config, deployments), name=APP, route_prefix=f"/{APP}")
            yield cluster, f"http://127.0.0.1:{port}/{APP}", store
        finally:
            serve.shutdown()
            ray.shutdown()


def placement(cluster: TwoNodeCluster) -> dict[str, list[str]]:
    """Deployment -> the node ('head' / 'worker') of each alive replica, from Ray's state API."""
    import ray
    from ray.util.state import list_actors

    worker_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("worker_node")}
    out: dict[str, list[str]] = {}
    for a in list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=1000):
        if a.class_name.startswith(f"ServeReplica:{APP}:"):
            name = a.class_name.rsplit(":", 1)[1]
            out.setdefault(name, []).append("worker" if a.node_id in worker_ids else "head")
    return {k: sorted(v) for k, v in sorted(out.items())}


def test_a_lost_worker_node_costs_no_intent(cluster_app):
    cluster, url, store_root = cluster_app
    before = placement(cluster)
    print(f"\nreplicas before: {before}")
    assert before["planner"] == ["head", "worker"], f"planner workers not on both nodes: {before}"
    assert any("worker" in nodes for nodes in before.values()), f"nothing placed on the worker node: {before}"
    assert any("head" in nodes for nodes in before.values()), before
    with httpx.Client(base_url=url, timeout=30) as client:
        st, done_at_kill, recovered, total = campaign_through_a_fault(
            client, "lost-node", {"intents": intents(N), "search": SEARCH, "concurrency": 3},
            cluster.kill_worker_raylet, min_done=2, timeout_s=480)
    after = placement(cluster)
    print(f"worker node lost with {done_at_kill}/{N} done: next intent {recovered:.1f} s after, campaign "
          f"{st.state.value} {total:.1f} s after; replicas after: {after}")
    assert st.state == "done" and st.intents_failed == 0 and st.intents_done == N, st
    assert after["diffusion"] == ["head", "head"] and after["llm"] == ["head", "head"], after
    assert after["planner"] == ["head"], after  # the second waits for a node: one per node
    assert_each_intent_once(CampaignStore(str(store_root / "lost-node")), [f"i{k}" for k in range(N)])
