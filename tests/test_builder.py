"""The builder is the one place that chooses the LLM backend: the deployment that serves the preset's LLM and the
client the ingress wraps its handle in come from one decision (no Serve started: the deployments are only built)."""

from __future__ import annotations

import functools

import pytest

from pipelines.server.builder import llm_backend
from pipelines.server.configs import AppConfig
from serving.clients import ServeLanguageModel


def test_the_engine_backend_and_no_backend_when_every_role_has_an_endpoint(tmp_path):
    engine = AppConfig(preset="tiny", tiny_dir=str(tmp_path))
    deployment, client = llm_backend(engine, engine.resolve(), None)
    assert deployment._bound_deployment.name == "llm" and client is ServeLanguageModel

    url = "http://127.0.0.1:9/v1"
    external = AppConfig(preset="tiny", tiny_dir=str(tmp_path),
                         endpoints={"rewriter": {"base_url": url, "model": "m"}, "critic": {"base_url": url, "model": "v"}})
    assert llm_backend(external, external.resolve(), None)[0] is None  # no LLM served


@pytest.mark.slow  # building Ray Serve LLM's deployment imports vLLM (about a minute here)
def test_the_ray_serve_llm_backend_comes_with_its_client(tmp_path, ray_left_as_found):
    from serving.serve_llm import ServeLLMLanguageModel

    config = AppConfig(preset="tiny", tiny_dir=str(tmp_path), llm_backend="ray_serve_llm")
    preset = config.resolve()
    deployment, client = llm_backend(config, preset, None)
    assert deployment is not None
    assert isinstance(client, functools.partial) and client.func is ServeLLMLanguageModel
    assert client.keywords == {"model_id": preset.llm.model}

    class Handle:
        def options(self, **kw):
            return self

    assert client(Handle()).model_name == preset.llm.model
