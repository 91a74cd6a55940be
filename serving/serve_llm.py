"""The LLM deployment as Ray Serve LLM (``ray.serve.llm``): ``LLMServer`` built from the project's ``LLMEngineConfig``.

Chosen with ``AppConfig.llm_backend: ray_serve_llm``. Against the project's own ``LLMDeployment`` it brings what Ray's
LLM serving has: an engine health check, a placement group per replica (so ``tensor_parallel_size > 1`` gets that many
GPUs), prefix-aware request routing available, and Ray's LLM dashboard and ``ray_vllm_*`` engine metrics. The campaign
ingress talks to it through a deployment handle with :class:`ServeLLMLanguageModel`, the planner's ``LanguageModel``
port over ``LLMServer.chat``: the request is an OpenAI chat completion (images as data URLs, ``response_format``
json_schema, seed), the reply carries token usage.

The in-process engine (``serving.engines.LLMEngine``) stays the default for CPU tests and ``promptbeam search``.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from agents.messages import ChatRequest, ChatResult
from serving import metrics
from serving.config import LLMEngineConfig
from serving.openai_client import LanguageModelError, chat_completion_body, parse_json_reply

LLM_DEPLOYMENT_NAME = "llm"
"""The deployment's name, as for the project's own LLM deployment: a Serve config's ``deployments: - name: llm``
entry applies to either backend."""


def engine_kwargs(engine: LLMEngineConfig, *, on_gpu: bool) -> dict[str, Any]:
    """vLLM engine arguments for ``LLMConfig.engine_kwargs``: the same choices ``serving.engines.LLMEngine`` makes."""
    kwargs: dict[str, Any] = {
        "max_model_len": engine.max_model_len,
        "max_num_seqs": engine.max_num_seqs,
        "dtype": engine.dtype,
        "enforce_eager": engine.enforce_eager,
        "seed": engine.seed,
        "tensor_parallel_size": engine.tensor_parallel_size,
        # xgrammar with no free whitespace: a weak model cannot stall on endless blanks inside the JSON
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    if engine.max_images_per_prompt:
        kwargs["limit_mm_per_prompt"] = {"image": engine.max_images_per_prompt, "video": 0}
    if engine.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = engine.kv_cache_memory_bytes
    if on_gpu:
        kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
    kwargs.update(engine.prefill_args(on_cpu=not on_gpu))
    return kwargs


def serve_llm_deployment_config(options: dict[str, Any]) -> dict[str, Any]:
    """``LLMConfig.deployment_config`` from the project's LLM deployment options (``serving.deployments.llm_options``
    merged with the Serve config's): autoscaling, ``max_ongoing_requests`` and its ``target_ongoing_requests`` stay
    explicit (Ray Serve LLM's own default target is so large that it never scales up). Resources are left out:
    ``LLMServer`` asks for them through its placement group (one bundle per tensor-parallel worker)."""
    config = copy.deepcopy(options)
    actor = config.pop("ray_actor_options", None) or {}
    if actor.get("resources"):
        # a custom resource (e.g. llm_node) pins the placement group's bundles, as it pinned the actor
        config["_pin_resources"] = dict(actor["resources"])
    auto = config.get("autoscaling_config") or {}
    for key in ("min_replicas", "max_replicas", "target_ongoing_requests"):
        if key not in auto and "num_replicas" not in config:
            raise ValueError(f"the LLM deployment's autoscaling_config must set {key!r} explicitly (got {auto})")
    if "max_ongoing_requests" not in config:
        raise ValueError("the LLM deployment must set max_ongoing_requests explicitly")
    return config


def build_llm_config(engine: LLMEngineConfig, *, on_gpu: bool, options: dict[str, Any]):
    """The ``ray.serve.llm.LLMConfig`` for the project's engine config and deployment options."""
    from ray.serve.llm import LLMConfig

    deployment = serve_llm_deployment_config(options)
    pin = deployment.pop("_pin_resources", None)
    runtime_env: dict[str, Any] = {}
    if not on_gpu:
        # vision processors on CPU need the torchvision shim in the replica and its engine-core process
        from serving.compat.torchvision_shim import ensure_installed

        if ensure_installed():
            runtime_env["env_vars"] = {"PYTHONPATH": os.environ["PYTHONPATH"]}
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": engine.model, "model_source": engine.model},
        "engine_kwargs": engine_kwargs(engine, on_gpu=on_gpu),
        "deployment_config": deployment,
        "log_engine_metrics": True,
    }
    if on_gpu:
        if pin:
            config["placement_group_config"] = {"bundle_per_worker": {"GPU": 1, **pin}}  # x tensor_parallel_size
    else:
        config["accelerator_config"] = {"kind": "cpu"}
    if runtime_env:
        config["runtime_env"] = runtime_env
    return LLMConfig(**config)


def build_serve_llm_deployment(engine: LLMEngineConfig, *, on_gpu: bool, options: dict[str, Any]):
    """The bound ``LLMServer`` deployment, named ``llm``."""
    from ray.serve.llm import build_llm_deployment

    return build_llm_deployment(build_llm_config(engine, on_gpu=on_gpu, options=options),
                                override_serve_options={"name": LLM_DEPLOYMENT_NAME})


class ServeLLMLanguageModel:
    """``LanguageModel`` port over a ``ray.serve.llm`` ``LLMServer`` handle: one OpenAI chat completion per request.

    Errors as the other clients report them: a request the server refuses for its content (4xx, e.g. a prompt longer
    than the context) becomes ``ChatResult.error``, which the planner records and moves past; a server error raises
    :class:`LanguageModelError`.
    """

    def __init__(self, handle, model_id: str):
        self.handle = handle.options(stream=True)  # LLMServer.chat is an async generator
        self.model_id = model_id

    @property
    def model_name(self) -> str:
        return self.model_id

    async def chat(self, request: ChatRequest) -> ChatResult:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        body = ChatCompletionRequest(**chat_completion_body(request, self.model_id))
        t0 = time.perf_counter()
        reply = None
        async for item in self.handle.chat.remote(body):
            reply = item[0] if isinstance(item, list) else item
            break
        seconds = time.perf_counter() - t0
        error = getattr(reply, "error", None)
        if reply is None or error is not None:
            code = int(getattr(error, "code", 0) or 0)
            message = getattr(error, "message", None) or repr(reply)
            if 400 <= code < 500:
                return ChatResult(request_id=request.request_id, text="", error=f"HTTP {code}: {message}"[:500],
                                  seconds=seconds)
            raise LanguageModelError(f"LLMServer {self.model_id!r} failed request {request.request_id!r}: "
                                     f"{message}"[:1000])
        choice = reply.choices[0]
        usage = reply.usage
        result = ChatResult(
            request_id=request.request_id,
            text=choice.message.content or "",
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=choice.finish_reason,
            seconds=seconds,
        )
        if request.json_schema is not None:
            result.parsed, result.parse_error = parse_json_reply(result.text, result.finish_reason)
        kind = request.purpose
        metrics.observe(metrics.LLM_LATENCY, seconds, kind=kind)
        metrics.inc(metrics.LLM_TOKENS, result.prompt_tokens, kind=kind, type="prompt")
        metrics.inc(metrics.LLM_TOKENS, result.completion_tokens, kind=kind, type="completion")
        return result
