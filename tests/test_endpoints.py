"""External rewriter/critic endpoints wired into presets, the app config, the in-process engines and the CLI: a role
with an OpenAI-compatible endpoint talks to it over HTTP, and with both roles covered no LLM is loaded or served.
The Serve path is in tests/test_serve_fake.py; the client against vLLM's real server in tests/test_openai_client.py."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from typer.testing import CliRunner

from agents.messages import Intent
from pipelines.app import AppConfig
from pipelines.campaign import CampaignRunner
from pipelines.cli import app
from pipelines.records import CampaignSpec, ModelsRecord
from pipelines.store import CampaignStore
from serving.clients import LocalEngines
from serving.openai_client import OpenAILanguageModel
from serving.presets import PresetError, resolve_preset
from tests.openai_fake_server import ScriptedOpenAIServer


@pytest.fixture
def server():
    s = ScriptedOpenAIServer()
    yield s
    s.close()


def endpoints(url: str, rewriter: str | None = "rw-model", critic: str | None = "critic-vlm") -> dict:
    return {role: {"base_url": url, "model": model} for role, model in (("rewriter", rewriter), ("critic", critic))
            if model}


def fake_preset(tmp_path, with_llm: bool = False) -> str:
    """A preset of the fake diffusion engine; with no `llm`, it is valid only with endpoints for both roles."""
    raw = {"diffusion": {"model": str(tmp_path / "state"), "device": "cpu", "max_batch_size": 8},
           "defaults": {"width": 64, "height": 64, "steps": 2, "guidance_scale": 0.0}}
    if with_llm:
        raw["llm"] = {"model": str(tmp_path / "state")}
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_endpoints_per_role_decide_whether_the_llm_is_served(tmp_path):
    url = "http://critic.example:8000/v1"
    both = resolve_preset("tiny", tmp_path, endpoints=AppConfig(endpoints=endpoints(url)).endpoints)
    assert not both.needs_llm and both.endpoints.critic.model == "critic-vlm"
    critic_only = AppConfig(preset="tiny", tiny_dir=str(tmp_path), endpoints=endpoints(url, rewriter=None)).resolve()
    assert critic_only.needs_llm and critic_only.endpoints.rewriter is None  # the rewriter stays on the preset's LLM
    # a preset without an llm is valid only when every role has an endpoint, and says which role lacks one
    assert not AppConfig(preset=fake_preset(tmp_path), endpoints=endpoints(url)).resolve().needs_llm
    with pytest.raises(PresetError, match="has no `llm` but its rewriter"):
        AppConfig(preset=fake_preset(tmp_path), endpoints=endpoints(url, rewriter=None)).resolve()


def test_the_models_record_names_the_endpoints_and_keeps_old_fingerprints(tmp_path):
    plain = ModelsRecord.of(resolve_preset("tiny", tmp_path))
    assert "rewriter_endpoint" not in plain.identity() and plain.llm is not None  # unchanged for stored campaigns
    ext = ModelsRecord.of(AppConfig(preset="tiny", tiny_dir=str(tmp_path),
                                    endpoints=endpoints("http://h:1/v1")).resolve())
    assert ext.llm is None and ext.critic_endpoint == "critic-vlm at http://h:1/v1"
    assert ext.identity() != plain.identity() and "critic-vlm at http://h:1/v1" in ext.describe()


def test_in_process_campaign_sends_each_role_to_its_endpoint_and_loads_no_llm(server, tmp_path):
    from tests.fake_engines import FakeDiffusionEngine

    preset = AppConfig(preset=fake_preset(tmp_path, with_llm=True), endpoints=endpoints(server.url)).resolve()
    spec = CampaignSpec(name="ext", intents=[Intent(id=f"i{k}", text=f"a red apple {k}") for k in range(2)],
                        search={"rounds": 2, "max_images": 8, "beam_width": 2, "candidates_per_beam": 2})

    async def go():
        async with LocalEngines(preset, diffusion_cls=FakeDiffusionEngine) as engines:
            assert engines.llm is None, "both roles have endpoints: no LLM engine is started"
            assert isinstance(engines.critic_llm, OpenAILanguageModel) and engines.rewriter_llm is not engines.critic_llm
            runner = CampaignRunner(spec, spec.search_config(preset.defaults), engines.renderer, engines.rewriter_llm,
                                    CampaignStore(str(tmp_path / "store")), models=ModelsRecord.of(preset),
                                    critic_llm=engines.critic_llm)
            await runner.run()
            return runner.status

    status = asyncio.run(go())
    assert status.intents_done == 2, status
    by_purpose = {}
    for call in server.calls:
        by_purpose.setdefault(call["purpose"], set()).add(call["model"])
    assert by_purpose == {"rewrite": {"rw-model"}, "decompose": {"critic-vlm"}, "critique": {"critic-vlm"}}
    critiques = [c for c in server.calls if c["purpose"] == "critique"]
    assert critiques and all(c["images"] == 1 and c["seed"] is not None for c in critiques)


def test_cli_endpoint_options_go_together(tmp_path):
    result = CliRunner().invoke(app, ["search", "a cat", "--out", str(tmp_path), "--critic-endpoint",
                                      "http://h:8000/v1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "--critic-endpoint and --critic-model go together" in result.output
    result = CliRunner().invoke(app, ["search", "a cat", "--out", str(tmp_path), "--critic-endpoint", "ftp://critic:21/v1",
                                      "--critic-model", "m"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "base_url must start with http:// or https://" in result.output
    assert not any(tmp_path.iterdir())
