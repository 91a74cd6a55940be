"""Campaign runner and store with scripted fakes: every intent once, resume after a kill, flat failures."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from agents.messages import Intent
from pipelines.campaign import CampaignRunner, CampaignSpec, CampaignState
from pipelines.store import CampaignStore
from tests.fakes import FakeRenderer, ScriptedLLM

SEARCH = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 2, "seeds_per_prompt": 1, "max_images": 16}


def spec(n: int, **kw) -> CampaignSpec:
    return CampaignSpec(intents=[Intent(id=f"i{k}", text=f"a red apple number {k}") for k in range(n)],
                        search=SEARCH, concurrency=3, **kw)


def runner(s: CampaignSpec, store: CampaignStore, renderer=None) -> CampaignRunner:
    renderer = renderer or FakeRenderer()
    return CampaignRunner(s, s.search_config({}), renderer, ScriptedLLM(renderer), store)


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_campaign_writes_every_file_with_one_line_per_intent(tmp_path):
    s = spec(5)
    store = CampaignStore(str(tmp_path))
    status = asyncio.run(runner(s, store).run())
    assert status.state == CampaignState.done and status.intents_done == 5
    results = read_jsonl(tmp_path / "results.jsonl")
    lineage = read_jsonl(tmp_path / "lineage.jsonl")
    assert [r["intent_id"] for r in results] == [f"i{k}" for k in range(5)]
    for r in results:
        assert r["images"] == r["baseline_images"] <= 16  # equal budget
        assert (tmp_path / r["best_image"]).exists() and (tmp_path / r["baseline_image"]).exists()
    assert len(lineage) == sum(r["images"] + r["baseline_images"] for r in results)
    assert all((tmp_path / line["image"]).exists() for line in lineage)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["intents"] == 5 and manifest["search"]["max_images"] == 16 and "diffusers" in manifest["versions"]


def test_resume_after_a_kill_has_no_duplicated_and_no_missing_lines(tmp_path):
    s = spec(8)
    store = CampaignStore(str(tmp_path))
    finished: list[str] = []

    async def kill_midway():
        r = runner(s, store)
        r.on_intent_done = lambda line: finished.append(line["intent_id"])
        task = asyncio.create_task(r.run())
        while len(finished) < 3:
            await asyncio.sleep(0.001)
        task.cancel()  # the runner dies with intents in flight
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(kill_midway())
    committed = store.done_intents()
    assert 3 <= len(committed) < 8
    status = asyncio.run(runner(s, store).run())
    assert status.intents_skipped == len(committed) and status.intents_done == 8
    results = read_jsonl(tmp_path / "results.jsonl")
    assert sorted(r["intent_id"] for r in results) == sorted(f"i{k}" for k in range(8))
    lineage = read_jsonl(tmp_path / "lineage.jsonl")
    ids = [(line["mode"], line["id"]) for line in lineage]
    assert len(ids) == len(set(ids)) == sum(r["images"] + r["baseline_images"] for r in results)


def test_resuming_a_different_campaign_under_the_same_name_is_refused(tmp_path):
    store = CampaignStore(str(tmp_path))
    asyncio.run(runner(spec(2, name="demo"), store).run())
    other = CampaignSpec(name="demo", intents=[Intent(id="x", text="a blue car")], search=SEARCH)
    with pytest.raises(ValueError, match="already exists in the store with different intents"):
        asyncio.run(runner(other, store).run())


def test_infrastructure_failures_are_not_committed_and_retried_on_resume(tmp_path):
    store = CampaignStore(str(tmp_path))
    broken = FakeRenderer()
    broken.fail_with = ConnectionError("renderer down")
    status = asyncio.run(runner(spec(3), store, broken).run())
    assert status.state == CampaignState.failed and status.intents_failed == 3
    assert "renderer down" in status.errors[0] and store.done_intents() == set()
    status = asyncio.run(runner(spec(3), store).run())
    assert status.state == CampaignState.done and status.intents_done == 3


def test_rejected_intents_are_recorded():
    s = CampaignSpec(intents=[Intent(id="ok", text="a cat"), Intent(id="bad", text="explicit nude 12 year old")],
                     search=SEARCH)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        status = asyncio.run(runner(s, CampaignStore(d)).run())
        results = {r["intent_id"]: r for r in read_jsonl(f"{d}/results.jsonl")}
    assert status.intents_rejected == 1 and results["bad"]["status"] == "rejected"
    assert "moderation" in results["bad"]["error"]


@pytest.mark.parametrize(
    "body,message",
    [
        ({"intents": []}, "at least one intent"),
        ({}, "exactly one of"),
        ({"intents_jsonl": '{"id": "a", "text": "x"}\n{"id": "b"}'}, "line 2"),
        ({"intents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "repeated: \\['a'\\]"),
        ({"intents": [{"id": "a", "text": "x"}], "search": {"beam": 3}}, "unknown search fields \\['beam'\\]"),
        ({"intents": [{"id": "a b", "text": "x"}]}, "pattern"),
    ],
)
def test_bad_specs_are_rejected_with_the_reason(body, message):
    with pytest.raises(ValidationError, match=message):
        CampaignSpec.model_validate(body)


KILL_CHILD = r"""
import asyncio, sys
from pipelines.campaign import CampaignRunner, CampaignSpec
from pipelines.store import CampaignStore
from tests.fakes import FakeRenderer, ScriptedLLM

class SlowRenderer(FakeRenderer):
    async def render(self, requests):
        await asyncio.sleep(0.3)
        return await super().render(requests)

spec = CampaignSpec.model_validate_json(sys.argv[1])
renderer = SlowRenderer()
asyncio.run(CampaignRunner(spec, spec.search_config({}), renderer, ScriptedLLM(renderer), CampaignStore(sys.argv[2])).run())
"""


def test_resume_after_the_runner_process_is_killed(tmp_path):
    """SIGKILL the process running a campaign mid-way (no cleanup runs), then resume: every intent exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    s = spec(10)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, s.model_dump_json(), str(tmp_path)], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    store = CampaignStore(str(tmp_path))
    deadline = time.time() + 120
    while len(store.done_intents()) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = store.done_intents()
    assert 3 <= len(committed) < 10, committed
    assert not (tmp_path / "results.jsonl").exists()  # killed before compiling: only parts exist
    status = asyncio.run(runner(s, store).run())
    assert status.intents_skipped == len(committed) and status.intents_done == 10
    results = read_jsonl(tmp_path / "results.jsonl")
    assert [r["intent_id"] for r in results] == [f"i{k}" for k in range(10)]
    lineage = read_jsonl(tmp_path / "lineage.jsonl")
    keys = [(line["mode"], line["id"]) for line in lineage]
    assert len(keys) == len(set(keys)) == sum(r["images"] + r["baseline_images"] for r in results)
