"""Hostile input and isolation without a Ray cluster: safe names and store paths, reads that create nothing, the HTTP
edge (body limit, parsing, JSON errors that never echo the input), bearer auth, operator bounds, campaigns that share
intent ids in one render batch, a bad item in a batch, and a runner that cannot start. The same edge runs under Serve in
tests/test_hostile.py."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from agents.config import SearchConfig
from agents.messages import ChatMessage, ChatRequest, ChatResult, Intent, RenderRequest
from pipelines.app import IngressConfig, check_limits
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec
from pipelines.server.auth import AuthSettings, BearerAuth, check_bind
from pipelines.server.http import ApiError, install_error_handlers, parse_spec, read_body
from pipelines.store import CampaignStore, RunningRegistry, UnsafeName, campaign_store
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from pipelines.wire import CampaignState, ErrorBody
from serving.clients import RetryPolicy, ServeLanguageModel, ServeRenderer
from serving.config import DiffusionEngineConfig
from serving.deployments import DiffusionDeployment
from tests.fake_engines import FakeDiffusionEngine

UNSAFE = [".", "..", ".hidden", "a/b", "../x", "a\\b", "a\x00b", "a\n", "", "x" * 129, "é", "a b"]
SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "max_images": 12}


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_as_intent_ids_campaign_names_and_store_folders(tmp_path, name):
    with pytest.raises(ValidationError):
        Intent(id=name, text="a cat")
    with pytest.raises(ValidationError):
        CampaignSpec(name=name, intents=[Intent(id="a", text="a cat")])
    with pytest.raises(UnsafeName):
        campaign_store(str(tmp_path), name)
    assert tree(tmp_path) == []


def test_a_store_folder_that_links_outside_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "escape").symlink_to(outside)
    with pytest.raises(UnsafeName, match="outside the store root"):
        campaign_store(str(root), "escape")
    assert campaign_store(str(root), "a..b").root == str(root / "a..b")  # dots inside a name are only dots


def test_reads_of_a_missing_campaign_create_nothing(tmp_path):
    store = campaign_store(str(tmp_path), "nope")
    assert store.read_manifest() is None and store.read_status() is None and store.done_intents() == set()
    assert list(store.iter_parts(["a"])) == [] and list(store.iter_outcomes(["a"])) == []
    for name in ("x.png", "..png", ".x.png", "a/b.png", "a\x00.png", "x.png\n", "x.txt"):
        with pytest.raises(FileNotFoundError):
            store.read_image(name)
    assert tree(tmp_path) == []


def test_image_names_of_every_valid_intent_id_can_be_read_back(tmp_path):
    store = CampaignStore(str(tmp_path))
    store.create()
    for intent_id in ("a", "_x", "a.b-c", "9" * 128):
        path = store.write_image(f"{intent_id}/r1/p0/s0", b"png")
        assert store.read_image(path.split("/")[1]) == b"png"


# -- the HTTP edge ------------------------------------------------------------------------------------------------


def edge_app(max_bytes: int = 4096, max_intents: int = 5, token: str | None = None) -> FastAPI:
    """The ingress's edge (body limit, parser, error handlers, auth) on a plain FastAPI app."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/spec", dependencies=[Depends(BearerAuth(token))])
    async def submit(request: Request) -> dict:
        body = await read_body(request, max_bytes)
        spec = await asyncio.to_thread(parse_spec, body, request.headers.get("content-type"), max_intents)
        return {"intents": len(spec.intents)}

    @app.get("/v1/page", dependencies=[Depends(BearerAuth(token))])
    async def page(offset: int = 0) -> dict:
        return {"offset": offset}

    return app


def error(resp: httpx.Response) -> ErrorBody:
    return ErrorBody.model_validate_json(resp.content)


BIG_TEXT = "z" * 5000


@pytest.mark.parametrize(
    "content,headers,code,reason",
    [
        (b'{"intents": [{"id": "a", "text": "a cat"}]', {}, 400, "not valid JSON"),
        (b"\xff\xfe{}", {}, 400, "not UTF-8"),
        (b'{"intents": [{"id": "a", "text": "\\ud800 cat"}]}', {}, 400, "lone UTF-16 surrogate"),
        (b"[1, 2]", {}, 422, "JSON object"),
        (b"[" * 100_000, {}, 413, "limit"),
        (json.dumps({"intents": [{"id": f"i{k}", "text": "a"} for k in range(6)]}).encode(), {}, 422, "at most 5"),
        (json.dumps({"intents_jsonl": "\n".join(json.dumps({"id": f"i{k}", "text": "a"}) for k in range(6))}).encode(),
         {}, 422, "at most 5"),
        (json.dumps({"intents": [{"id": "..", "text": "a cat"}]}).encode(), {}, 422, "intents.0.id"),
        (json.dumps({"intents": [{"id": "a", "text": "a cat"}], "name": "../up"}).encode(), {}, 422, "name"),
        (json.dumps({"intents": [{"id": "a", "text": BIG_TEXT[:1500]}]}).encode(), {}, 422, "intents.0.text"),
        (b'{"intents": [{"id": "a", "text": "a cat"}]}', {"content-type": "text/plain"}, 415, "application/json"),
        (b"{}", {"content-length": "abc"}, 400, "Content-Length"),
    ],
)
def test_the_edge_answers_bad_bodies_with_a_json_reason_and_never_echoes_them(content, headers, code, reason):
    with TestClient(edge_app()) as client:
        resp = client.post("/v1/spec", content=content, headers={"content-type": "application/json", **headers})
    assert resp.status_code == code, resp.text
    body = error(resp)
    assert reason in resp.text and "z" * 100 not in resp.text and len(resp.content) < 2000
    if code == 422:
        assert body.errors and body.errors[0].field in body.detail


@pytest.mark.parametrize("text,reason", [
    ("\u200b\u200d\u2060", "no letter, digit or symbol"),  # zero-width space, joiner, word joiner
    ("\ufeff", "no letter, digit or symbol"),  # a byte-order mark
    ("\u00ad\u200e", "no letter, digit or symbol"),  # soft hyphen, left-to-right mark
    ("\u3000\u00a0", "non-whitespace"),  # ideographic and no-break spaces
    ("\u0301\u0308", "no letter, digit or symbol"),  # combining marks with nothing to combine with
    (" ...!?;: ", "no letter, digit or symbol"),  # punctuation only
    ("\uff0e\uff0e", "no letter, digit or symbol"),  # fullwidth full stops: NFKC makes them '..'
    ("a cat\x1b[2J", "control character U+001B"),  # an escape sequence for whoever prints it
    ("a\x00cat", "control character U+0000"),
])
def test_an_intent_with_nothing_to_draw_is_422_naming_its_text(text, reason):
    body = json.dumps({"intents": [{"id": "a", "text": "a cat"}, {"id": "b", "text": text}]}).encode()
    with TestClient(edge_app()) as client:
        resp = client.post("/v1/spec", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert error(resp).errors[0].field == "intents.1.text" and reason in resp.text


@pytest.mark.parametrize("text", ["a", "7", "\U0001f431", "\u732b", "a cat\u200d", "\u200ba dog", "a\tcat\n"])
def test_one_drawable_character_is_enough(text):
    """Decided on purpose: one letter, digit or emoji is something a model can draw; format characters inside
    drawable text stay (emoji sequences need the zero-width joiner); tab and newline are whitespace, not controls."""
    body = json.dumps({"intents": [{"id": "a", "text": text}]}).encode()
    with TestClient(edge_app()) as client:
        resp = client.post("/v1/spec", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text


def test_the_edge_accepts_a_valid_spec_and_an_escaped_surrogate_pair():
    with TestClient(edge_app()) as client:
        resp = client.post("/v1/spec", content=b'{"intents": [{"id": "a", "text": "a cat \\ud83d\\ude00"}]}',
                           headers={"content-type": "application/json"})
        assert resp.status_code == 200 and resp.json() == {"intents": 1}
        bad_query = client.get("/v1/page", params={"offset": "x" * 5000})
        assert bad_query.status_code == 422 and error(bad_query).errors[0].field == "query.offset"
        assert "x" * 100 not in bad_query.text


def test_a_streamed_body_without_length_is_cut_at_the_limit():
    def chunks():
        for _ in range(100):
            yield b" " * 1000

    with TestClient(edge_app(max_bytes=10_000)) as client:
        resp = client.post("/v1/spec", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "10000" in error(resp).detail


# -- auth ---------------------------------------------------------------------------------------------------------

TOKEN = "s3cret-token-0123456789"


def test_with_a_token_every_v1_route_needs_it():
    with TestClient(edge_app(token=TOKEN)) as client:
        for method, path, kw in (("GET", "/v1/page", {}), ("POST", "/v1/spec", {"content": b"{}"})):
            for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": TOKEN},
                            {"authorization": f"Basic {TOKEN}"}):
                resp = client.request(method, path, headers=headers, **kw)
                assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer", (path, headers)
            ok = client.request(method, path, headers={"authorization": f"Bearer {TOKEN}"}, **kw)
            assert ok.status_code != 401


def test_the_token_comes_from_the_environment_or_a_file_and_is_never_defaulted(tmp_path, monkeypatch):
    for var in ("PROMPTBEAM_API_TOKEN", "PROMPTBEAM_API_TOKEN_FILE", "PROMPTBEAM_ALLOW_UNAUTHENTICATED"):
        monkeypatch.delenv(var, raising=False)
    assert AuthSettings().token() is None
    monkeypatch.setenv("PROMPTBEAM_API_TOKEN", TOKEN)
    assert AuthSettings().token() == TOKEN and TOKEN not in repr(AuthSettings())
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("PROMPTBEAM_API_TOKEN_FILE", str(secret))
    with pytest.raises(ValidationError, match="not both"):
        AuthSettings()
    monkeypatch.delenv("PROMPTBEAM_API_TOKEN")
    assert AuthSettings().token() == TOKEN
    secret.write_text("short")
    with pytest.raises(ValueError, match="at least 16"):
        AuthSettings().token()


def test_no_token_is_refused_on_a_public_address_unless_allowed(monkeypatch):
    monkeypatch.delenv("PROMPTBEAM_ALLOW_UNAUTHENTICATED", raising=False)
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, None, AuthSettings())
    check_bind("0.0.0.0", TOKEN, AuthSettings())
    with pytest.raises(ValueError, match="PROMPTBEAM_API_TOKEN"):
        check_bind("0.0.0.0", None, AuthSettings())
    monkeypatch.setenv("PROMPTBEAM_ALLOW_UNAUTHENTICATED", "true")
    check_bind("0.0.0.0", None, AuthSettings())


# -- operator bounds ----------------------------------------------------------------------------------------------


def test_operator_bounds_name_the_field_over_them():
    limits = IngressConfig(max_image_side=256, max_steps=8, max_images_per_campaign=100)
    check_limits(limits, SearchConfig(width=256, height=256, steps=8, max_images=10), intents=5, baseline_share=1.0)
    for search, intents, field in ((SearchConfig(width=512, height=256), 1, "search.width"),
                                   (SearchConfig(steps=9), 1, "search.steps"),
                                   (SearchConfig(max_images=10), 6, "search.max_images")):
        with pytest.raises(ApiError) as err:
            check_limits(limits, search, intents, 1.0)
        assert err.value.status_code == 422 and err.value.errors[0].field == field


# -- isolation ----------------------------------------------------------------------------------------------------


@pytest.fixture
def batching_outside_serve(monkeypatch):
    """@serve.batch outside a replica: only its warning about max_ongoing_requests asks for a replica context. Its
    queue is one per decorated method (a replica holds one instance) and bound to the first event loop that used it:
    each test starts with a fresh one."""
    from ray.serve.batching import _BatchQueue

    monkeypatch.setattr(_BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    monkeypatch.setattr(DiffusionDeployment._render_batch.set_max_batch_size.__self__, "_queue", None)


class BatchingRenderer:
    """A renderer port over a diffusion deployment (its real @serve.batch), one call per image, as ServeRenderer."""

    def __init__(self, deployment: DiffusionDeployment):
        self.deployment = deployment
        self.fake = FakeRenderer()

    async def render(self, requests):
        return list(await asyncio.gather(*(self.deployment.render(r) for r in requests)))

    async def info(self):
        return await self.fake.info()

    async def count_tokens(self, prompts):
        return await self.fake.count_tokens(prompts)


@pytest.fixture
def deployment(tmp_path, batching_outside_serve):
    """A diffusion deployment over the fake engine, shut down and collected outside any event loop afterwards (its
    ``__del__`` would otherwise hand a shutdown coroutine to whichever test's loop is running)."""
    made = DiffusionDeployment(DiffusionEngineConfig(model=str(tmp_path / "state"), max_batch_size=16),
                               FakeDiffusionEngine)
    yield made
    asyncio.run(made.shutdown())
    del made
    gc.collect()


def test_campaigns_whose_intents_share_ids_share_render_batches_without_clashing(tmp_path, deployment):
    deployment.reconfigure({"max_batch_size": 16, "batch_wait_timeout_s": 0.05})

    async def main():
        renderer = BatchingRenderer(deployment)
        runners = []
        for c in range(3):
            spec = CampaignSpec(name=f"c{c}", intents=[Intent(id=f"i{k}", text=f"a red apple {k}") for k in range(3)],
                                search=SEARCH)
            runners.append(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(FakeRenderer()),
                                          CampaignStore(str(tmp_path / f"c{c}")), concurrency=3))
        return await asyncio.gather(*(r.run() for r in runners))

    statuses = asyncio.run(main())
    assert [(s.state, s.intents_done, s.intents_failed) for s in statuses] == [(CampaignState.done, 3, 0)] * 3
    assert max(deployment.engine._renderer_batch_sizes) > 4  # campaigns really met in one batch


def test_one_bad_request_fails_alone_in_its_batch(deployment):
    deployment.engine._renderer.fail_on = "poison"

    async def main():
        requests = [RenderRequest(request_id=f"r{k}" + ("-poison" if k == 2 else ""), prompt="a cat", seed=k)
                    for k in range(4)]
        return await asyncio.gather(*(deployment.render(r) for r in requests), return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[2], ConnectionError)
    assert [r.request_id for k, r in enumerate(results) if k != 2] == ["r0", "r1", "r3"]
    assert deployment.engine._renderer_batch_sizes[0] == 4  # they were one batch first


def test_a_runner_that_cannot_start_reads_failed_with_its_reason(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    spec = CampaignSpec(intents=[Intent(id="a", text="a cat")], search=SEARCH)
    renderer = FakeRenderer()
    runner = CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(renderer), CampaignStore(str(tmp_path)))
    with pytest.raises(ValueError):
        asyncio.run(runner.run())
    assert runner.status.state == CampaignState.failed and "could not start" in runner.status.errors[0]
    assert runner.status.finished_at is not None
    assert os.listdir(tmp_path) == ["manifest.json"]


# -- retries ------------------------------------------------------------------------------------------------------


class ActorDiedError(RuntimeError):
    """Named as Ray's: what a call to a replica that was killed raises."""


class FlakyMethod:
    """A handle method whose first ``failures`` calls raise ``error``; later ones answer with ``answer(arg)``."""

    def __init__(self, failures: int, error: Exception, answer):
        self.failures, self.error, self.answer, self.calls = failures, error, answer, 0

    def remote(self, arg):
        self.calls += 1
        failing = self.calls <= self.failures

        async def response():
            if failing:
                raise self.error
            return await self.answer(arg)

        return response()


class FlakyHandle:
    def __init__(self, render: FlakyMethod | None = None, chat: FlakyMethod | None = None):
        self.render, self.chat = render, chat


FAST_RETRY = RetryPolicy(attempts=4, backoff_s=0.01, max_backoff_s=0.02)


def test_infrastructure_errors_are_retried_until_the_replacement_answers():
    fake = FakeRenderer()

    async def one(request):
        return (await fake.render([request]))[0]

    handle = FlakyHandle(render=FlakyMethod(2, ActorDiedError("replica died"), one))
    renderer = ServeRenderer(handle, FAST_RETRY)
    (result,) = asyncio.run(renderer.render([RenderRequest(request_id="a/r0/p0/s0", prompt="a cat", seed=1)]))
    assert result.request_id == "a/r0/p0/s0" and handle.render.calls == 3

    async def reply(request):
        return ChatResult(request_id=request.request_id, text="ok")

    chat_handle = FlakyHandle(chat=FlakyMethod(3, ConnectionError("back-pressure"), reply))
    request = ChatRequest(request_id="x", messages=[ChatMessage(role="user", content="hi")])
    assert asyncio.run(ServeLanguageModel(chat_handle, FAST_RETRY).chat(request)).request_id == "x"
    assert chat_handle.chat.calls == 4


def test_retries_are_bounded_and_other_errors_are_not_retried():
    async def never(request):
        raise AssertionError("not reached")

    dead = FlakyHandle(render=FlakyMethod(99, ActorDiedError("still dead"), never))
    with pytest.raises(ActorDiedError):
        asyncio.run(ServeRenderer(dead, FAST_RETRY).render([RenderRequest(request_id="a", prompt="a cat", seed=1)]))
    assert dead.render.calls == FAST_RETRY.attempts
    bad = FlakyHandle(render=FlakyMethod(99, ValueError("request ids must be unique"), never))
    with pytest.raises(ValueError):
        asyncio.run(ServeRenderer(bad, FAST_RETRY).render([RenderRequest(request_id="a", prompt="a cat", seed=1)]))
    assert bad.render.calls == 1
    assert [RetryPolicy().delay(k) for k in (0, 1, 2, 5, 9)] == [1, 2, 4, 30, 30]


# -- checkpoints --------------------------------------------------------------------------------------------------


def test_an_interrupted_intent_resumes_from_its_last_round_with_the_same_result(tmp_path):
    """Round 1 of intent i1 fails (its renderer died): the intent is not committed, its round-0 checkpoint is. The
    resumed run renders only round 1 for it and ends with what an uninterrupted run gets."""
    s = CampaignSpec(intents=[Intent(id=f"i{k}", text=f"a red apple number {k}") for k in range(3)], search=SEARCH,
                     concurrency=3)
    flaky = FakeRenderer()
    flaky.fail_on = "i1/r1/"
    store = CampaignStore(str(tmp_path / "a"))
    first = asyncio.run(CampaignRunner(s, s.search_config(), flaky, ScriptedLLM(flaky), store).run())
    assert (first.intents_done, first.intents_failed) == (2, 1)
    assert store.read_checkpoint("i1").rounds_done == 1 and store.read_checkpoint("i0") is None
    saved = store.read_checkpoint("i1")
    round0 = {c.id for arm in (saved.search, saved.baseline) if arm is not None for c in arm.candidates}

    renderer = FakeRenderer()
    second = asyncio.run(CampaignRunner(s, s.search_config(), renderer, ScriptedLLM(renderer), store).run())
    assert (second.state, second.intents_done, second.intents_skipped) == (CampaignState.done, 3, 2)
    rendered = [r.request_id for call in renderer.calls for r in call]
    again = [rid for rid in rendered if rid.startswith("i1/")]  # request ids are the planner's own (no prefix)
    assert again and round0 and not round0 & set(again)  # round 0 not redone
    assert store.read_checkpoint("i1") is None

    clean = FakeRenderer()
    reference = CampaignStore(str(tmp_path / "b"))
    asyncio.run(CampaignRunner(s, s.search_config(), clean, ScriptedLLM(clean), reference).run())
    resumed = {o.intent_id: o for o in store.iter_outcomes(["i0", "i1", "i2"])}
    uninterrupted = {o.intent_id: o for o in reference.iter_outcomes(["i0", "i1", "i2"])}
    assert resumed["i1"].resumed_from_round == 1 and resumed["i0"].resumed_from_round is None
    assert resumed["i1"].search.best_score == uninterrupted["i1"].search.best_score
    assert resumed["i1"].search.best_prompt == uninterrupted["i1"].search.best_prompt


def test_the_running_registry_lives_in_the_store_root_beside_the_campaigns(tmp_path):
    registry = RunningRegistry(str(tmp_path))
    assert registry.entries() == {} and not registry.contains("a") and tree(tmp_path) == []  # reads create nothing
    spec = CampaignSpec(name="a", intents=[Intent(id="x", text="a cat")])
    registry.add("a", spec.model_dump_json().encode())
    assert registry.contains("a")
    assert {k: CampaignSpec.model_validate_json(v) for k, v in registry.entries().items()} == {"a": spec}
    registry.remove("a")
    registry.remove("a")  # idempotent
    assert registry.entries() == {} and tree(tmp_path) == [".running"]
