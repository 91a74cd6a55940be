"""Faults without a human: kill -9 of the diffusion replica, of the LLM replica and of the ingress while a campaign of
8 intents runs on the Serve app (fake engines, slowed so the kill lands mid-campaign). Each time the campaign ends
`done` with every intent exactly once in results and lineage and none failed, with no resubmit: calls to a dead
replica are retried on its replacement, and a replacement ingress resumes the campaigns in the store's registry."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from pipelines.store import CampaignStore
from pipelines.wire import CampaignStatus
from tests.http_helpers import intents
from tests.store_checks import assert_each_intent_once
from tests.test_serve_fake import FAKE_ENGINES, FAST_HEALTH, SEARCH, write_fake_preset

pytestmark = [pytest.mark.serve, pytest.mark.slow]

APP = "fault"


@pytest.fixture(scope="module")
def fault_app(ray_cluster, tmp_path_factory):
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    d = tmp_path_factory.mktemp("fault")
    state, store = d / "state", d / "store"
    state.mkdir()
    (state / "render_delay_s").write_text("0.2")
    (state / "chat_delay_s").write_text("0.05")
    config = AppConfig(preset=str(write_fake_preset(d, state)), store_root=str(store), engines=FAKE_ENGINES)
    deployments = {"diffusion": {**FAST_HEALTH, "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05}},
                   "llm": FAST_HEALTH, "ingress": {"graceful_shutdown_timeout_s": 5}}
    serve.run(compose_app(config, deployments), name=APP, route_prefix=f"/{APP}")
    yield ray_cluster["url"] + f"/{APP}", store
    serve.delete(APP)


def kill_replica(deployment: str) -> int:
    """SIGKILL the process of the deployment's live replica (as the OOM killer or a node loss would); its pid."""
    from ray.util.state import list_actors

    alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
             if a.class_name == f"ServeReplica:{APP}:{deployment}"]
    assert len(alive) == 1, [a.class_name for a in alive]
    os.kill(alive[0].pid, signal.SIGKILL)
    return alive[0].pid


def poll_status(client: httpx.Client, cid: str) -> CampaignStatus | None:
    """The status, or None while the ingress cannot answer (it is being replaced)."""
    try:
        resp = client.get(f"/v1/campaigns/{cid}")
    except httpx.HTTPError:
        return None
    return CampaignStatus.model_validate_json(resp.content) if resp.status_code == 200 else None


@pytest.mark.parametrize("target", ["diffusion", "llm", "ingress"])
def test_a_killed_replica_costs_no_intent_and_needs_no_resubmit(fault_app, target):
    url, store_root = fault_app
    cid = f"kill-{target}"
    with httpx.Client(base_url=url, timeout=30) as client:
        resp = client.post("/v1/campaigns", json={"name": cid, "intents": intents(8), "search": SEARCH,
                                                  "concurrency": 2})
        assert resp.status_code == 202, resp.text
        deadline = time.time() + 120
        while (st := poll_status(client, cid)) is None or st.intents_done < 1:
            assert time.time() < deadline, "no intent finished before the kill"
            time.sleep(0.2)
        assert st.intents_done < 8, "the campaign finished before the kill: slow the fake engines down"
        kill_replica(target)
        deadline = time.time() + 420
        while (st := poll_status(client, cid)) is None or st.state == "running":
            assert time.time() < deadline, f"campaign still running: {st}"
            time.sleep(1)
    assert st.state == "done" and st.intents_failed == 0 and st.intents_done == 8, st
    assert_each_intent_once(CampaignStore(str(store_root / cid)), [f"i{k}" for k in range(8)])
