"""Deployments as plain classes (no Ray cluster): injected engines, batching from user_config, health from the engine,
explicit shutdown, option merging; presets as data. The same classes run under Serve in tests/test_serve_fake.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from serving.config import DiffusionEngineConfig, LLMEngineConfig
from serving.deployments import (
    DiffusionBatchConfig,
    DiffusionDeployment,
    LLMDeployment,
    diffusion_options,
    merge_options,
)
from serving.presets import (
    DiffusionOverrides,
    LLMOverrides,
    PresetError,
    available,
    default_tiny_dir,
    load_preset,
    resolve_preset,
)
from tests.fake_engines import FakeDiffusionEngine, FakeLLMEngine, instances, mark_dead


def test_diffusion_deployment_takes_its_engine_class_and_batching_from_user_config(tmp_path):
    deployment = DiffusionDeployment(DiffusionEngineConfig(model=str(tmp_path), max_batch_size=8), FakeDiffusionEngine)
    assert isinstance(deployment.engine, FakeDiffusionEngine)
    assert deployment.batching == DiffusionBatchConfig(max_batch_size=8)  # the engine's own batch size by default
    deployment.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.5})
    assert deployment.batching == DiffusionBatchConfig(max_batch_size=4, batch_wait_timeout_s=0.5)
    assert deployment._render_batch._get_max_batch_size() == 4  # what @serve.batch will use
    with pytest.raises(ValueError, match=r"max_batch_size \(32\) exceeds the engine's max_batch_size \(8\)"):
        deployment.reconfigure({"max_batch_size": 32})
    with pytest.raises(ValueError, match="batch_wait"):
        deployment.reconfigure({"batch_wait": 1})


def test_health_follows_the_engine_and_shutdown_is_explicit(tmp_path):
    deployment = DiffusionDeployment(DiffusionEngineConfig(model=str(tmp_path)), FakeDiffusionEngine)
    llm = LLMDeployment(LLMEngineConfig(model=str(tmp_path)), FakeLLMEngine)
    deployment.check_health()
    asyncio.run(llm.check_health())
    for kind in ("FakeDiffusionEngine", "FakeLLMEngine"):
        (instance,) = instances(tmp_path, kind)
        mark_dead(tmp_path, instance)
    with pytest.raises(RuntimeError, match="marked dead"):
        deployment.check_health()
    with pytest.raises(RuntimeError, match="marked dead"):
        asyncio.run(llm.check_health())
    asyncio.run(deployment.shutdown())
    asyncio.run(llm.shutdown())
    asyncio.run(llm.shutdown())  # idempotent
    assert instances(tmp_path, "FakeDiffusionEngine", "shutdown") == instances(tmp_path, "FakeDiffusionEngine")
    assert instances(tmp_path, "FakeLLMEngine", "shutdown") == instances(tmp_path, "FakeLLMEngine")


def test_options_merge_one_level_deep_and_graceful_shutdown_follows_the_batch_time():
    engine = DiffusionEngineConfig(model="m", max_batch_size=8)
    defaults = diffusion_options(engine, on_gpu=True, batch_seconds=20)
    assert defaults["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}
    assert defaults["max_ongoing_requests"] == 32 and defaults["graceful_shutdown_timeout_s"] == 4 * 20 + 10
    merged = merge_options(defaults, {"ray_actor_options": {"num_cpus": 4}, "max_queued_requests": 10})
    assert merged["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 1} and merged["max_queued_requests"] == 10
    assert defaults["ray_actor_options"]["num_cpus"] == 1  # the defaults are not modified


def test_presets_are_data_and_overrides_are_typed(tmp_path, monkeypatch):
    assert {"tiny", "gpu", "sdxl", "flux-schnell"} <= set(available())
    flux = load_preset("flux-schnell")
    assert flux.diffusion.model == "black-forest-labs/FLUX.1-schnell" and flux.defaults.steps == 4 and flux.on_gpu
    assert load_preset("sdxl").defaults.guidance_scale > 1  # a CFG model: negative prompts work there
    switched = resolve_preset("gpu", diffusion=DiffusionOverrides(model="/models/x", compile="regional"),
                              llm=LLMOverrides(max_model_len=2048))
    assert (switched.diffusion.model, switched.diffusion.compile, switched.diffusion.dtype) == ("/models/x",
                                                                                               "regional", "float16")
    assert switched.llm.max_model_len == 2048 and switched.llm.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(PresetError, match=r"unknown model preset 'sd9'; choose one of \["):
        load_preset("sd9")
    with pytest.raises(ValueError, match="max_batch_size"):
        DiffusionOverrides(max_batch_size=0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("diffusion: {model: x}\ndefaults: {width: 64, height: 64, steps: 4, guidance_scale: 0}\n"
                   "rewriter: llm\n")
    with pytest.raises(PresetError, match="has no `llm` but its rewriter"):
        load_preset(str(bad))


def test_the_tiny_dir_is_looked_up_when_used_not_at_import(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMPTBEAM_TINY_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tiny_dir() == tmp_path.resolve() / ".cache" / "tiny-models"
    assert load_preset("tiny").diffusion.model == str(tmp_path.resolve() / ".cache" / "tiny-models" / "diffusion")
    monkeypatch.setenv("PROMPTBEAM_TINY_DIR", str(tmp_path / "elsewhere"))
    assert load_preset("tiny").llm.model == str(tmp_path / "elsewhere" / "vlm")
    assert not (tmp_path / ".cache").exists() and not (tmp_path / "elsewhere").exists()  # loading builds nothing


def test_importing_the_packages_creates_nothing(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "import pipelines.cli, pipelines.app, pipelines.report, serving.presets, serving.clients"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(root)})
    assert list(tmp_path.iterdir()) == []
