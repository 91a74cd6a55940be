"""A hostile-but-fair client against the real Serve app (fake engines): names, paths, encodings, sizes, numbers, content
types and races. Every answer is 4xx with a JSON reason (or 2xx where the request is valid), never 5xx; nothing is
created outside the store root; /healthz answers within a second while a large invalid body is rejected. With a token
configured, every /v1 route refuses a missing or wrong token."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipelines.wire import CampaignAccepted, ErrorBody
from tests.http_helpers import intents, wait_done
from tests.test_serve_fake import FAKE_ENGINES, FAST_HEALTH, SEARCH, write_fake_preset

pytestmark = [pytest.mark.serve, pytest.mark.slow]

LIMITS = {"max_running_campaigns": 4, "max_body_bytes": 4 * 2**20, "max_intents": 50, "max_image_side": 256,
          "max_steps": 20, "max_images_per_campaign": 2000, "retry_after_s": 7}
TOKEN = "test-token-0123456789abcdef"


@dataclass
class HostileApp:
    url: str
    top: Path  # the folder holding the store root: nothing may appear here but the store
    store: Path


def deploy(ray_cluster, d: Path, name: str, env: dict[str, str] | None = None) -> HostileApp:
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    state, store = d / "state", d / "store"
    config = AppConfig(preset=str(write_fake_preset(d, state)), store_root=str(store), engines=FAKE_ENGINES)
    ingress = {"user_config": LIMITS, "graceful_shutdown_timeout_s": 5}
    if env:
        ingress["ray_actor_options"] = {"num_cpus": 0, "runtime_env": {"env_vars": env}}
    deployments = {"diffusion": {**FAST_HEALTH, "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05}},
                   "llm": FAST_HEALTH, "ingress": ingress}
    serve.run(compose_app(config, deployments), name=name, route_prefix=f"/{name}")
    return HostileApp(url=f"{ray_cluster['url']}/{name}", top=d, store=store)


@pytest.fixture(scope="module")
def hostile_app(ray_cluster, tmp_path_factory):
    from ray import serve

    app = deploy(ray_cluster, tmp_path_factory.mktemp("hostile"), "hostile")
    yield app
    serve.delete("hostile")


@pytest.fixture(scope="module")
def token_app(ray_cluster, tmp_path_factory):
    from ray import serve

    app = deploy(ray_cluster, tmp_path_factory.mktemp("token"), "token", env={"PROMPTBEAM_API_TOKEN": TOKEN})
    yield app
    serve.delete("token")


def valid(name: str, **kw) -> dict:
    return {"name": name, "intents": intents(1), "search": SEARCH, **kw}


def spec(**kw) -> bytes:
    return json.dumps({"intents": intents(1), **kw}).encode()


def intent_spec(**intent) -> bytes:
    return json.dumps({"intents": [{"id": "a", "text": "a cat", **intent}]}).encode()


BAD_NAMES = [".", "..", ".hidden", "a/b", "../../etc", "a\x00b", "a\n", "x" * 101, "é", "a b", "", "a\\b"]
BAD_PATH_NAMES = ["%2e%2e", "%2e", "..%2F..%2Fetc", "%00", "a%0a", ".hidden", "x" * 300, "%5C..", "a%20b", "%C3%A9"]
BAD_IMAGES = ["..%2F..%2Fmanifest.json", "%2e%2e%2fx.png", ".x.png", "a%00.png", "x.txt", "x" * 500 + ".png",
              "nope.png"]
JSON = {"content-type": "application/json"}


def corpus() -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments): requests that must each get a 4xx with a JSON reason."""
    out: list[tuple[str, str, dict]] = []
    for name in BAD_NAMES:  # campaign names take 100 characters, intent ids 128
        out.append(("POST", "/v1/campaigns", {"content": spec(name=name), "headers": JSON}))
        intent_id = "x" * 129 if name == "x" * 101 else name
        out.append(("POST", "/v1/campaigns", {"content": intent_spec(id=intent_id), "headers": JSON}))
    for name in BAD_PATH_NAMES:
        for suffix in ("", "/results", "/images/x.png"):
            out.append(("GET", f"/v1/campaigns/{name}{suffix}", {}))
        out.append(("DELETE", f"/v1/campaigns/{name}", {}))
    for image in BAD_IMAGES:
        out.append(("GET", f"/v1/campaigns/seed/images/{image}", {}))
    bodies = [
        b"\xff\xfe{\x00}\x00", b"\xc0\xaf", b'{"intents": [{"id": "a", "text": "\\udc00"}]}',
        b'{"name": "\\ud800x", "intents": [{"id": "a", "text": "a cat"}]}',
        b'{"intents_jsonl": "{\\"id\\": \\"a\\", \\"text\\": \\"\\ud83d\\"}"}',
        b"", b"null", b"[]", b'"a string"', b"{", b"[" * 50_000 + b"]" * 50_000, b'{"intents": 5}',
        b'{"intents": [], "intents": null}', b'{"intents_jsonl": "not json"}', b"{'single': 'quotes'}",
        spec(search={"guidance_scale": float("nan")}), spec(search={"rounds": 10**30}),
        spec(search={"rounds": -1}), spec(search={"rounds": 1.5}), spec(search={"rounds": "two"}),
        spec(search={"width": 7}), spec(search={"width": 8192}), spec(search={"width": 512}),
        spec(search={"steps": 0}), spec(search={"steps": 21}), spec(search={"max_images": 0}),
        spec(search={"max_images": 10**9}), spec(search={"base_seed": -1}), spec(concurrency=0),
        spec(concurrency=5000), spec(search={"unknown": 1}), spec(extra_field=True), spec(baseline="sample:2"),
        spec(preset="another"), intent_spec(text=""), intent_spec(text=" \t"), intent_spec(text="x" * 1001),
        intent_spec(tags=["t"] * 21), intent_spec(negative_prompt="blurry"), intent_spec(checks={"objects": "dog"}),
        json.dumps({"intents": intents(51)}).encode(), json.dumps({"intents": intents(2) * 2}).encode(),
        json.dumps({"intents_jsonl": "\n".join(json.dumps(i) for i in intents(51))}).encode(),
        json.dumps({"intents": intents(1), "intents_jsonl": ""}).encode(),
    ]
    out += [("POST", "/v1/campaigns", {"content": b, "headers": JSON}) for b in bodies]
    valid_body = json.dumps(valid("ctype")).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/xml", "image/png"):
        out.append(("POST", "/v1/campaigns", {"content": valid_body, "headers": {"content-type": ctype}}))
    out.append(("POST", "/v1/campaigns", {"content": b"x" * (4 * 2**20 + 1), "headers": JSON}))
    for params in ({"offset": -1}, {"limit": 0}, {"limit": "abc"}, {"offset": "1e400"}, {"limit": 10**6},
                   {"offset": "x" * 5000}):
        out.append(("GET", "/v1/campaigns/seed/results", {"params": params}))
    for method in ("PUT", "PATCH"):
        out.append((method, "/v1/campaigns", {"content": valid_body, "headers": JSON}))
    out.append(("GET", "/v1/nothing-here", {}))
    return out


def check_answer(resp: httpx.Response, allowed: set[int]) -> None:
    assert resp.status_code in allowed, (resp.request.method, str(resp.request.url)[:200], resp.status_code,
                                         resp.text[:300])
    if resp.status_code >= 400:
        assert ErrorBody.model_validate_json(resp.content).detail, resp.text[:300]
        assert len(resp.content) < 4000 and "Traceback" not in resp.text


def outside(app: HostileApp) -> list[str]:
    return sorted(p.name for p in app.top.iterdir() if p.name not in ("store", "state", "fake.yaml"))


def test_a_hostile_corpus_gets_4xx_with_reasons_and_writes_nothing_outside_the_store(hostile_app):
    with httpx.Client(base_url=hostile_app.url, timeout=60) as client:
        seed = client.post("/v1/campaigns", json=valid("seed"))
        assert seed.status_code == 202, seed.text
        wait_done(client, "seed")
        before = sorted(p.name for p in hostile_app.store.iterdir())
        requests = corpus()
        assert len(requests) >= 100
        for method, path, kw in requests:
            resp = client.request(method, path, **kw)
            check_answer(resp, set(range(400, 500)))
        assert sorted(p.name for p in hostile_app.store.iterdir()) == before == [".running", "seed"]
        assert list((hostile_app.store / ".running").iterdir()) == []  # 'seed' ended: no campaign left registered
        assert outside(hostile_app) == []
        too_many = client.get("/v1/campaigns/seed/results", params={"limit": 10**6})
        assert too_many.status_code == 422 and ErrorBody.model_validate_json(too_many.content).errors[0].field == \
            "query.limit"
        assert client.get("/healthz").status_code == 200


def test_races_admit_one_runner_per_name_and_at_most_the_limit(hostile_app):
    def post(body: dict) -> httpx.Response:
        return httpx.post(f"{hostile_app.url}/v1/campaigns", json=body, timeout=60)

    slow = {**SEARCH, "rounds": 3}
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        same = list(pool.map(post, [valid("same", intents=intents(8), search=slow)] * 6))
        codes = sorted(r.status_code for r in same)
        assert codes == [202, 409, 409, 409, 409, 409], [r.text[:200] for r in same]
        twins = list(pool.map(post, [valid("twin", intents=intents(8), search=slow),
                                     valid("twin", intents=intents(8, prefix="j"), search=slow)]))
        assert sorted(r.status_code for r in twins) == [202, 409]
        distinct = list(pool.map(post, [valid(f"d{k}", intents=intents(8), search=slow) for k in range(5)]))
    for r in same + twins + distinct:
        check_answer(r, {202, 409, 429})
    limited = [r for r in distinct if r.status_code == 429]
    assert len([r for r in distinct if r.status_code == 202]) <= 4 and limited
    assert all(r.headers["retry-after"] == "7" for r in limited)
    with httpx.Client(base_url=hostile_app.url, timeout=60) as client:
        accepted = [CampaignAccepted.model_validate_json(r.content).id for r in same + twins + distinct
                    if r.status_code == 202]
        for cid in accepted:
            assert wait_done(client, cid, timeout=300).state == "done"
    assert outside(hostile_app) == []


def test_healthz_answers_within_a_second_while_a_large_invalid_body_is_rejected(hostile_app):
    # just under the body limit and invalid deep inside: parsed in full, then refused by the intent limit
    body = json.dumps({"intents": [{"id": f"i{k}", "text": "an apple " * 40} for k in range(9000)]}).encode()
    assert 3 * 2**20 < len(body) < 4 * 2**20
    latencies: list[float] = []
    answers: list[httpx.Response] = []
    stop = threading.Event()

    def submit_many():
        with httpx.Client(base_url=hostile_app.url, timeout=120) as client:
            for _ in range(3):
                answers.append(client.post("/v1/campaigns", content=body, headers=JSON))
                answers.append(client.post("/v1/campaigns", content=b"[" * (4 * 2**20 - 10), headers=JSON))
        stop.set()

    worker = threading.Thread(target=submit_many)
    worker.start()
    with httpx.Client(base_url=hostile_app.url, timeout=10) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.05)
    worker.join()
    for resp in answers:
        check_answer(resp, {400, 422})
    assert len(latencies) >= 3 and max(latencies) < 1.0, latencies


def test_with_a_token_every_v1_route_refuses_a_missing_or_wrong_one(token_app):
    routes = [("POST", "/v1/campaigns", {"json": valid("authed")}), ("GET", "/v1/campaigns/authed", {}),
              ("GET", "/v1/campaigns/authed/results", {}), ("GET", "/v1/campaigns/authed/images/x.png", {}),
              ("DELETE", "/v1/campaigns/authed", {}), ("GET", "/v1/campaigns", {})]
    with httpx.Client(base_url=token_app.url, timeout=60) as client:
        for method, path, kw in routes:
            for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": TOKEN}):
                resp = client.request(method, path, headers=headers, **kw)
                assert resp.status_code == 401, (method, path, headers, resp.text)
                check_answer(resp, {401})
        assert not (token_app.store / "authed").exists()
        good = {"authorization": f"Bearer {TOKEN}"}
        for method, path, kw in routes:  # in this order: submit, status, results, a missing image, cancel
            resp = client.request(method, path, headers=good, **kw)
            assert resp.status_code in {202, 200, 404, 409}, (method, path, resp.text)
            assert resp.status_code != 401
        assert client.get("/healthz").status_code == 200  # liveness needs no token
        # the served OpenAPI document names the scheme (FastAPI's HTTPBearer) on the /v1 routes
        schema = client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        assert schema["paths"]["/v1/campaigns"]["get"]["security"] == [{"bearerAuth": []}]
