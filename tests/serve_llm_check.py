"""Run by tests/test_serve_llm.py in its own process: Ray Serve LLM's LLMServer needs a Ray with 4 logical CPUs (its
placement group takes 2), while the session's shared test cluster has 2. Prints one JSON line of findings.

    python -m tests.serve_llm_check TMPDIR
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from pathlib import Path


def main(tmp: Path) -> dict:
    import httpx
    import ray
    from PIL import Image
    from ray import serve

    from agents.messages import ChatMessage, ChatRequest, ImagePart, TextPart
    from pipelines.app import AppConfig, compose_app
    from pipelines.wire import CampaignStatus
    from serving.serve_llm import ServeLLMLanguageModel
    from serving.tiny_models import make_tiny_models
    from pipelines.server.local import free_port

    tiny = make_tiny_models(tmp / "tiny")
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    findings: dict = {}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = AppConfig(preset="tiny", tiny_dir=str(tiny["diffusion"].parent), store_root=str(tmp / "store"),
                           llm_backend="ray_serve_llm")
        t0 = time.time()
        serve.run(compose_app(config, {"diffusion": {"ray_actor_options": {"num_cpus": 0}},
                                       "ingress": {"ray_actor_options": {"num_cpus": 0}}}), name="pb", route_prefix="/")
        findings["ready_s"] = round(time.time() - t0, 1)
        status = serve.status().applications["pb"]
        findings["deployments"] = sorted(status.deployments)

        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
        # Guided JSON must hold whatever the random model prefers: the longest answer the schema allows,
        # {"colour":"xxxxxxxx"}, is 21 characters, so max_tokens 64 always leaves room to close it (a reply cut by
        # max_tokens would be a parse error that says nothing about the grammar).
        schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 8}},
                  "required": ["colour"], "additionalProperties": False}

        def request(rid: str) -> ChatRequest:
            return ChatRequest(request_id=rid, purpose="critique", json_schema=schema, seed=5, max_tokens=64,
                               messages=[ChatMessage(role="user", content=[ImagePart.of(buf.getvalue()),
                                                                            TextPart(text="Which colour is it?")])])

        async def chats():
            llm = ServeLLMLanguageModel(serve.get_deployment_handle("llm", app_name="pb"), str(tiny["vlm"]))
            first = await llm.chat(request("a"))
            second = await llm.chat(request("b"))
            long = await llm.chat(ChatRequest(request_id="long", messages=[ChatMessage(role="user",
                                                                                    content="word " * 6000)]))
            return first, second, long

        first, second, long = asyncio.run(chats())
        findings["same_seed_same_text"] = first.text == second.text
        findings["first"], findings["too_long"] = first.model_dump(mode="json"), long.model_dump(mode="json")

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            body = {"name": "servellm", "intents": [{"id": "i0", "text": "a red apple"}],
                    "search": {"rounds": 1, "max_images": 6, "steps": 2}}
            resp = client.post("/v1/campaigns", json=body)
            findings["submit_status"], findings["submit_reply"] = resp.status_code, resp.text[:2000]
            deadline = time.time() + 300
            while resp.status_code == 202 and time.time() < deadline:
                status = CampaignStatus.model_validate_json(client.get("/v1/campaigns/servellm").content)
                findings["campaign_status"] = status.model_dump(mode="json")
                if status.state != "running":
                    break
                time.sleep(1)
    finally:
        serve.shutdown()
        ray.shutdown()
    return findings


if __name__ == "__main__":
    print("FINDINGS " + json.dumps(main(Path(sys.argv[1])), default=str), flush=True)
