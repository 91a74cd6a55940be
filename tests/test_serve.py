"""The real Serve app on a local Ray (2 CPUs) with the tiny models: HTTP campaigns, batching, 4xx, cancel/resume."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from agents.config import SearchConfig
from agents.messages import RenderRequest

pytestmark = [pytest.mark.serve, pytest.mark.slow]

SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "max_images": 12, "steps": 2}


def wait_done(client: httpx.Client, cid: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = client.get(f"/v1/campaigns/{cid}").json()
        if st["state"] != "running":
            return st
        time.sleep(1)
    raise TimeoutError(f"campaign {cid} still running after {timeout}s")


def intents(n: int, prefix: str = "i") -> list[dict]:
    return [{"id": f"{prefix}{k}", "text": f"a photo of {k + 1} red apples on a table"} for k in range(n)]


def test_http_campaign_completes_with_lineage(serve_app):
    with httpx.Client(base_url=serve_app["url"], timeout=60) as client:
        resp = client.post("/v1/campaigns", json={"name": "http-demo", "intents": intents(3), "search": SEARCH})
        assert resp.status_code == 202, resp.text
        cid = resp.json()["id"]
        st = wait_done(client, cid)
        assert st["state"] == "done" and st["intents_done"] == 3, st
        lines = [json.loads(x) for x in client.get(f"/v1/campaigns/{cid}/results").text.splitlines()]
        assert [r["intent_id"] for r in lines] == ["i0", "i1", "i2"]
        img = client.get(f"/v1/campaigns/{cid}/images/{lines[0]['best_image'].split('/')[1]}")
        assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"
    campaign_dir = serve_app["store"] / cid
    lineage = [json.loads(x) for x in (campaign_dir / "lineage.jsonl").read_text().splitlines()]
    planned = SearchConfig(**SEARCH).planned_images()
    for r in lines:
        beam = [c for c in lineage if c["intent_id"] == r["intent_id"] and c["mode"] == "beam"]
        base = [c for c in lineage if c["intent_id"] == r["intent_id"] and c["mode"] == "best_of_n"]
        assert len(beam) == r["images"] == len(base) <= planned
        assert {c["round"] for c in beam} <= {0, 1}
        assert all((campaign_dir / c["image"]).exists() for c in beam + base)
        assert r["best_score"] is not None and 0 <= r["best_score"] <= 1


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
    "body,status,reason",
    [
        ({}, 422, "exactly one of"),
        ({"intents": []}, 422, "at least one intent"),
        ({"intents": intents(1), "search": {"max_images": 1, "candidates_per_beam": 2}}, 422, "max_images"),
        ({"intents": intents(1), "search": {"rounds": 0}}, 422, "rounds"),
        ({"intents": intents(1), "profile": "gpu"}, 422, "serves profile 'tiny'"),
        ({"intents": [{"id": "x", "text": ""}]}, 422, "text"),
        ({"intents_jsonl": "not json"}, 422, "line 1"),
    ],
)
def test_bad_specs_get_4xx_with_the_reason(serve_app, body, status, reason):
    resp = httpx.post(f"{serve_app['url']}/v1/campaigns", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    assert reason in resp.text
    assert "Traceback" not in resp.text


def test_unknown_campaigns_and_images_are_404(serve_app):
    with httpx.Client(base_url=serve_app["url"], timeout=30) as client:
        assert client.get("/v1/campaigns/nope").status_code == 404
        assert client.get("/v1/campaigns/nope/results").status_code == 404
        assert client.delete("/v1/campaigns/nope").status_code == 404
        assert client.get("/v1/campaigns/..%2F..%2Fetc/images/passwd").status_code == 404
        assert client.post("/v1/campaigns", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422
        assert "/v1/campaigns" in client.get("/openapi.json").json()["paths"]


def test_cancel_then_resubmit_resumes_without_duplicates(serve_app):
    body = {"name": "resume-demo", "intents": intents(6, "r"), "search": {**SEARCH, "rounds": 1}, "concurrency": 2}
    with httpx.Client(base_url=serve_app["url"], timeout=60) as client:
        cid = client.post("/v1/campaigns", json=body).json()["id"]
        deadline = time.time() + 300
        while client.get(f"/v1/campaigns/{cid}").json()["intents_done"] < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert client.post("/v1/campaigns", json=body).status_code == 409  # already running
        st = client.delete(f"/v1/campaigns/{cid}").json()
        assert st["state"] == "cancelled" and 2 <= st["intents_done"] < 6
        accepted = client.post("/v1/campaigns", json=body).json()
        assert accepted["resumed_intents"] == st["intents_done"]
        final = wait_done(client, cid)
        assert final["state"] == "done" and final["intents_done"] == 6
    results = [json.loads(x) for x in (serve_app["store"] / cid / "results.jsonl").read_text().splitlines()]
    assert sorted(r["intent_id"] for r in results) == [f"r{k}" for k in range(6)]
    lineage = [json.loads(x) for x in (serve_app["store"] / cid / "lineage.jsonl").read_text().splitlines()]
    keys = [(c["mode"], c["id"]) for c in lineage]
    assert len(keys) == len(set(keys)) == sum(r["images"] + r["baseline_images"] for r in results)
