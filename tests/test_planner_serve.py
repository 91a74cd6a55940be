"""Planner workers and autoscaling through the real Serve app (fake engines, fixed cost per batch; no model loads).

One campaign's intents are searched on the ``planner`` deployment's two replicas while the diffusion deployment
autoscales from 1 to 2 replicas under the campaign's load and back to 1 after it. Seen, not configured: the replica
counts come from Serve's controller (``serve.status()``) and from the series the dashboard's replica panel queries
(``ray_serve_deployment_replica_healthy``, scraped from Ray's metrics port); the campaign's concurrency (its status)
rises with the renderer's live replicas. Mid-campaign one planner replica is killed (SIGKILL): its intents are retried
on a live worker and the campaign ends ``done`` with every intent once."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.wire import CampaignStatus
from pipelines.store import CampaignStore
from tests.http_helpers import intents
from tests.store_checks import assert_each_intent_once
from tests.test_serve_fake import FAKE_ENGINES, FAST_HEALTH, write_fake_preset

pytestmark = [pytest.mark.serve, pytest.mark.slow]

APP = "planners"
N = 24
SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "seeds_per_prompt": 1, "max_images": 12,
          "run_baseline": False}
AUTOSCALING = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
               "upscale_delay_s": 1, "downscale_delay_s": 4, "metrics_interval_s": 0.5, "look_back_period_s": 2}


@dataclass
class PlannerApp:
    url: str
    store: Path
    state: Path
    metrics_port: int
    dashboard: str


@pytest.fixture(scope="module")
def planner_app(ray_cluster, tmp_path_factory):
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    d = tmp_path_factory.mktemp("planner-app")
    state, store = d / "state", d / "store"
    state.mkdir()
    (state / "render_delay_s").write_text("0.4")  # each batch costs 0.4 s, whatever its size
    config = AppConfig(preset=str(write_fake_preset(d, state)), store_root=str(store), engines=FAKE_ENGINES,
                       planner_workers=True)
    deployments = {
        "diffusion": {**FAST_HEALTH, "autoscaling_config": AUTOSCALING,
                      "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}},
        "llm": FAST_HEALTH,
        "planner": {**FAST_HEALTH, "autoscaling_config": {"min_replicas": 2, "initial_replicas": 2, "max_replicas": 2}},
    }
    serve.run(compose_app(config, deployments), name=APP, route_prefix=f"/{APP}")
    yield PlannerApp(url=f"{ray_cluster['url']}/{APP}", store=store, state=state,
                     metrics_port=ray_cluster["metrics_port"], dashboard=ray_cluster["dashboard"])
    serve.delete(APP)


def running(deployment: str) -> int:
    from ray import serve

    states = serve.status().applications[APP].deployments[deployment].replica_states
    return sum(n for s, n in states.items() if str(getattr(s, "value", s)) == "RUNNING")


def healthy_series(metrics_port: int, deployment: str) -> float | None:
    """What the dashboard's replica panel sums for one deployment: ``ray_serve_deployment_replica_healthy``."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    total = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "ray_serve_deployment_replica_healthy" and sample.labels.get("deployment") == deployment
                    and sample.labels.get("application") == APP):
                total = (total or 0.0) + sample.value
    return total


def planner_pids(dashboard: str) -> list[int]:
    from ray.util.state import list_actors

    return [a.pid for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
            if a.class_name == f"ServeReplica:{APP}:planner"]


@dataclass
class Watch:
    """Every 0.5 s: the renderer's running replicas, the panel's series, the campaign's concurrency and progress."""

    app: PlannerApp
    cid: str
    rows: list[tuple[float, int, float | None, int | None, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        t0 = time.time()
        with httpx.Client(base_url=self.app.url, timeout=30) as client:
            while not self.stop.is_set():
                resp = client.get(f"/v1/campaigns/{self.cid}")
                st = CampaignStatus.model_validate_json(resp.content) if resp.status_code == 200 else None
                self.rows.append((time.time() - t0, running("diffusion"),
                                  healthy_series(self.app.metrics_port, "diffusion"),
                                  st.concurrency if st else None, st.intents_finished if st else 0))
                self.stop.wait(0.5)


def test_a_campaign_on_planner_workers_follows_the_renderers_autoscaling_and_survives_a_killed_worker(planner_app):
    cid = "autoscaled"
    assert running("diffusion") == 1 and running("planner") == 2
    watch = Watch(planner_app, cid)
    thread = threading.Thread(target=watch.run, daemon=True)
    with httpx.Client(base_url=planner_app.url, timeout=30) as client:
        accepted = client.post("/v1/campaigns", json={"name": cid, "intents": intents(N), "search": SEARCH})
        assert accepted.status_code == 202, accepted.text
        first = accepted.json()["concurrency"]
        thread.start()
        killed = None
        deadline = time.time() + 600
        while (st := CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content)).state == "running":
            assert time.time() < deadline, st
            if killed is None and st.intents_finished >= 4:
                pids = planner_pids(planner_app.dashboard)
                assert len(pids) == 2, pids
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.5)
    assert killed is not None, "the campaign ended before a worker could be killed"
    assert st.state == "done" and st.intents_done == N and st.intents_failed == 0, st
    assert_each_intent_once(CampaignStore(str(planner_app.store / cid)), [f"i{k}" for k in range(N)])
    # back to one renderer replica once the load is gone, in Serve's state and on the dashboard's series
    deadline = time.time() + 90
    while time.time() < deadline and not (watch.rows and watch.rows[-1][1] == 1 and watch.rows[-1][2] == 1):
        time.sleep(1)
    watch.stop.set()
    thread.join(30)
    rows = watch.rows
    print("\n   t  renderer replicas  panel  concurrency  finished")
    for t, live, panel, conc, done in rows[:: max(1, len(rows) // 40)]:
        print(f"{t:5.1f}  {live:17d}  {panel!s:>5}  {conc!s:>11}  {done:8d}")
    assert max(r[1] for r in rows) == 2, "the renderer never scaled to 2 replicas"
    assert max(r[2] or 0 for r in rows) == 2, "the replica panel's series never showed 2 renderer replicas"
    assert rows[-1][1] == 1 and rows[-1][2] == 1, "the renderer did not scale back to 1 replica"
    concurrencies = [r[3] for r in rows if r[3] is not None]
    assert max(concurrencies) > first, f"the campaign's concurrency stayed {first} while the renderer scaled"
    assert planner_pids(planner_app.dashboard) and killed not in planner_pids(planner_app.dashboard)
    assert running("planner") == 2  # Serve replaced the killed worker


def test_a_budget_with_planner_workers_is_granted_by_the_runner_and_never_exceeded(planner_app):
    """With planner workers each round's images are granted by the campaign's one allocator, in the ingress's runner:
    the workers ask it through the ingress (RemoteAllowance). The budget binds (some intents stop on it), the grants
    and the rendered search images stay within it, and every intent commits once."""
    import json

    from pipelines.records import LineageRecord

    cid, n, budget = "budgeted", 8, 24  # round 0 of each intent (3 images); later rounds only from the pool
    with httpx.Client(base_url=planner_app.url, timeout=30) as client:
        resp = client.post("/v1/campaigns", json={"name": cid, "intents": intents(n), "search": SEARCH,
                                                  "budget_images": budget, "concurrency": 4})
        assert resp.status_code == 202, resp.text
        deadline = time.time() + 300
        while (st := CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content)
               ).state == "running":
            assert time.time() < deadline, st
            time.sleep(0.5)
    assert st.state == "done" and st.intents_done == n and st.budget_images == budget, st
    store = CampaignStore(str(planner_app.store / cid))
    granted = json.loads(store.fs.cat_file(store.path("budget.json")))["granted"]
    beam = [c for c in (LineageRecord.model_validate_json(x) for x in
                        (planner_app.store / cid / "lineage.jsonl").read_text().splitlines()) if c.mode == "beam"]
    assert 0 < len(beam) == sum(granted.values()) == st.images_spent <= budget
    stops = [o.search.stop_reason for o in store.iter_outcomes([f"i{k}" for k in range(n)])]
    assert "budget" in stops, stops  # the budget bound
    assert_each_intent_once(store, [f"i{k}" for k in range(n)])
