"""The command line: presets listed, reports rewritten, bad options refused, and `promptbeam search` as a one-intent
campaign through the runner and the store with the real engines in the process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.messages import Intent
from pipelines.campaign import CampaignRunner
from pipelines.cli import app
from pipelines.records import CampaignSpec
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from pipelines.wire import CampaignState, CampaignStatus
from serving.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]


def cli(args: list[str]):
    """Run the CLI in-process on a wide terminal (rich wraps tables and messages at the terminal's width)."""
    return CliRunner().invoke(app, args, env={"COLUMNS": "300"})


def test_models_presets_lists_every_preset():
    result = cli(["models", "presets"])
    assert result.exit_code == 0, result.output
    for name in ("tiny", "gpu", "sdxl", "flux-schnell", "black-forest-labs/FLUX.1-schnell"):
        assert name in result.output


def test_report_rewrites_a_campaigns_report(tmp_path):
    spec = CampaignSpec(name="c", intents=[Intent(id=f"i{k}", text=f"a red apple {k}") for k in range(2)],
                        search={"rounds": 1, "max_images": 4, "seeds_per_prompt": 1})
    renderer = FakeRenderer()
    asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(renderer),
                               CampaignStore(str(tmp_path))).run())
    result = cli(["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").is_file() and "improvement over the baseline" in result.output
    missing = cli(["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no manifest.json" in missing.output


def test_unknown_presets_and_bad_options_exit_2_with_the_reason(tmp_path):
    result = cli(["search", "a cat", "--preset", "sd9", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown model preset 'sd9'" in result.output
    assert not any(tmp_path.iterdir())  # refused before anything was written
    config = tmp_path / "app.yaml"
    config.write_text("preset: tiny\ndiffusion: {max_batch_size: 0}\n")
    result = cli(["search", "a cat", "--config", str(config), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "max_batch_size" in result.output


SERVE_CONFIG = """
applications:
  - name: promptbeam
    import_path: pipelines.app:build_app
    args: {preset: tiny, store_root: "s3://bucket/runs", diffusion: {max_batch_size: 4}, llm: {max_num_seqs: 8}}
    deployments:
      - {name: diffusion, num_replicas: 2}
      - {name: ingress, user_config: {max_intents: 10}}
"""


def test_a_serve_config_file_gives_the_apps_args_and_deployment_options_and_options_override_them(tmp_path):
    """What `promptbeam run/serve --config` start from: the first application's args (options over them) and its
    deployments' Serve options by name; a bare AppConfig mapping is read as the args."""
    from pipelines.server.configs import load_app_config

    config = tmp_path / "serve.yaml"
    config.write_text(SERVE_CONFIG)
    app_config, deployments = load_app_config(config, llm_model="/models/llm", store_root=tmp_path / "runs")
    assert deployments == {"diffusion": {"num_replicas": 2}, "ingress": {"user_config": {"max_intents": 10}}}
    assert app_config.diffusion.max_batch_size == 4 and app_config.store_root == str(tmp_path / "runs")
    assert app_config.llm.model == "/models/llm" and app_config.llm.max_num_seqs == 8  # merged, not replaced
    bare = tmp_path / "app.yaml"
    bare.write_text("preset: world\n")
    assert load_app_config(bare)[0].preset == "world" and load_app_config(bare)[1] == {}
    assert load_app_config(bare, preset="tiny")[0].preset == "tiny"
    with pytest.raises(ValueError, match="config file .*missing.yaml' does not exist"):
        load_app_config(tmp_path / "missing.yaml")


@pytest.mark.engines
@pytest.mark.slow
def test_search_is_a_one_intent_campaign_with_in_process_engines(tiny_models, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTBEAM_TINY_DIR": str(tiny_models["diffusion"].parent)}
    cmd = [sys.executable, "-m", "pipelines.cli", "search", "a red apple on a wooden table", "--out", str(tmp_path),
           "--name", "apple", "--rounds", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = CampaignStore(str(tmp_path / "apple"))
    manifest = store.read_manifest()
    assert manifest.models.diffusion == str(tiny_models["diffusion"]) and manifest.intents == 1
    (outcome,) = store.iter_outcomes(manifest.intent_ids)
    assert outcome.status == "done" and outcome.search.counts.images == outcome.baseline.counts.images > 0
    part = store.read_part("intent")
    assert {c.mode for c in part.lineage} == {"beam", "best_of_n"}
    assert all((tmp_path / "apple" / c.image).is_file() for c in part.lineage)
    assert (tmp_path / "apple" / "report.html").is_file() and store.read_status().intents_done == 1
    assert "best_of_n" in proc.stdout  # the lineage table


def test_promptbeam_verify_reads_the_provenance_stamp_back(tmp_path):
    from serving.safety.provenance import Stamper
    from serving.safety.record import ProvenanceRecord
    from pipelines.testing.safety_data import png, scene

    record = ProvenanceRecord(campaign="c", intent="i0", candidate="r0-p0-s0", prompt="a red apple", seed=7,
                              model="tiny", width=64, height=64, steps=2, created="2026-11-27T10:00:00+00:00")
    (tmp_path / "stamped.png").write_bytes(Stamper().stamp(scene(64, seed=3), record).png)
    (tmp_path / "plain.png").write_bytes(png(scene(64, seed=4)))
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(tmp_path / "stamped.png")])
    assert ok.exit_code == 0 and "a red apple" in ok.output, ok.output
    assert runner.invoke(app, ["verify", str(tmp_path / "plain.png")]).exit_code == 1


# ---------------------------------------------------------------------------------------------------------------------
# Cluster users: --version, reports on any fsspec URL, the endpoint from the environment, retries with backoff.
# The commands against the Serve app are in tests/test_serve_fake.py.
# ---------------------------------------------------------------------------------------------------------------------


def test_version_is_the_installed_packages():
    import importlib.metadata

    result = cli(["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"promptbeam {importlib.metadata.version('promptbeam')}"


def test_report_reads_and_writes_a_campaign_at_an_fsspec_url():
    import fsspec

    url = "memory://cli-report/c"
    spec = CampaignSpec(name="c", intents=[Intent(id="i0", text="a red apple")],
                        search={"rounds": 1, "max_images": 4, "seeds_per_prompt": 1})
    renderer = FakeRenderer()
    asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(renderer), CampaignStore(url)).run())
    result = cli(["report", url])
    assert result.exit_code == 0, result.output
    fs = fsspec.filesystem("memory")
    assert fs.isfile("/cli-report/c/report.html") and b"a red apple" in fs.cat("/cli-report/c/report.html")
    missing = cli(["report", "memory://cli-report/none"])
    assert missing.exit_code == 2 and "no manifest.json" in missing.output


STATUS_JSON = CampaignStatus(id="camp", state=CampaignState.running, intents_total=3, started_at=1.0).model_dump_json()


class FlakyEndpoint:
    """A loopback endpoint whose first `failures` requests answer 503 (a restarting proxy), then a campaign status."""

    def __init__(self, failures: int):
        from tests.http_helpers import LoopbackServer

        self.paths: list[str] = []
        self.authorization: list[str | None] = []

        def answer(method, path, headers, body):
            self.paths.append(path)
            self.authorization.append({k.lower(): v for k, v in headers.items()}.get("authorization"))
            if len(self.paths) <= failures:
                return 503, b"upstream restarting", "text/plain"
            return 200, STATUS_JSON.encode(), "application/json"

        self._server = LoopbackServer(answer)
        self.url = self._server.url

    def close(self):
        self._server.close()


FAST = RetryPolicy(attempts=6, backoff_s=0.01, max_backoff_s=0.02)


def test_polling_retries_with_backoff_and_takes_the_endpoint_from_the_environment(monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr("pipelines.client.DEFAULT_RETRY", RetryPolicy(attempts=6, backoff_s=0.01, max_backoff_s=10))
    monkeypatch.setattr("time.sleep", delays.append)
    endpoint = FlakyEndpoint(failures=3)
    try:
        result = CliRunner().invoke(app, ["status", "camp"], env={"COLUMNS": "300", "PROMPTBEAM_ENDPOINT": endpoint.url})
    finally:
        endpoint.close()
    assert result.exit_code == 0, result.output
    assert endpoint.paths == ["/v1/campaigns/camp"] * 4
    assert CampaignStatus.model_validate_json(result.stdout).id == "camp"
    assert delays == [0.01, 0.02, 0.04]  # doubling per retry
    assert "GET /v1/campaigns/camp failed (HTTP 503); retry 1 in" in result.output  # the answer, not a class name


def test_client_commands_send_the_api_token_from_the_environment():
    endpoint = FlakyEndpoint(failures=0)
    token = "t0k3n-" + "x" * 20
    try:
        runner = CliRunner()
        with_token = runner.invoke(app, ["status", "camp", "--endpoint", endpoint.url],
                                   env={"PROMPTBEAM_API_TOKEN": token})
        without = runner.invoke(app, ["cancel", "camp", "--endpoint", endpoint.url], env={"PROMPTBEAM_API_TOKEN": None})
        short = runner.invoke(app, ["status", "camp", "--endpoint", endpoint.url], env={"PROMPTBEAM_API_TOKEN": "short"})
    finally:
        endpoint.close()
    assert with_token.exit_code == 0 and without.exit_code == 0, (with_token.output, without.output)
    assert endpoint.authorization == [f"Bearer {token}", None]  # the short token never left the machine
    assert short.exit_code == 2 and "at least 16" in short.output


def test_an_unreachable_endpoint_fails_after_the_retries_with_the_reason(monkeypatch):
    from pipelines.server.local import free_port

    monkeypatch.setattr("pipelines.client.DEFAULT_RETRY", FAST)
    result = cli(["cancel", "camp", "--endpoint", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert f"after {FAST.attempts} tries" in result.output and "ConnectError" in result.output


def test_submit_sends_the_rewriter_and_seed_modes_and_refuses_unknown_ones(tmp_path):
    """--rewriter-mode and --seed-mode reach the submitted spec (the README's first command depends on them); an
    unknown mode exits 2 with the reason before anything is sent."""
    import json

    from tests.http_helpers import LoopbackServer

    bodies: list[dict] = []
    accepted = json.dumps({"id": "w", "state": "running", "intents": 1, "resumed_intents": 0, "concurrency": 1,
                           "status_url": "/v1/campaigns/w", "results_url": "/v1/campaigns/w/results"})

    def answer(method, path, headers, body):
        bodies.append(json.loads(body))
        return 202, accepted.encode(), "application/json"

    server = LoopbackServer(answer)
    campaign = tmp_path / "w.jsonl"
    campaign.write_text('{"id": "a", "text": "a wedge"}\n')
    try:
        ok = cli(["submit", str(campaign), "--endpoint", server.url, "--rewriter-mode", "edit",
                  "--seed-mode", "spread"])
        bad = cli(["submit", str(campaign), "--endpoint", server.url, "--rewriter-mode", "poetry"])
    finally:
        server.close()
    assert ok.exit_code == 0, ok.output
    assert bodies[0]["rewriter"]["mode"] == "edit" and bodies[0]["search"]["seed_mode"] == "spread"
    assert bad.exit_code == 2 and "mode" in bad.output and len(bodies) == 1
