"""BeamSearchPlanner: iterative prompt refinement for one intent, and a best-of-N baseline at equal image budget."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agents.config import SearchConfig
from agents.critic import Critic, CriticError
from agents.messages import (
    CallCounts,
    Candidate,
    CandidateStatus,
    ChatResult,
    Check,
    Intent,
    Proposal,
    RenderRequest,
    SearchResult,
)
from agents.ports import Renderer
from agents.rewriter import Rewriter
from agents.safety import KeywordModerator, Moderator, normalize

ImageSink = Callable[[Candidate, bytes], Awaitable[str]]
"""Stores a candidate's PNG and returns its reference (store path or URI), recorded as ``Candidate.image``."""


class IntentRejected(ValueError):
    """The intent was refused by moderation before any work was done."""


def stable_seed(*parts: object) -> int:
    """A seed in [0, 2**31) that depends only on ``parts`` (not on call order, process or Python's hash salt)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class _Branch:
    """A prompt in the beam: its candidates (one per seed) and their mean score (robust to one lucky seed)."""

    prompt: str
    candidates: list[Candidate]

    @property
    def score(self) -> float:
        scores = [c.score for c in self.candidates if c.score is not None]
        return sum(scores) / len(scores)

    @property
    def best(self) -> Candidate:
        return max((c for c in self.candidates if c.score is not None), key=lambda c: c.score)


@dataclass
class _State:
    """Everything one run accumulates."""

    intent: Intent
    mode: str
    candidates: list[Candidate] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)
    counts: CallCounts = field(default_factory=CallCounts)
    seen: set[str] = field(default_factory=set)
    images: dict[str, bytes] = field(default_factory=dict)


class BeamSearchPlanner:
    """Beam search over prompts (and seeds) for one intent.

    Round 0 renders the original prompt and K rewrites; every later round asks the rewriter for K children of each of
    the B best branches, seeing earlier attempts sorted by score with the critic's feedback. Every image is scored
    against the ORIGINAL intent. The search stops after ``rounds``, on ``score_threshold``, after ``patience`` rounds
    without improvement, or when ``max_images`` is spent (never exceeded).
    """

    def __init__(
        self,
        renderer: Renderer,
        rewriter: Rewriter,
        critic: Critic,
        config: SearchConfig | None = None,
        moderator: Moderator | None = None,
        image_sink: ImageSink | None = None,
    ):
        self.renderer = renderer
        self.rewriter = rewriter
        self.critic = critic
        self.config = config or SearchConfig()
        self.moderator = moderator or KeywordModerator()
        self.image_sink = image_sink

    # ------------------------------------------------------------------------------------------------------------
    # Beam search
    # ------------------------------------------------------------------------------------------------------------

    async def run(self, intent: Intent) -> SearchResult:
        cfg = self.config
        # 1. Check inputs
        self._moderate(intent)
        state = _State(intent=intent, mode="beam")
        # 2. Decompose the intent into yes/no checks (once per intent)
        checks = await self._decompose(state)
        # 3. Round 0 prompts: the original intent is always a candidate, plus K rewrites of it
        state.seen.add(normalize(intent.text))
        proposal = await self._propose(state, parent=None, round_=0, index=0)
        pending: list[tuple[str | None, str, str]] = [(None, intent.text, "original")]
        pending += [(None, p, "rewrite") for p in proposal.prompts]

        beam: list[_Branch] = []
        best_per_round: list[float | None] = []
        best_so_far: float | None = None
        stale_rounds = 0
        stop_reason = "rounds"
        rounds_run = 0
        for round_ in range(cfg.rounds):
            # 4. Propose children of every branch in the beam, concurrently
            if round_ > 0:
                proposals = await asyncio.gather(
                    *(self._propose(state, parent=b.best, round_=round_, index=i) for i, b in enumerate(beam))
                )
                pending = [(b.best.id, p, "rewrite") for b, prop in zip(beam, proposals) for p in prop.prompts]
            # 5. Make candidates within the image budget, render and critique them all concurrently
            candidates = self._make_candidates(state, pending, round_)
            if not candidates:
                stop_reason = "budget" if self._budget_left(state) == 0 else "no_candidates"
                break
            await self._render_and_critique(state, candidates, checks)
            rounds_run += 1
            # 6. Select: the best B branches among the old beam and this round's prompts
            beam = self._select(beam, candidates)
            scored = [c.score for c in candidates if c.score is not None]
            round_best = max(scored) if scored else None
            best_per_round.append(round_best)
            # 7. Stop rules
            if round_best is not None and (best_so_far is None or round_best > best_so_far + cfg.min_improvement):
                best_so_far, stale_rounds = round_best, 0
            elif round_ > 0:
                stale_rounds += 1
            if best_so_far is not None and best_so_far >= cfg.score_threshold:
                stop_reason = "threshold"
                break
            if not beam:
                stop_reason = "no_candidates"
                break
            if round_ + 1 < cfg.rounds:
                if stale_rounds >= cfg.patience:
                    stop_reason = "plateau"
                    break
                if self._budget_left(state) == 0:
                    stop_reason = "budget"
                    break
        return self._result(state, checks, rounds_run, stop_reason, best_per_round)

    async def run_with_baseline(self, intent: Intent, baseline: bool = True) -> tuple[SearchResult, SearchResult | None]:
        """The search and, if ``baseline``, the best-of-N baseline at the same image budget: the one entry point the
        campaign runner uses for an intent."""
        search = await self.run(intent)
        if not baseline or not search.counts.images:
            return search, None
        return search, await self.run_baseline(intent, search.counts.images, checks=search.checks)

    # ------------------------------------------------------------------------------------------------------------
    # Best-of-N baseline
    # ------------------------------------------------------------------------------------------------------------

    async def run_baseline(self, intent: Intent, n_images: int, checks: list[Check] | None = None) -> SearchResult:
        """The original prompt with ``n_images`` different seeds, scored the same way. Pass the search's ``checks``
        so both are judged by the same questions and the comparison is at equal budget."""
        if n_images < 1:
            raise ValueError(f"`n_images` must be at least 1 but is {n_images}")
        self._moderate(intent)
        state = _State(intent=intent, mode="best_of_n")
        if checks is None:
            checks = await self._decompose(state)
        candidates = [
            Candidate(
                id=f"{intent.id}/baseline/i{i}",
                intent_id=intent.id,
                parent_id=None,
                round=0,
                prompt=intent.text,
                seed=stable_seed(self.config.base_seed, intent.id, "baseline", i),
                source="baseline",
            )
            for i in range(n_images)
        ]
        state.candidates.extend(candidates)
        await self._render_and_critique(state, candidates, checks)
        scored = [c.score for c in candidates if c.score is not None]
        return self._result(state, checks, 1, "rounds", [max(scored) if scored else None])

    # ------------------------------------------------------------------------------------------------------------
    # Steps
    # ------------------------------------------------------------------------------------------------------------

    def _moderate(self, intent: Intent) -> None:
        reason = self.moderator.check(intent.text) or (
            self.moderator.check(intent.negative_prompt) if intent.negative_prompt else None
        )
        if reason:
            raise IntentRejected(f"intent {intent.id!r} was refused by moderation: {reason}")

    async def _decompose(self, state: _State) -> list[Check]:
        intent = state.intent
        checks, result = await self.critic.decompose(
            intent, request_id=f"{intent.id}/decompose", seed=stable_seed(self.config.base_seed, intent.id, "decompose")
        )
        if result is not None:
            self._count_chat(state, result, failed=result.parsed is None)
        return checks

    async def _propose(self, state: _State, parent: Candidate | None, round_: int, index: int) -> Proposal:
        intent = state.intent
        request_id = f"{intent.id}/r{round_}/rewrite{index}"
        proposal, result = await self.rewriter.propose(
            intent,
            parent,
            state.candidates,
            self.config.candidates_per_beam,
            state.seen,
            request_id=request_id,
            seed=stable_seed(self.config.base_seed, request_id),
            temperature=self.config.temperature,
        )
        self._count_chat(state, result, failed=proposal.error is not None and result.parsed is None)
        state.proposals.append(proposal)
        return proposal

    def _budget_left(self, state: _State) -> int:
        return self.config.max_images - sum(1 for c in state.candidates if c.source != "baseline")

    def _make_candidates(self, state: _State, pending: list[tuple[str | None, str, str]], round_: int) -> list[Candidate]:
        """(parent, prompt, source) x seeds -> candidates, in beam order, cut at the remaining image budget."""
        intent = state.intent
        out: list[Candidate] = []
        budget = self._budget_left(state)
        for p_index, (parent_id, prompt, source) in enumerate(pending):
            for s in range(self.config.seeds_per_prompt):
                if len(out) == budget:
                    break
                cid = f"{intent.id}/r{round_}/p{p_index}/s{s}"
                out.append(
                    Candidate(
                        id=cid,
                        intent_id=intent.id,
                        parent_id=parent_id,
                        round=round_,
                        prompt=prompt,
                        seed=stable_seed(self.config.base_seed, cid),
                        source=source,
                    )
                )
        state.candidates.extend(out)
        return out

    async def _render_and_critique(self, state: _State, candidates: list[Candidate], checks: list[Check]) -> None:
        cfg = self.config
        requests = [
            RenderRequest(
                request_id=c.id,
                prompt=c.prompt,
                negative_prompt=state.intent.negative_prompt,
                seed=c.seed,
                steps=cfg.steps,
                guidance_scale=cfg.guidance_scale,
                width=cfg.width,
                height=cfg.height,
            )
            for c in candidates
        ]
        # Infrastructure errors (renderer down, bad request) raise: they are not the model's fault.
        results = await self.renderer.render(requests)
        state.counts.images += len(results)
        state.counts.render_calls += 1
        for c, res in zip(candidates, results):
            c.timings["render_s"] = res.render_seconds
            c.timings["render_share_s"] = res.render_seconds / res.batch_size  # this image's share of the call
            c.image = await self._store_image(state, c, res.png)
        pngs = [res.png for res in results]
        await asyncio.gather(*(self._critique(state, c, png, checks) for c, png in zip(candidates, pngs)))

    async def _store_image(self, state: _State, candidate: Candidate, png: bytes) -> str:
        if self.image_sink is not None:
            return await self.image_sink(candidate, png)
        state.images[candidate.id] = png
        return f"sha256:{hashlib.sha256(png).hexdigest()}"

    async def _critique(self, state: _State, candidate: Candidate, png: bytes, checks: list[Check]) -> None:
        t0 = time.perf_counter()
        try:
            critique, result = await self.critic.critique(
                png, state.intent, checks, request_id=f"{candidate.id}/critique", seed=stable_seed(candidate.id, "critic")
            )
        except CriticError as exc:  # model-caused: record it on the candidate and carry on
            candidate.status = CandidateStatus.failed
            candidate.error = f"critic: {exc}"
            if exc.result is not None:
                self._count_chat(state, exc.result, failed=True)
            else:
                state.counts.llm_failures += 1
            return
        finally:
            candidate.timings["critique_s"] = time.perf_counter() - t0
        self._count_chat(state, result, failed=False)
        candidate.critique = critique
        candidate.score = critique.score

    def _select(self, beam: list[_Branch], candidates: list[Candidate]) -> list[_Branch]:
        """Top ``beam_width`` branches by mean score over (old beam + this round's prompts); ties keep older first."""
        by_prompt: dict[str, list[Candidate]] = {}
        for c in candidates:
            if c.score is not None:
                by_prompt.setdefault(c.prompt, []).append(c)
        pool = beam + [_Branch(prompt=p, candidates=cs) for p, cs in by_prompt.items()]
        ranked = sorted(enumerate(pool), key=lambda ib: (-ib[1].score, ib[0]))
        return [b for _, b in ranked[: self.config.beam_width]]

    @staticmethod
    def _count_chat(state: _State, result: ChatResult, failed: bool) -> None:
        state.counts.add_chat(result)
        if failed:
            state.counts.llm_failures += 1

    def _result(
        self, state: _State, checks: list[Check], rounds_run: int, stop_reason: str, best_per_round: list[float | None]
    ) -> SearchResult:
        scored = [c for c in state.candidates if c.score is not None]
        best = max(scored, key=lambda c: c.score) if scored else None  # max keeps the first of equal scores
        result = SearchResult(
            intent=state.intent,
            mode=state.mode,
            candidates=state.candidates,
            proposals=state.proposals,
            best_id=best.id if best else None,
            rounds_run=rounds_run,
            stop_reason=stop_reason if state.candidates else "no_candidates",
            best_score_per_round=best_per_round,
            counts=state.counts,
            checks=checks,
        )
        result.images = state.images
        return result
