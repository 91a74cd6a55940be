"""The real Serve app on a local Ray (2 CPUs) with the real engines on the tiny models: HTTP campaigns, batching, 4xx,
cancel/resume, and a killed vLLM engine core that Serve's health check replaces. The fast tier with fake engines is
tests/test_serve_fake.py."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from agents.config import SearchConfig
from agents.messages import ChatMessage, ChatRequest, RenderRequest
from pipelines.records import IntentOutcome, LineageRecord
from pipelines.wire import CampaignAccepted, CampaignStatus
from tests.http_helpers import intents, outcomes, status, wait_done

pytestmark = [pytest.mark.serve, pytest.mark.engines, pytest.mark.slow]

SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "max_images": 12, "steps": 2}








def read_lineage(path) -> list[LineageRecord]:
    return [LineageRecord.model_validate_json(x) for x in path.read_text().splitlines()]


def test_http_campaign_completes_with_lineage(serve_app):
    with httpx.Client(base_url=serve_app["url"], timeout=60) as client:
        resp = client.post("/v1/campaigns", json={"name": "http-demo", "intents": intents(3), "search": SEARCH})
        assert resp.status_code == 202, resp.text
        cid = CampaignAccepted.model_validate_json(resp.content).id
        st = wait_done(client, cid)
        assert st.state == "done" and st.intents_done == 3, st
        results = outcomes(client.get(f"/v1/campaigns/{cid}/results"))
        assert [o.intent_id for o in results] == ["i0", "i1", "i2"]
        img = client.get(f"/v1/campaigns/{cid}/images/{results[0].search.best_image.split('/')[1]}")
        assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"
    campaign_dir = serve_app["store"] / cid
    lineage = read_lineage(campaign_dir / "lineage.jsonl")
    planned = SearchConfig(**SEARCH).planned_images()
    for o in results:
        beam = [c for c in lineage if c.intent_id == o.intent_id and c.mode == "beam"]
        base = [c for c in lineage if c.intent_id == o.intent_id and c.mode == "best_of_n"]
        assert len(beam) == o.search.counts.images == len(base) == o.baseline.counts.images <= planned
        assert {c.round for c in beam} <= {0, 1}
        assert all((campaign_dir / c.image).exists() for c in beam + base)
        assert o.search.best_score is not None and 0 <= o.search.best_score <= 1


def test_concurrent_renders_are_batched(serve_app):
    from ray import serve

    handle = serve.get_deployment_handle("diffusion", app_name="promptbeam")

    async def burst():
        reqs = [RenderRequest(request_id=f"b{i}", prompt="a red apple", seed=i, steps=1) for i in range(8)]
        return await asyncio.gather(*(handle.render.remote(r) for r in reqs))

    results = asyncio.run(burst())
    assert [r.request_id for r in results] == [f"b{i}" for i in range(8)]
    assert max(r.batch_size for r in results) > 1


@pytest.mark.parametrize(
    "body,status_code,reason",
    [
        ({}, 422, "exactly one of"),
        ({"intents": []}, 422, "at least one intent"),
        ({"intents": intents(1), "search": {"max_images": 1, "candidates_per_beam": 2}}, 422, "max_images"),
        ({"intents": intents(1), "search": {"rounds": 0}}, 422, "rounds"),
        ({"intents": intents(1), "preset": "gpu"}, 422, "serves preset 'tiny'"),
        ({"intents": [{"id": "x", "text": ""}]}, 422, "text"),
        ({"intents_jsonl": "not json"}, 422, "line 1"),
    ],
)
def test_bad_specs_get_4xx_with_the_reason(serve_app, body, status_code, reason):
    resp = httpx.post(f"{serve_app['url']}/v1/campaigns", json=body, timeout=30)
    assert resp.status_code == status_code, resp.text
    assert reason in resp.text
    assert "Traceback" not in resp.text


def test_unknown_campaigns_and_images_are_404(serve_app):
    with httpx.Client(base_url=serve_app["url"], timeout=30) as client:
        assert client.get("/v1/campaigns/nope").status_code == 404
        assert client.get("/v1/campaigns/nope/results").status_code == 404
        assert client.delete("/v1/campaigns/nope").status_code == 404
        assert client.get("/v1/campaigns/..%2F..%2Fetc/images/passwd").status_code == 404
        undecodable = client.post("/v1/campaigns", content=b"{not json", headers={"content-type": "application/json"})
        assert undecodable.status_code == 400 and undecodable.json()["detail"]  # a JSON reason, not a stack trace
        assert "/v1/campaigns" in client.get("/openapi.json").json()["paths"]
    assert not (serve_app["store"] / "nope").exists()


def test_cancel_then_resubmit_resumes_without_duplicates(serve_app):
    body = {"name": "resume-demo", "intents": intents(6, "r"), "search": {**SEARCH, "rounds": 1}, "concurrency": 2}
    with httpx.Client(base_url=serve_app["url"], timeout=60) as client:
        cid = CampaignAccepted.model_validate_json(client.post("/v1/campaigns", json=body).content).id
        deadline = time.time() + 300
        while status(client, cid).intents_done < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert client.post("/v1/campaigns", json=body).status_code == 409  # already running
        st = CampaignStatus.model_validate_json(client.delete(f"/v1/campaigns/{cid}").content)
        assert st.state == "cancelled" and 2 <= st.intents_done < 6
        accepted = CampaignAccepted.model_validate_json(client.post("/v1/campaigns", json=body).content)
        assert accepted.resumed_intents == st.intents_done
        final = wait_done(client, cid)
        assert final.state == "done" and final.intents_done == 6 and final.intents_skipped == st.intents_done
    results = [IntentOutcome.model_validate_json(x)
               for x in (serve_app["store"] / cid / "results.jsonl").read_text().splitlines()]
    assert sorted(r.intent_id for r in results) == [f"r{k}" for k in range(6)]
    keys = [(c.mode, c.id) for c in read_lineage(serve_app["store"] / cid / "lineage.jsonl")]
    assert len(keys) == len(set(keys)) == sum(r.images for r in results)


def _llm_replica_pid() -> int:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    (actor,) = [a for a in actors if a.class_name == "ServeReplica:promptbeam:llm"]
    return actor.pid


def test_killing_the_vllm_engine_core_makes_serve_replace_the_llm_replica(serve_app):
    """SIGKILL the vLLM engine core process inside the LLM replica: the engine is dead, the replica's check_health
    raises, Serve stops it and starts a new one, and chat works again."""
    import psutil
    from ray import serve

    old_pid = _llm_replica_pid()
    cores = [p for p in psutil.Process(old_pid).children(recursive=True) if "EngineCore" in " ".join(p.cmdline())
             or "EngineCore" in p.name()]
    assert cores, [(p.pid, p.name(), p.cmdline()[:3]) for p in psutil.Process(old_pid).children(recursive=True)]
    for core in cores:
        os.kill(core.pid, signal.SIGKILL)
    deadline = time.time() + 300
    new_pid = None
    while time.time() < deadline:
        try:
            new_pid = _llm_replica_pid()
        except ValueError:  # between replicas: none or two alive
            new_pid = None
        if new_pid not in (None, old_pid):
            break
        time.sleep(2)
    assert new_pid not in (None, old_pid), "Serve did not replace the LLM replica"
    handle = serve.get_deployment_handle("llm", app_name="promptbeam")
    request = ChatRequest(request_id="after-kill", messages=[ChatMessage(role="user", content="hello")], max_tokens=4)
    deadline = time.time() + 300
    while True:  # the new replica may still be starting
        try:
            result = handle.chat.remote(request).result(timeout_s=60)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(2)
    assert result.completion_tokens > 0
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
