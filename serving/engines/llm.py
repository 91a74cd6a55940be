"""LLMEngine: vLLM's async engine for chat with optional images and JSON-schema-guided output."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid

from agents.messages import ChatMessage, ChatRequest, ChatResult, ImagePart
from serving.config import LLMEngineConfig
from serving.engines.common import ModelLoadError, looks_local

logger = logging.getLogger(__name__)


def _hf_messages(messages: list[ChatMessage]) -> tuple[list[dict], list]:
    """Chat messages -> (HF chat-template messages, PIL images in order of appearance)."""
    from PIL import Image

    out, images = [], []
    for m in messages:
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        parts = []
        for p in m.content:
            if isinstance(p, ImagePart):
                images.append(Image.open(io.BytesIO(p.data)).convert("RGB"))
                parts.append({"type": "image"})
            else:
                parts.append({"type": "text", "text": p.text})
        out.append({"role": m.role, "content": parts})
    return out, images


class LLMEngine:
    """A vLLM ``AsyncLLM`` with a chat front: apply the model's chat template, attach images as multi-modal data,
    constrain the output with a JSON schema (xgrammar), return text, parsed JSON and token counts.

    Construct inside the event loop that will call :meth:`chat`; call :meth:`shutdown` when done.
    """

    def __init__(self, config: LLMEngineConfig, stat_loggers: list | None = None):
        """``stat_loggers``: vLLM stat logger classes (the Serve deployment passes vLLM's Ray logger)."""
        self.config = config
        model = os.path.expanduser(config.model)
        if looks_local(config.model) and not os.path.isdir(model):
            raise ModelLoadError(f"LLM model directory {config.model!r} does not exist")
        # CPU without torchvision: let vision-language processors load (no-op where torchvision works).
        from serving.compat.torchvision_shim import ensure_installed

        ensure_installed()
        from vllm import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=model,
            max_model_len=config.max_model_len,
            max_num_seqs=config.max_num_seqs,
            kv_cache_memory_bytes=config.kv_cache_memory_bytes,
            gpu_memory_utilization=config.gpu_memory_utilization,
            dtype=config.dtype,
            enforce_eager=config.enforce_eager,
            seed=config.seed,
            tensor_parallel_size=config.tensor_parallel_size,
            limit_mm_per_prompt={"image": config.max_images_per_prompt, "video": 0}
            if config.max_images_per_prompt
            else None,
            # xgrammar with no free whitespace: a weak model cannot stall on endless blanks inside the JSON.
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
            disable_log_stats=False,
            **config.prefill_args(on_cpu=current_platform.is_cpu()),
        )
        t0 = time.perf_counter()
        try:
            self.engine = AsyncLLM.from_engine_args(args, stat_loggers=stat_loggers)
        except Exception as exc:
            if "does not appear to have" in str(exc) or isinstance(exc, OSError):
                raise ModelLoadError(f"could not load LLM {config.model!r}: {exc}") from exc
            raise
        # vLLM already loaded the tokenizer (and its chat template): use that one rather than load it again.
        self.tokenizer = self.engine.tokenizer
        self.load_seconds = time.perf_counter() - t0
        logger.info("vLLM engine for %s ready in %.1fs", config.model, self.load_seconds)

    @property
    def model_name(self) -> str:
        return self.config.model

    def render_prompt(self, request: ChatRequest) -> tuple[str, list]:
        """The exact text the model sees (chat template applied) and the images it gets."""
        hf_messages, images = _hf_messages(request.messages)
        if len(images) > self.config.max_images_per_prompt:
            raise ValueError(
                f"request {request.request_id!r} has {len(images)} images but max_images_per_prompt is "
                f"{self.config.max_images_per_prompt}"
            )
        text = self.tokenizer.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
        return text, images

    async def chat(self, request: ChatRequest) -> ChatResult:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        text, images = self.render_prompt(request)
        prompt: dict = {"prompt": text}
        if images:
            prompt["multi_modal_data"] = {"image": images}
        params = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            structured_outputs=StructuredOutputsParams(json=request.json_schema) if request.json_schema else None,
        )
        from vllm.exceptions import VLLMValidationError

        t0 = time.perf_counter()
        final = None
        try:
            # vLLM needs request ids unique among in-flight requests; callers' ids may repeat across retries.
            async for out in self.engine.generate(prompt, params, f"{request.request_id}-{uuid.uuid4().hex[:8]}"):
                final = out
        except VLLMValidationError as exc:  # e.g. longer than the context: the request's fault, not the server's
            return ChatResult(request_id=request.request_id, text="", error=str(exc)[:500],
                              seconds=time.perf_counter() - t0)
        assert final is not None
        completion = final.outputs[0]
        result = ChatResult(
            request_id=request.request_id,
            text=completion.text,
            prompt_tokens=len(final.prompt_token_ids or []),
            completion_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason,
            seconds=time.perf_counter() - t0,
        )
        if request.json_schema is not None:
            try:
                # strict=False: models emit raw tabs/newlines inside strings, which JSON forbids but means no harm
                result.parsed = json.loads(completion.text, strict=False)
            except json.JSONDecodeError as exc:
                result.parse_error = f"invalid JSON ({exc.msg} at char {exc.pos}, finish_reason={completion.finish_reason})"
        return result

    def shutdown(self) -> None:
        """Stop the engine core processes. Idempotent."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.shutdown()

    async def check_health(self) -> None:
        """Raises if the engine cannot serve: shut down, or vLLM's engine core dead (``EngineDeadError``). Serve's
        health check calls this."""
        if getattr(self, "engine", None) is None:
            raise RuntimeError(f"LLM engine for {self.config.model!r} is shut down")
        await self.engine.check_health()
