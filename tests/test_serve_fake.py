"""The fast Serve tier: the real Serve app (ingress, deployments, runner, store) on a local Ray with fake engines
injected through the app config (no model loads). Health checks, shutdown, in-place config updates, the HTTP API's
records and status at scale are checked here; tests/test_serve.py runs the same app on the real engines."""

from __future__ import annotations

import asyncio
import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from agents.messages import Intent
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec, ModelsRecord
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from pipelines.wire import CampaignAccepted, CampaignStatus, Health
from serving.presets import load_preset
from tests.fake_engines import instances, mark_dead
from tests.http_helpers import intents, outcomes, wait_done

pytestmark = [pytest.mark.serve, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FAKE_ENGINES = {"diffusion": "tests.fake_engines:FakeDiffusionEngine", "llm": "tests.fake_engines:FakeLLMEngine"}
SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "max_images": 12}
FAST_HEALTH = {"health_check_period_s": 1, "health_check_timeout_s": 5, "graceful_shutdown_timeout_s": 5,
               "ray_actor_options": {"num_cpus": 0}}  # the real-engine app may hold both CPUs


def write_fake_preset(directory: Path, state: Path) -> Path:
    """A preset file (presets can be paths): the fake engines read their state directory from `model`."""
    path = directory / "fake.yaml"
    path.write_text(yaml.safe_dump({
        "description": "fake engines for the fast Serve tier",
        "diffusion": {"model": str(state), "device": "cpu", "max_batch_size": 16},
        "llm": {"model": str(state)},
        "defaults": {"width": 64, "height": 64, "steps": 2, "guidance_scale": 0.0},
        "batch_seconds": 1,
    }))
    return path


@dataclass
class FakeApp:
    url: str
    state: Path
    store: Path
    preset: Path


@pytest.fixture(scope="module")
def fake_app(ray_cluster, tmp_path_factory) -> FakeApp:
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    d = tmp_path_factory.mktemp("fake-app")
    state, store = d / "state", d / "store"
    config = AppConfig(preset=str(write_fake_preset(d, state)), store_root=str(store), engines=FAKE_ENGINES)
    deployments = {"diffusion": {**FAST_HEALTH, "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05}},
                   "llm": FAST_HEALTH}
    serve.run(compose_app(config, deployments), name="fake", route_prefix="/fake")
    yield FakeApp(url=ray_cluster["url"] + "/fake", state=state, store=store, preset=d / "fake.yaml")
    serve.delete("fake")








def test_lessons_are_learned_served_over_http_and_counted_in_a_campaign_with_memory(ray_cluster, tmp_path):
    """The real app with the scripted memory world of tests/test_memory.py (no LLM): 'a box' finds 'a square', the
    next intents get it from campaign memory; GET .../lessons returns the lesson with its evidence."""
    from ray import serve

    from agents.memory import LESSONS
    from pipelines.app import AppConfig, compose_app

    preset = tmp_path / "memory.yaml"
    preset.write_text(yaml.safe_dump({
        "description": "fake renderer, scripted memory world", "diffusion": {"model": str(tmp_path / "state")},
        "rewriter": "pipelines.testing.fakes:one_find_rewriter", "critic": "pipelines.testing.fakes:square_critic",
        "defaults": {"width": 64, "height": 64, "steps": 2, "guidance_scale": 0.0}, "batch_seconds": 1,
    }))
    config = AppConfig(preset=str(preset), store_root=str(tmp_path / "store"),
                       engines={"diffusion": FAKE_ENGINES["diffusion"]})
    serve.run(compose_app(config, {"diffusion": FAST_HEALTH}), name="memory", route_prefix="/memory")
    try:
        search = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 3, "seeds_per_prompt": 1, "max_images": 12,
                  "score_threshold": 0.9, "memory": {"enabled": True}}
        body = {"name": "mem", "concurrency": 1, "search": search, "baseline": "none",
                "intents": [{"id": "a", "text": "a box"}, {"id": "b", "text": "a blue box beside a tree"}]}
        with httpx.Client(base_url=ray_cluster["url"] + "/memory", timeout=60) as client:
            assert client.post("/v1/campaigns", json=body).status_code == 202
            assert wait_done(client, "mem").intents_done == 2
            lessons = LESSONS.validate_json(client.get("/v1/campaigns/mem/lessons").content)
            assert (lessons[0].before, lessons[0].after, lessons[0].wins) == ("box", "square", 2)
            assert [e.intent_id for e in lessons[0].examples] == ["a", "b"]
            best = {o.intent_id: o.search.best_prompt for o in outcomes(client.get("/v1/campaigns/mem/results"))}
            assert best["b"] == "a blue square beside a tree"  # memory's edit, not the rewriter's
            assert client.get("/v1/campaigns/nope/lessons").status_code == 404
        from typer.testing import CliRunner

        from pipelines.cli import app

        shown = CliRunner().invoke(app, ["lessons", "mem", "--endpoint", ray_cluster["url"] + "/memory"],
                                   env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and "│ box " in shown.output and "square" in shown.output, shown.output
        assert "2/" in shown.output  # wins/tries
    finally:
        serve.delete("memory")


def test_campaign_over_http_returns_typed_records_and_paginated_results(fake_app):
    with httpx.Client(base_url=fake_app.url, timeout=60) as client:
        resp = client.post("/v1/campaigns", json={"name": "pages", "intents": intents(5), "search": SEARCH})
        assert resp.status_code == 202, resp.text
        accepted = CampaignAccepted.model_validate_json(resp.content)
        # no concurrency given: from the renderer's capacity, 2 x (8 images x 1 replica) / 8 images in an intent's
        # largest round (2 branches x 2 children x 2 seeds per prompt)
        assert accepted.concurrency == 2
        st = wait_done(client, accepted.id)
        assert st.state == "done" and st.intents_done == 5 and st.improvement.n == 5
        assert st.images_rendered == st.search_costs.images + st.baseline_costs.images > 0
        everything = outcomes(client.get("/v1/campaigns/pages/results"))
        assert [o.intent_id for o in everything] == [f"i{k}" for k in range(5)]
        first = client.get("/v1/campaigns/pages/results", params={"limit": 2})
        assert [o.intent_id for o in outcomes(first)] == ["i0", "i1"]
        assert 'offset=2&limit=2>; rel="next"' in first.headers["link"]
        last = client.get("/v1/campaigns/pages/results", params={"offset": 4, "limit": 2})
        assert [o.intent_id for o in outcomes(last)] == ["i4"] and "link" not in last.headers
        name = everything[0].search.best_image.split("/")[1]
        img = client.get(f"/v1/campaigns/pages/images/{name}")
        assert img.status_code == 200 and Image.open(io.BytesIO(img.content)).format == "PNG"
    assert CampaignStore(str(fake_app.store / "pages")).read_status() == st


def test_a_campaign_concurrency_overrides_the_derived_one(fake_app):
    """`concurrency` in the request wins over the one derived from the renderer's capacity (4 here), in the answer,
    the status and the manifest."""
    with httpx.Client(base_url=fake_app.url, timeout=60) as client:
        resp = client.post("/v1/campaigns", json={"name": "fixed", "intents": intents(3), "search": SEARCH,
                                                  "concurrency": 3})
        assert resp.status_code == 202, resp.text
        assert CampaignAccepted.model_validate_json(resp.content).concurrency == 3
        st = wait_done(client, "fixed")
        assert st.state == "done" and st.concurrency == 3
    assert CampaignStore(str(fake_app.store / "fixed")).read_manifest().concurrency == 3


def test_a_finished_campaign_status_is_read_from_its_compiled_summary(fake_app):
    """A campaign this ingress never ran (written by another runner): its status comes from status.json alone."""
    spec = CampaignSpec(name="offline", intents=[Intent(id=f"o{k}", text=f"a cat {k}") for k in range(4)],
                        search=SEARCH)
    store = CampaignStore(str(fake_app.store / "offline"))
    renderer = FakeRenderer()
    status = asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(renderer), store).run())
    for part in (fake_app.store / "offline" / "parts").iterdir():
        part.unlink()  # the compiled summary is what answers: no part is opened
    with httpx.Client(base_url=fake_app.url, timeout=30) as client:
        got = CampaignStatus.model_validate_json(client.get("/v1/campaigns/offline").content)
        assert got == status and got.intents_done == 4
        assert [o.intent_id for o in outcomes(client.get("/v1/campaigns/offline/results"))] == ["o0", "o1", "o2", "o3"]


def test_unknown_campaigns_are_404_and_create_nothing(fake_app):
    before = sorted(p.name for p in fake_app.store.iterdir()) if fake_app.store.exists() else []
    with httpx.Client(base_url=fake_app.url, timeout=30) as client:
        for path in ("/v1/campaigns/nope", "/v1/campaigns/nope/results", "/v1/campaigns/nope/images/x.png",
                     "/v1/campaigns/..%2F..%2Fetc/images/passwd"):
            assert client.get(path).status_code == 404, path
        assert client.delete("/v1/campaigns/nope").status_code == 404
        schema = client.get("/openapi.json").json()  # the typed search overrides are documented field by field
        assert "rounds" in schema["components"]["schemas"]["SearchOverrides"]["properties"]
    after = sorted(p.name for p in fake_app.store.iterdir()) if fake_app.store.exists() else []
    assert after == before and "nope" not in after


@pytest.mark.parametrize(
    "body,reason",
    [
        ({"intents": [{"id": "n", "text": "a cat", "negative_prompt": "blurry"}]}, "would be ignored"),
        ({"intents": intents(1), "search": {"rounds": 0}}, "greater than or equal to 1"),
        ({"intents": intents(1), "search": {"max_images": 1}}, "max_images"),
        ({"intents": intents(1), "preset": "gpu"}, "serves preset 'fake'"),
        ({"intents": intents(1), "baseline": "some"}, "baseline"),
    ],
)
def test_bad_specs_get_422_with_the_reason(fake_app, body, reason):
    resp = httpx.post(f"{fake_app.url}/v1/campaigns", json=body, timeout=30)
    assert resp.status_code == 422, resp.text
    assert reason in resp.text and "Traceback" not in resp.text


def test_a_different_campaign_under_a_used_name_is_409_naming_the_difference(fake_app):
    with httpx.Client(base_url=fake_app.url, timeout=60) as client:
        assert client.post("/v1/campaigns", json={"name": "taken", "intents": intents(1), "search": SEARCH}
                           ).status_code == 202
        wait_done(client, "taken")
        resp = client.post("/v1/campaigns", json={"name": "taken", "intents": intents(1),
                                                  "search": {**SEARCH, "rounds": 1}})
        assert resp.status_code == 409 and "rounds stored 2 requested 1" in resp.text


def wait_for(predicate, timeout: float, what: str | Callable[[], str]):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what if isinstance(what, str) else what())


def test_a_dead_engine_fails_its_health_check_and_serve_replaces_the_replica(fake_app):
    state = fake_app.state
    for kind in ("FakeDiffusionEngine", "FakeLLMEngine"):
        alive = instances(state, kind) - instances(state, kind, "dead")
        (victim,) = alive - instances(state, kind, "shutdown")
        mark_dead(state, victim)
        # Serve's health check (every second here) raises, the replica is stopped (its shutdown runs) and replaced
        wait_for(lambda: victim in instances(state, kind, "shutdown"), 60, f"{kind} {victim} not shut down")
        wait_for(lambda: instances(state, kind) - alive, 60, f"no replacement for {kind} {victim}")
    with httpx.Client(base_url=fake_app.url, timeout=60) as client:  # the replacements serve campaigns
        assert client.post("/v1/campaigns", json={"name": "after-kill", "intents": intents(2), "search": SEARCH}
                           ).status_code == 202
        assert wait_done(client, "after-kill").intents_done == 2


# ---------------------------------------------------------------------------------------------------------------------
# The Serve config: declarative deploy, in-place update
# ---------------------------------------------------------------------------------------------------------------------


def serve_config(tmp_path: Path, state: Path) -> dict:
    """deploy/serve_config.yaml as shipped, pointed at fake engines and a temp store (only `args` change)."""
    config = yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())
    (application,) = config["applications"]
    application.update(name="inplace", route_prefix="/inplace")
    application["args"].update(preset=str(write_fake_preset(tmp_path, state)), store_root=str(tmp_path / "store"),
                               engines=FAKE_ENGINES)
    for deployment in application["deployments"]:
        deployment["ray_actor_options"] = {"num_cpus": 0}
    return {"applications": [application]}


def rest_client(dashboard: str):
    """The client `serve deploy` uses: Serve's REST API on the dashboard (with Ray's auth token when enabled)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(dashboard)


def details(dashboard: str):
    """Serve's REST view of the applications, parsed with Ray's own schema."""
    from ray.serve.schema import ServeInstanceDetails

    return ServeInstanceDetails.model_validate(rest_client(dashboard).get_serve_details()).applications


def test_changing_max_replicas_in_the_serve_config_updates_in_place(ray_cluster, tmp_path):
    """The Serve config is applied through Serve's REST API (what `serve deploy` does). Raising max_replicas and the
    batch size changes neither the app's code version nor any replica: no model reloads, no campaign is lost."""
    dashboard, state = ray_cluster["dashboard"], tmp_path / "state"
    config = serve_config(tmp_path, state)
    rest_client(dashboard).deploy_applications(config)

    def running(version: int | None = None):
        app = details(dashboard).get("inplace")
        if not app or app.status != "RUNNING":
            return None
        config = app.deployments["diffusion"].deployment_config
        if version is not None and config.autoscaling_config["max_replicas"] != version:
            return None
        return app

    def why() -> str:
        app = details(dashboard).get("inplace")
        return "no app" if app is None else f"{app.status}: {app.message} " + "; ".join(
            f"{name}: {d.status} {d.message[:500]}" for name, d in app.deployments.items())

    before = wait_for(running, 120, why)
    health = Health.model_validate_json(httpx.get(f"{ray_cluster['url']}/inplace/healthz", timeout=30).content)
    replicas = {name: {r.replica_id for r in d.replicas} for name, d in before.deployments.items()}
    engines_before = instances(state, "FakeDiffusionEngine") | instances(state, "FakeLLMEngine")

    updated = copy.deepcopy(config)
    diffusion = next(d for d in updated["applications"][0]["deployments"] if d["name"] == "diffusion")
    old_max = diffusion["autoscaling_config"]["max_replicas"]
    diffusion["autoscaling_config"]["max_replicas"] = old_max + 3
    diffusion["user_config"]["max_batch_size"] = 4
    rest_client(dashboard).deploy_applications(updated)
    after = wait_for(lambda: running(old_max + 3), 120, why)

    again = Health.model_validate_json(httpx.get(f"{ray_cluster['url']}/inplace/healthz", timeout=30).content)
    assert again.code_version == health.code_version is not None
    assert {name: {r.replica_id for r in d.replicas} for name, d in after.deployments.items()} == replicas
    assert instances(state, "FakeDiffusionEngine") | instances(state, "FakeLLMEngine") == engines_before

    from ray import serve

    capacity = serve.get_deployment_handle("diffusion", app_name="inplace").capacity.remote().result()
    assert (capacity.max_batch_size, capacity.replicas) == (4, old_max + 3)  # user_config and autoscaling reached it

    # deleting the app stops every replica through its explicit shutdown
    rest_client(dashboard).deploy_applications({"applications": []})
    wait_for(lambda: engines_before <= (instances(state, "FakeDiffusionEngine", "shutdown")
                                        | instances(state, "FakeLLMEngine", "shutdown")), 60, "engines not shut down")


def test_health_names_the_served_models(fake_app):
    health = Health.model_validate_json(httpx.get(f"{fake_app.url}/healthz", timeout=30).content)
    assert health.preset == "fake" and health.models == ModelsRecord.of(load_preset(str(fake_app.preset)))
    assert health.models.diffusion == str(fake_app.state)


def test_external_rewriter_and_critic_endpoints_replace_the_llm_deployment(ray_cluster, tmp_path):
    """With an OpenAI-compatible endpoint for each role the app deploys no LLM: the ingress sends rewrites to one
    endpoint's model and decompositions and critiques (with the images) to the other's."""
    from ray import serve

    from pipelines.app import AppConfig, compose_app
    from tests.openai_fake_server import ScriptedOpenAIServer

    server = ScriptedOpenAIServer()
    try:
        state = tmp_path / "state"
        config = AppConfig(preset=str(write_fake_preset(tmp_path, state)), store_root=str(tmp_path / "store"),
                           engines=FAKE_ENGINES,
                           endpoints={"rewriter": {"base_url": server.url, "model": "rw-model"},
                                      "critic": {"base_url": server.url, "model": "critic-vlm"}})
        serve.run(compose_app(config, {"diffusion": FAST_HEALTH, "ingress": {"ray_actor_options": {"num_cpus": 0}}}),
                  name="external", route_prefix="/external")
        assert set(serve.status().applications["external"].deployments) == {"diffusion", "ingress"}
        assert not instances(state, "FakeLLMEngine")
        with httpx.Client(base_url=ray_cluster["url"] + "/external", timeout=60) as client:
            resp = client.post("/v1/campaigns", json={"name": "ext", "intents": intents(3), "search": SEARCH})
            assert resp.status_code == 202, resp.text
            st = wait_done(client, "ext", timeout=300)
            health = Health.model_validate_json(client.get("/healthz").content)
        assert st.intents_done == 3, st.model_dump_json(indent=1)[-3000:]
        assert health.models.llm is None and health.models.critic_endpoint == f"critic-vlm at {server.url}"
        models = {}
        for call in server.calls:
            models.setdefault(call["purpose"], set()).add(call["model"])
        assert models == {"rewrite": {"rw-model"}, "decompose": {"critic-vlm"}, "critique": {"critic-vlm"}}
        assert all(c["images"] == 1 for c in server.calls if c["purpose"] == "critique")
    finally:
        serve.delete("external")
        server.close()


def test_cli_submit_status_results_cancel_and_report_against_the_app(fake_app, tmp_path):
    """The cluster user's commands against the running app, the endpoint taken from PROMPTBEAM_ENDPOINT."""
    import json

    from typer.testing import CliRunner

    from pipelines.cli import EXIT_CANCELLED, app
    from pipelines.client import CampaignClient
    from pipelines.records import IntentOutcome

    env = {"COLUMNS": "300", "PROMPTBEAM_ENDPOINT": fake_app.url}

    def cli(*args: str):
        return CliRunner().invoke(app, list(args), env=env)

    campaign = tmp_path / "cli-camp.jsonl"
    campaign.write_text("".join(json.dumps(i) + "\n" for i in intents(3)))
    done = cli("submit", str(campaign), "--wait", "--rounds", "3", "--beam-width", "1", "--candidates-per-beam", "2",
               "--max-images", "10", "--seed", "7")
    assert done.exit_code == 0, done.output
    manifest = CampaignStore(str(fake_app.store / "cli-camp")).read_manifest()
    search = manifest.search
    assert (search.rounds, search.beam_width, search.candidates_per_beam, search.max_images, search.base_seed) == (
        3, 1, 2, 10, 7)  # the search options reached the endpoint
    assert "ETA" in done.output

    st = cli("status", "cli-camp")
    assert st.exit_code == 0 and CampaignStatus.model_validate_json(st.stdout).intents_done == 3

    out = tmp_path / "results.jsonl"
    res = cli("results", "cli-camp", "--offset", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    lines = [IntentOutcome.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [o.intent_id for o in lines] == ["i1", "i2"] and all(o.status == "done" for o in lines)
    streamed = cli("results", "cli-camp", "--limit", "1")
    assert [IntentOutcome.model_validate_json(streamed.stdout.splitlines()[0]).intent_id] == ["i0"]

    # a long campaign, one intent at a time: cancelled while it runs, its finished intents kept
    slow = tmp_path / "cli-slow.jsonl"
    slow.write_text("".join(json.dumps(i) + "\n" for i in intents(60, prefix="s")))
    assert cli("submit", str(slow), "--concurrency", "1").exit_code == 0
    cancelled = cli("cancel", "cli-slow")
    assert cancelled.exit_code == 0, cancelled.output
    after = CampaignStatus.model_validate_json(cancelled.stdout)
    assert after.state == "cancelled" and after.intents_finished < 60
    watched = cli("watch", "cli-slow", "--interval", "0.2")  # re-attach: it ended cancelled, and says so
    assert watched.exit_code == EXIT_CANCELLED and CampaignStatus.model_validate_json(watched.stdout).state == "cancelled"
    assert cli("watch", "cli-camp").exit_code == 0

    # the list: every campaign of the store, paged in id order, with its state and progress
    listed = cli("ls")
    assert listed.exit_code == 0, listed.output
    assert "cli-camp" in listed.stdout and "3/3" in listed.stdout and "cli-slow" in listed.stdout
    with CampaignClient(fake_app.url) as client:
        pages, cursor = [], None
        while True:
            page = client.list(limit=1, cursor=cursor)
            pages.append(page.campaigns)
            cursor = page.next_cursor
            if cursor is None:
                break
        listing = {c.id: c for p in pages for c in p}
        assert all(len(p) <= 1 for p in pages) and list(listing) == sorted(listing)
        assert listing["cli-camp"].state == "done" and listing["cli-camp"].intents_finished == 3
        assert listing["cli-slow"].state == "cancelled" and listing["cli-slow"].intents_total == 60

    unknown = cli("cancel", "no-such-campaign")
    assert unknown.exit_code == 1 and "404" in unknown.output and "no running campaign" in unknown.output

    rep = cli("report", (fake_app.store / "cli-camp").as_uri())  # file:// is an fsspec URL like s3://
    assert rep.exit_code == 0, rep.output
    assert (fake_app.store / "cli-camp" / "report.html").is_file()


def diffusion_pids(dashboard: str, app: str) -> list[int]:
    from ray.util.state import list_actors

    return [a.pid for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
            if a.class_name == f"ServeReplica:{app}:diffusion"]


def test_a_campaign_budget_is_never_exceeded_through_the_app_when_the_renderer_replica_is_killed(fake_app, ray_cluster):
    """A campaign with an image budget through the Serve app; mid-campaign the renderer's replica is SIGKILLed
    (Serve starts another). Intents whose render failed are retried on resume; the images granted (budget.json, what
    counts: a round whose render failed still counts), the search-arm images in the lineage and the status's
    images_spent all stay within the budget, and the campaign finishes with every intent once."""
    import json
    import os
    import signal

    from pipelines.records import LineageRecord
    from tests.store_checks import assert_each_intent_once

    cid, n, budget = "budget-kill", 12, 60
    body = {"name": cid, "intents": intents(n), "search": SEARCH, "budget_images": budget, "concurrency": 3}
    (fake_app.state / "render_delay_s").write_text("0.3")
    killed = None
    try:
        with httpx.Client(base_url=fake_app.url, timeout=60) as client:
            assert client.post("/v1/campaigns", json=body).status_code == 202
            deadline = time.time() + 300
            while (st := CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content)
                   ).state == "running":
                assert time.time() < deadline, st
                if killed is None and (st.images_spent or 0) >= budget // 3:
                    (killed,) = diffusion_pids(ray_cluster["dashboard"], "fake")
                    os.kill(killed, signal.SIGKILL)
                time.sleep(0.2)
            assert killed is not None, "the campaign ended before the renderer could be killed"
            for _ in range(5):  # intents the kill failed are retried by a resubmission (resume)
                if st.state == "done":
                    break
                assert client.post("/v1/campaigns", json=body).status_code == 202
                st = wait_done(client, cid)
            assert st.state == "done" and st.intents_done == n, st
            assert st.budget_images == budget and st.images_spent <= budget
    finally:
        (fake_app.state / "render_delay_s").unlink(missing_ok=True)
    store = CampaignStore(str(fake_app.store / cid))
    granted = json.loads(store.fs.cat_file(store.path("budget.json")))["granted"]
    beam = [c for c in (LineageRecord.model_validate_json(x) for x in
                        (fake_app.store / cid / "lineage.jsonl").read_text().splitlines()) if c.mode == "beam"]
    assert 0 < len(beam) <= sum(granted.values()) <= budget
    assert_each_intent_once(store, [f"i{k}" for k in range(n)])
