"""Metrics: the dashboard queries exactly serving/metrics.py's names, and every expression returns data from a real
Prometheus scraping a local Ray Serve app that ran a campaign."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipelines.server.local import free_port
from pipelines.wire import CampaignStatus
from serving import metrics as m

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "promptbeam.json"
GPU_ONLY = ("ray_node_gpus_utilization", "ray_node_gram_used")  # Ray exports these only on nodes with GPUs
NOT_CAUSED_HERE = {
    m.IMAGES_STAMPED: "the tiny preset runs no output check (tests/test_output_safety.py covers it)",
    m.IMAGES_WITHHELD: "the tiny preset runs no output check",
    m.NSFW_SCORE: "the tiny preset runs no output check",
    m.OUTPUT_GUARD_SECONDS: "the tiny preset runs no output check",
    m.REWRITES_BLOCKED: "the tiny random LLM writes nothing the output filter blocks",
    m.RETRIES: "no infrastructure error in this campaign (tests/test_faults.py kills replicas)",
    m.LESSONS_LEARNED: "memory is off in this campaign (tests/test_memory.py runs one with memory through the app)",
    m.LESSONS_APPLIED: "memory is off in this campaign",
    m.LESSONS_SUPPORTED: "memory is off in this campaign",
}
"""Event counters whose event the test campaign below does not cause: their expressions may have no data. Every
other expression must return data; none may hide a missing metric behind `or on() vector(0)`."""


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def spec_of(series: str) -> m.MetricSpec | None:
    base = series[len(m.EXPORT_NAMESPACE):]
    base = re.sub(r"_(total|bucket|sum|count)$", "", base)
    return next((s for s in m.ALL if s.name == base), None)


def test_dashboard_is_generated_from_the_metrics_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dashboard", ROOT / "deploy" / "grafana" / "make_dashboard.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert json.loads(DASHBOARD.read_text()) == mod.dashboard(), "run deploy/grafana/make_dashboard.py"


def test_dashboard_queries_exactly_the_defined_metrics():
    used = set()
    for expr in dashboard_exprs():
        for series in re.findall(r"\bray_promptbeam_\w+", expr):
            spec = spec_of(series)
            assert spec is not None, f"{series} is not defined in serving/metrics.py"
            suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[spec.kind]
            assert series in [m.exported(spec, sfx) for sfx in suffixes], f"{series} does not fit a {spec.kind}"
            used.add(spec.name)
    assert used == {s.name for s in m.ALL}, f"metrics without a panel: {sorted({s.name for s in m.ALL} - used)}"
    for s in m.ALL:
        assert s.name.startswith("promptbeam_")
        assert (s.kind == "histogram") == bool(s.buckets)


def test_dashboard_follows_grafana_schema():
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "campaign"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert p["type"] == "timeseries" and set(p["gridPos"]) == {"h", "w", "x", "y"}
        assert p["datasource"]["type"] == "prometheus" and p["targets"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for needed in ("images/s", "progress", "eta", "best score per round", "baseline", "batch size", "queue depth",
                   "replicas", "latency", "tokens/s", "error rates", "renderer busy fraction", "serve batch queue",
                   "vllm requests waiting", "kv-cache", "time to first token", "gpu utilisation", "gpu memory"):
        assert needed in titles, needed
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in board["panels"]}
    gpu = [t for t in units if t.lower().startswith("gpu")]
    # one unit per panel: utilisation in percent and memory in bytes never share an axis
    assert sorted(units[t] for t in gpu) == ["bytes", "percent"], units
    for p in board["panels"]:
        if p["title"].lower().startswith("gpu"):
            assert all("by (instance, GpuIndex)" in t["expr"] for t in p["targets"]), p["targets"]


def test_no_promptbeam_expression_hides_a_missing_metric():
    """A fallback such as `or on() vector(0)` answers even when the metric is gone; the event panels draw 0 through
    Grafana's noValue instead, which the query test below cannot mistake for data."""
    board = json.loads(DASHBOARD.read_text())
    for p in board["panels"]:
        for t in p["targets"]:
            if "ray_promptbeam_" in t["expr"] or "ray_serve_replica_startup" in t["expr"]:
                assert "vector(" not in t["expr"], t["expr"]
    recovery = next(p for p in board["panels"] if p["title"].startswith("Recovery"))
    exprs = " ".join(t["expr"] for t in recovery["targets"])
    for series in (m.exported(m.RETRIES), m.exported(m.CAMPAIGN_RESUMES), "ray_serve_replica_startup_latency_ms_count"):
        assert series in exprs
    assert recovery["fieldConfig"]["defaults"]["noValue"] == "0"


def test_progress_and_eta_do_not_mislead():
    """Progress is 1 - backlog/total (resumed intents count, failures do not inflate a finished count twice); the ETA
    divides by a finish rate over a long window and shows nothing, not a spike, when that rate is 0."""
    board = json.loads(DASHBOARD.read_text())
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in board["panels"]}
    (progress,) = next(v for k, v in exprs.items() if k.startswith("Progress"))
    assert progress.startswith("1 - ") and m.exported(m.BACKLOG) in progress and m.exported(m.INTENTS_TOTAL) in progress
    (eta,) = next(v for k, v in exprs.items() if k.startswith("ETA"))
    assert "clamp_min" not in eta and eta.rstrip().endswith("> 0)") and "[30m]" in eta
    images = next(v for k, v in exprs.items() if k.startswith("Images/s"))
    assert m.exported(m.IMAGES_FINISHED) in images[0] and m.exported(m.IMAGES_RENDERED) not in " ".join(images)


@pytest.mark.serve
@pytest.mark.engines
@pytest.mark.slow
def test_every_dashboard_expression_returns_data_from_real_prometheus(serve_app, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: scripts/setup installs the Debian package 'prometheus'"
    # the deploy/ config, scraping every second for the test
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    sd_files = config["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert sd_files == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert Path(sd_files[0]).exists(), "Ray writes its service-discovery file there"
    # Ray lists its agents under the node's interface address; they listen on every interface, and this test only
    # talks to loopback, so scrape the same ports on 127.0.0.1.
    sd = json.loads(Path(sd_files[0]).read_text())
    assert sd[0]["targets"], sd
    for group in sd:
        group["targets"] = ["127.0.0.1:" + t.rsplit(":", 1)[1] for t in group["targets"]]
    (tmp_path / "sd.json").write_text(json.dumps(sd))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["file_sd_configs"][0].update(files=[str(tmp_path / "sd.json")], refresh_interval="1s")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        with httpx.Client(base_url=serve_app["url"], timeout=60) as client:
            # one intent the input moderation refuses (promptbeam_moderation_blocked)
            intents = [{"id": f"m{k}", "text": f"a blue car {k}"} for k in range(3)]
            body = {"name": "metrics-demo", "intents": [*intents, {"id": "bad", "text": "explicit nude 12 year old"}],
                    "search": {"rounds": 2, "max_images": 8, "steps": 2},
                    "budget_images": 100}  # a budget (never binding here), for the budget panels' series
            assert client.post("/v1/campaigns", json=body).status_code == 202
            # a campaign with a device-seconds budget, for that budget panel's series
            seconds = {"name": "metrics-seconds", "intents": intents[:1], "budget_device_seconds": 600,
                       "search": {"rounds": 1, "max_images": 6, "steps": 2}}
            assert client.post("/v1/campaigns", json=seconds).status_code == 202
            # one refused submission, so the HTTP error panel has a series (Serve counts 4xx as errors)
            assert client.post("/v1/campaigns", json={"name": "bad", "intents": []}).status_code == 422
            deadline = time.time() + 600
            for cid in ("metrics-demo", "metrics-seconds"):
                while (st := CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content)
                       ).state == "running":
                    assert time.time() < deadline
                    time.sleep(1)
                assert st.state == "done", st
            assert st.budget_device_seconds == 600 and 0 < st.device_seconds_spent <= 600, st
            # resubmitted: a resume (promptbeam_campaign_resumes) with nothing left to redo; the resumed runs
            # publish their gauges again (Ray stops exporting a gauge its process has not set for a while)
            for again, resumed in ((body, 4), (seconds, 1)):
                accepted = client.post("/v1/campaigns", json=again)
                assert accepted.status_code == 202 and accepted.json()["resumed_intents"] == resumed, accepted.text
            for cid in ("metrics-demo", "metrics-seconds"):
                while CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content).state == "running":
                    assert time.time() < deadline
                    time.sleep(1)
        time.sleep(6)  # a few scrapes after the last intent
        targets = httpx.get(f"{api}/targets", timeout=10).json()["data"]["activeTargets"]
        assert targets and all(t["health"] == "up" for t in targets), targets
        missing = []
        excused = [m.exported(spec, sfx) for spec in NOT_CAUSED_HERE for sfx in ("", "_total", "_bucket")]
        for expr in dashboard_exprs():
            q = expr.replace('campaign=~"$campaign"', 'campaign=~".*"').replace("$__rate_interval", "2m")
            if any(g in q for g in GPU_ONLY):
                # no GPU here: the panel's own fallback must still give a value (0), and the raw series is absent
                raw = q.split(" or ")[0]
                assert not httpx.get(f"{api}/query", params={"query": raw}).json()["data"]["result"]
            resp = httpx.get(f"{api}/query", params={"query": q}, timeout=10).json()
            assert resp["status"] == "success", (q, resp)
            if not resp["data"]["result"] and not any(series in q for series in excused):
                missing.append(q)
        names = httpx.get(f"{api}/label/__name__/values", timeout=10).json()["data"]
        assert not missing, ("expressions without data:\n" + "\n".join(missing) + "\nseries: "
                             + ", ".join(n for n in names if "promptbeam_campaign" in n))
    finally:
        proc.terminate()
        proc.wait(10)


def test_metrics_outside_ray_are_noops_that_are_not_cached():
    """Recording before ray.init must not pin a no-op for the life of the process (fresh interpreter, no Ray)."""
    code = (
        "from serving import metrics as m\n"
        "m.inc(m.ROUNDS, campaign='x'); m.observe(m.RENDER_BATCH_SIZE, 4)\n"
        "print(sorted(m.Metrics._cache))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "[]"
