"""Soak: 1,000 intents through the Serve app with zero-cost fake engines, searched on a planner worker (the cluster
shape: the ingress admits, hands out and folds), at 64² and at 512² (there each image a ~790 KB PNG the renderer writes
to the store itself and a small critic copy, as heavy as a real render's bytes; ~4,000 images, ~3 GB written). While it runs, a sampler reads the campaign's status every
0.25 s (latency and HTTP code) and the RSS of the ingress, planner and model replica processes; midway the
campaign is cancelled and resubmitted (which resumes it). Checked: every process's memory stays within ±10% of its
level after warm-up, status p95 < 200 ms, no 5xx, and every intent once in results (every candidate once in lineage).
The figures are printed."""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from collections import Counter

import httpx
import psutil
import pytest

from pipelines.store import CampaignStore
from pipelines.wire import CampaignStatus
from tests.http_helpers import intents
from tests.store_checks import assert_each_intent_once
from tests.test_serve_fake import FAKE_ENGINES, FAST_HEALTH, write_fake_preset

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.serve]

APP = "soak"
N = 1000
SEARCH = {"beam_width": 1, "candidates_per_beam": 2, "rounds": 1, "seeds_per_prompt": 1, "max_images": 4}
SIDES = [64, 512]
WARM_UP = 0.2  # memory is compared from the point 20% of the intents are done
CANCEL_AT = 0.5


@pytest.fixture(scope="module")
def soak_app(ray_cluster, tmp_path_factory):
    from ray import serve

    from pipelines.app import AppConfig, compose_app

    d = tmp_path_factory.mktemp("soak")
    state, store = d / "state", d / "store"
    config = AppConfig(preset=str(write_fake_preset(d, state)), store_root=str(store), engines=FAKE_ENGINES,
                       planner_workers=True)
    one = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 1}
    deployments = {"diffusion": {**FAST_HEALTH, "user_config": {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}},
                   "llm": FAST_HEALTH, "planner": {**FAST_HEALTH, "autoscaling_config": one}}
    serve.run(compose_app(config, deployments), name=APP, route_prefix=f"/{APP}")
    yield ray_cluster["url"] + f"/{APP}", store
    serve.delete(APP)


def replica_processes() -> dict[str, psutil.Process]:
    from ray.util.state import list_actors

    out = {}
    for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000):
        if a.class_name.startswith(f"ServeReplica:{APP}:"):
            out[a.class_name.rsplit(":", 1)[1]] = psutil.Process(a.pid)
    return out


class Sampler(threading.Thread):
    """Every ``every_s``: GET the status (latency, code, intents done) and each process's RSS."""

    def __init__(self, url: str, cid: str, processes: dict[str, psutil.Process], every_s: float = 0.25):
        super().__init__(daemon=True)
        self.url, self.cid, self.processes, self.every_s = url, cid, processes, every_s
        self.latencies: list[float] = []
        self.codes: Counter[int] = Counter()
        self.rss: list[tuple[int, dict[str, int]]] = []  # (intents done, {process: bytes})
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                resp = client.get(f"/v1/campaigns/{self.cid}")
                self.latencies.append(time.perf_counter() - t0)
                self.codes[resp.status_code] += 1
                if resp.status_code == 200:
                    done = CampaignStatus.model_validate_json(resp.content).intents_finished
                    self.rss.append((done, {k: p.memory_info().rss for k, p in self.processes.items()}))
                self.stop.wait(self.every_s)


@pytest.mark.parametrize("side", SIDES)
def test_a_thousand_intents_keep_memory_flat_and_status_fast(soak_app, side):
    url, store_root = soak_app
    cid = f"soak-{side}"
    state = store_root.parent / "state"
    state.mkdir(exist_ok=True)
    realistic = state / "realistic_images"  # the fake renderer's images as heavy as real ones (tests/fake_engines.py)
    if side > 64:
        realistic.touch()
    else:
        realistic.unlink(missing_ok=True)
    body = {"name": cid, "intents": intents(N), "search": {**SEARCH, "width": side, "height": side}, "concurrency": 32}
    processes = replica_processes()
    assert set(processes) == {"ingress", "planner", "diffusion", "llm"}, processes
    sampler = Sampler(url, cid, processes)
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/campaigns", json=body).status_code == 202
        sampler.start()
        deadline = time.time() + 1200
        while (st := CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content)
               ).intents_finished < CANCEL_AT * N:
            assert st.state == "running" and time.time() < deadline, st
            time.sleep(0.5)
        cancelled = CampaignStatus.model_validate_json(client.delete(f"/v1/campaigns/{cid}").content)
        assert cancelled.state == "cancelled" and cancelled.intents_finished < N, cancelled
        resumed = client.post("/v1/campaigns", json=body)
        assert resumed.status_code == 202, resumed.text
        assert resumed.json()["resumed_intents"] >= cancelled.intents_finished
        while (st := CampaignStatus.model_validate_json(client.get(f"/v1/campaigns/{cid}").content)
               ).state == "running":
            assert time.time() < deadline, st
            time.sleep(0.5)
    elapsed = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join(10)

    p95 = statistics.quantiles(sampler.latencies, n=20)[18]
    warm = [r for done, r in sampler.rss if done >= WARM_UP * N]
    print(f"\nsoak at {side}²: {N} intents in {elapsed:.0f} s ({N / elapsed:.1f}/s), cancelled at {cancelled.intents_finished} "
          f"and resumed; status polled {len(sampler.latencies)} times: p50 "
          f"{statistics.median(sampler.latencies) * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms, max "
          f"{max(sampler.latencies) * 1e3:.0f} ms; codes {dict(sampler.codes)}")
    spread = {}
    for name in processes:
        series = [r[name] for r in warm]
        base = series[0]
        spread[name] = (min(series) / base - 1, max(series) / base - 1)
        print(f"  RSS {name}: after warm-up {base / 2**20:.0f} MiB, then {min(series) / 2**20:.0f}–"
              f"{max(series) / 2**20:.0f} MiB ({spread[name][0]:+.1%} / {spread[name][1]:+.1%}) over {len(series)} "
              f"samples")

    assert st.state == "done" and st.intents_done == N and st.intents_failed == 0, st
    assert not [c for c in sampler.codes if c >= 500], sampler.codes
    assert p95 < 0.2, f"status p95 {p95 * 1e3:.0f} ms"
    assert len(warm) >= 20, "too few samples after warm-up to judge memory"
    for name, (low, high) in spread.items():
        assert -0.10 <= low and high <= 0.10, f"{name} RSS moved {low:+.1%} / {high:+.1%} after warm-up"
    assert_each_intent_once(CampaignStore(str(store_root / cid)), [f"i{k}" for k in range(N)])
    if side > 64:
        stored = [c for c in CampaignStore(str(store_root / cid)).iter_lineage() if c.mode == "beam"]
        assert stored and all(c.image_size > 500_000 for c in stored)  # the heavy images
        shutil.rmtree(store_root / cid, ignore_errors=True)
