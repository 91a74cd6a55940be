"""BeamSearchPlanner: paired prompt x seed beam search for one intent, beside a best-of-N baseline at equal budget.

A run, as :meth:`BeamSearchPlanner.run_with_baseline` does it (the campaign runner's one entry point per intent):

1. check the intent: moderation, and a negative prompt that ``guidance_scale`` <= 1 would silently ignore;
2. decompose it into yes/no checks (once; the baseline is judged by the same checks);
3. each round:
   a. propose: round 0 is the intent plus K rewrites of it; later rounds ask for K children of each beam branch, the
      rewriter seeing a :class:`RewriteContext` (the branch's ancestry, its failed checks, the best and the tried
      prompts). Every proposal is checked (renderer tokens, duplicates, output filter). If no rewrite of a round is
      usable, the round retries once hotter, and then renders the beam's prompts on new seeds instead of stopping.
      With campaign memory (``agents.memory``), each branch also gets prompts made by the campaign's supported
      lessons (no model call), placed first, and the rewriter sees the lessons that apply;
   b. plan candidates: each prompt on S seeds (paired mode: the round's shared seeds plus the parent's best seeds),
      whole prompts within the budget; with a campaign image budget (``allowance``, ``agents.allocation``) the
      round's images are granted by the campaign's allocator first, and a round that gets none stops the intent
      (``budget``); the baseline arm gets as many images of the original prompt;
   c. render and critique both arms concurrently (one render call each, batched together by the serving side);
   d. with memory, hand every new prompt and its parent's scores to the campaign's memory (it learns the edit);
      select the B best branches among the old beam and this round's prompts by the branch score;
   e. stop rules: score threshold, plateau, budget, rounds;
   f. hand a :class:`SearchCheckpoint` to ``on_round``: a run resumed from it continues with the next round;
   With a ``steering`` port (``agents.steering``: a human in the loop), each round first applies the people's actions
   it has not applied yet: pins (kept in the beam whatever their rank), vetoes (out of the beam, their candidates
   ``vetoed``), added prompts (rendered first in this round, ``source="human"``);
4. with a review threshold, an intent whose best score is under it waits for a person (``AwaitingReview``) and may
   run more rounds with their input (``agents.steering``);
5. return one :class:`SearchResult` per arm.

**Branch score**, used by selection and by the threshold and plateau rules alike: a prompt's mean critic score over
its seeds, seed-adjusted (``agents.stats.seed_adjusted_means``) so that prompts rendered on different seed sets are
compared on an average seed. The result's best image is the single best-scored image.

**Seeds** derive from ``base_seed``, the intent id and the round (``stable_seed``): deterministic, no RNG state. In
``spread`` seed mode the search's n-th image takes best-of-N's n-th seed: both arms draw the same seeds and differ only
in their prompts (with one seed per prompt, ``paired`` draws one new seed a round and a beam of 8 images sees about
two seeds where best-of-8 sees eight).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

from agents.allocation import IntentAllowance
from agents.budget import ImageBudget, held_bytes
from agents.config import SearchConfig
from agents.messages import (
    ArmState,
    BranchStep,
    AppliedAction,
    Candidate,
    CandidateStatus,
    Check,
    HumanAction,
    HumanMark,
    MAX_IMAGE_PIXELS,
    Intent,
    PromptScore,
    Proposal,
    RenderRequest,
    RenderResult,
    RewriteContext,
    ReviewState,
    RewriteReply,
    SearchCheckpoint,
    SearchResult,
    StoredImage,
)
from agents.memory import CampaignMemory
from agents.ports import CriticError, ImageCritic, PromptRewriter, Renderer
from agents.rewriter import clean_prompt
from agents.safety import KeywordModerator, Moderator, OutputFilter, normalize
from agents.stats import seed_adjusted_means
from agents.steering import AwaitingReview, Steering

ImageSink = Callable[[Candidate, bytes], Awaitable[str]]
"""Stores a candidate's PNG and returns its reference (store path or URI), recorded as ``Candidate.image``."""

ImageSource = Callable[[StoredImage], Awaitable[bytes]]
"""Reads back an image the renderer stored (checked against its size and sha256): for a renderer that stored an image
but sent the critic nothing to look at."""

RoundCallback = Callable[[SearchCheckpoint], Awaitable[None]]
"""Called after every finished round with a snapshot from which the search can be resumed."""

MAX_PROMPT_CHARS = 1000  # RenderRequest's limit (agents.messages.MAX_PROMPT_CHARS)


class IntentRejected(ValueError):
    """The intent was refused before any work was done (moderation, or settings that would silently ignore part of
    it); the message says why, ``by_moderation`` whether the input moderation refused it."""

    def __init__(self, message: str, *, by_moderation: bool = False):
        super().__init__(message)
        self.by_moderation = by_moderation


def stable_seed(*parts: object) -> int:
    """A seed in [0, 2**31) that depends only on ``parts`` (not on call order, process or Python's hash salt)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def baseline_sampled(intent_id: str, fraction: float, base_seed: int) -> bool:
    """Whether an intent gets a baseline under ``baseline: sample:<fraction>``: a deterministic draw per intent, so a
    resumed campaign and every reader of its results agree. ``fraction`` 1 samples all, 0 none."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"baseline sample fraction must be in [0, 1] but is {fraction}")
    return stable_seed(base_seed, intent_id, "baseline-sample") / 2**31 < fraction


def baseline_fraction(policy: str) -> float:
    """The share of intents that get a baseline under a campaign's ``baseline`` policy: ``all`` (1), ``none`` (0) or
    ``sample:<fraction>``. Raises ValueError naming the policy otherwise."""
    if policy in ("all", "none"):
        return 1.0 if policy == "all" else 0.0
    head, _, tail = policy.partition(":")
    try:
        fraction = float(tail) if head == "sample" else None
    except ValueError:
        fraction = None
    if fraction is None or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"baseline policy must be 'all', 'none' or 'sample:<fraction in [0, 1]>' but is {policy!r}")
    return fraction


def check_intent(intent: Intent, config: SearchConfig) -> str | None:
    """Why the intent cannot be searched under ``config`` as given (None if it can). Also for submit-time checks."""
    if intent.negative_prompt and config.guidance_scale <= 1.0:
        return (
            f"intent {intent.id!r} has a negative_prompt but guidance_scale is {config.guidance_scale} (<= 1 disables "
            "classifier-free guidance), so the negative prompt would be ignored: remove it or set guidance_scale > 1 (with "
            "a model that uses CFG)"
        )
    return None


class BeamSearchPlanner:
    """Beam search over prompts and seeds for one intent (see the module docstring for the algorithm).

    The rewriter and the critic are any :class:`PromptRewriter` and :class:`ImageCritic` (the LLM-backed
    ``Rewriter`` and ``Critic``, a rule-based rewriter, a judge-backed critic). ``image_sink`` stores every rendered
    PNG the renderer did not store itself and returns its reference; ``image_source`` reads back one the renderer
    stored without a critic variant. The planner keeps no image bytes beyond a render call, and ``image_budget``
    (shared by a campaign's intents) caps the bytes all calls hold at once.
    """

    def __init__(
        self,
        renderer: Renderer,
        rewriter: PromptRewriter,
        critic: ImageCritic,
        config: SearchConfig | None = None,
        moderator: Moderator | None = None,
        *,
        image_sink: ImageSink,
        image_source: ImageSource | None = None,
        output_filter: OutputFilter | None = None,
        memory: CampaignMemory | None = None,
        image_budget: ImageBudget | None = None,
        allowance: IntentAllowance | None = None,
        steering: Steering | None = None,
    ):
        self.renderer = renderer
        self.rewriter = rewriter
        self.critic = critic
        self.config = config or SearchConfig()
        self.moderator = moderator or KeywordModerator()
        self.image_sink = image_sink
        self.image_source = image_source
        self.output_filter = output_filter or OutputFilter(self.moderator)
        self.memory = memory  # the campaign's lessons, shared by its intents (agents.memory); None: no memory
        self.image_budget = image_budget
        # the campaign's image budget as this intent sees it (agents.allocation); None: only max_images bounds it
        self.allowance = allowance
        # people's actions on this intent and the review policy (agents.steering); None: no human in the loop
        self.steering = steering
        # the critic's image size, made by the renderer; a critic that names none (a judge, scorers) sees the whole image
        self.critic_max_pixels = getattr(critic, "image_max_pixels", None) or MAX_IMAGE_PIXELS

    # ------------------------------------------------------------------------------------------------------------
    # Entry points
    # ------------------------------------------------------------------------------------------------------------

    async def run(
        self, intent: Intent, *, checkpoint: SearchCheckpoint | None = None, on_round: RoundCallback | None = None
    ) -> SearchResult:
        """The search alone."""
        search, _ = await self.run_with_baseline(intent, False, checkpoint=checkpoint, on_round=on_round)
        return search

    async def run_with_baseline(
        self,
        intent: Intent,
        baseline: bool = True,
        *,
        checkpoint: SearchCheckpoint | None = None,
        on_round: RoundCallback | None = None,
    ) -> tuple[SearchResult, SearchResult | None]:
        """The search and, if ``baseline``, the best-of-N baseline run beside it: in each round the baseline renders
        as many images of the original prompt as the search renders, in the same render/critique wave, so both arms
        spend the same budget and the baseline adds no rounds of latency. The baseline's first seeds are the original
        prompt's round-0 seeds, so the two arms share noise where they overlap. Each arm's costs are its own.

        ``checkpoint`` resumes from a snapshot handed to ``on_round`` (same intent and config; raises ValueError
        otherwise); the result equals that of an uninterrupted run when the models are deterministic.

        With ``steering`` and a review policy, raises :class:`AwaitingReview` after handing the waiting state to
        ``on_round``: run it again from that checkpoint when a person acts or the wait times out."""
        # 1. Check inputs
        self._check(intent)
        if checkpoint is None:
            state = SearchCheckpoint(
                intent=intent, config=self.config.model_dump(mode="json"), rounds_done=0, checks=[],
                search=ArmState(), baseline=ArmState() if baseline else None,
            )
            # 2. Decompose the intent into yes/no checks (once; the baseline is judged by the same ones)
            state.checks = await self._decompose(intent, state.search)
        else:
            state = self._restore(checkpoint, intent, baseline)
        max_tokens = (await self.renderer.info()).max_prompt_tokens
        # 3. Rounds (4. and more with a person's input, while the intent waits for review)
        while True:
            while state.stop_reason is None:
                await self._round(state, max_tokens)
                if on_round is not None:
                    await on_round(state.model_copy(deep=True))
            if not await self._review(state, on_round):
                break
        # 5. Results
        search = self._result(state, state.search, "beam")
        return search, self._result(state, state.baseline, "best_of_n") if state.baseline else None

    async def run_baseline(self, intent: Intent, n_images: int, checks: list[Check] | None = None) -> SearchResult:
        """Best-of-N on its own: the original prompt on ``n_images`` seeds (the first ones the search's round-0 seeds),
        scored the same way. Pass the search's ``checks`` so both are judged by the same questions."""
        if n_images < 1:
            raise ValueError(f"`n_images` must be at least 1 but is {n_images}")
        self._check(intent)
        arm = ArmState()
        if checks is None:
            checks = await self._decompose(intent, arm)
        state = SearchCheckpoint(intent=intent, config=self.config.model_dump(mode="json"), rounds_done=1,
                                 checks=checks, search=ArmState(), baseline=arm, stop_reason="rounds")
        await self._render_and_critique(state, arm, self._baseline_candidates(state, n_images, 0))
        return self._result(state, arm, "best_of_n")

    # ------------------------------------------------------------------------------------------------------------
    # One round
    # ------------------------------------------------------------------------------------------------------------

    async def _round(self, state: SearchCheckpoint, max_tokens: int | None) -> None:
        cfg = self.config
        r = state.rounds_done
        # people's pins and vetoes change the beam before it is extended; their prompts are rendered first
        human = await self._steer(state, r, max_tokens) if self.steering is not None else []
        if r > 0 and (self._budget_left(state) < cfg.seeds_per_prompt or not (state.beam or human)):
            state.stop_reason = "budget" if state.beam or human else "no_candidates"  # only after a person's round
            return
        # with a campaign budget, a round that could not get one prompt's images is not run
        improving = r > 0 and state.stale_rounds == 0  # the best branch score rose in the last round
        if self.allowance is not None and await self.allowance.available(improving) < cfg.seeds_per_prompt:
            state.stop_reason = "budget"
            return
        # a. Propose: the original and K rewrites in round 0, K children per beam branch later
        plan = [(parent_id, prompt, "human") for parent_id, prompt, _ in human]
        plan += await self._propose_round(state, r, max_tokens) if state.beam or r == 0 else []
        # b. Candidates: whole prompts x S seeds within the budget; the baseline gets as many images
        slots = self._budget_left(state) // cfg.seeds_per_prompt
        plan = plan[:slots]
        if self.allowance is not None:  # the campaign's allocator grants the round's images (whole prompts)
            plan = plan[: await self.allowance.grant(len(plan) * cfg.seeds_per_prompt, improving)
                        // cfg.seeds_per_prompt]
            if not plan:
                state.stop_reason = "budget"
                return
        candidates = self._candidates(state, plan, r)
        marks = {prompt: mark for _, prompt, mark in human}
        for c in candidates:
            if c.source == "human":
                c.human.append(marks[c.prompt])
        baseline = self._baseline_candidates(state, len(candidates), r) if state.baseline is not None else []
        # c. Render and critique both arms concurrently
        await asyncio.gather(
            self._render_and_critique(state, state.search, candidates),
            *([self._render_and_critique(state, state.baseline, baseline)] if baseline else []),
        )
        if self.allowance is not None:  # a device-seconds budget charges what the round's images took
            await self.allowance.settle(len(candidates), sum(c.timings.get("render_share_s", 0.0) for c in candidates))
        state.rounds_done = r + 1
        scores = self._branch_scores(state)
        if self.memory is not None:  # campaign memory learns from every new prompt against its parent
            self._learn(state, candidates, scores)
        # d. Select the B best branches among the old beam and this round's prompts
        pool = list(dict.fromkeys(state.beam + [c.prompt for c in candidates]))
        state.beam = self._select(state, pool, scores)
        # e. Stop rules, on the best branch's score
        top = scores[state.beam[0]] if state.beam else None
        state.branch_score_per_round.append(top)
        if top is not None and (state.best_branch_score is None or top > state.best_branch_score + cfg.min_improvement):
            state.best_branch_score, state.stale_rounds = top, 0
        elif r > 0:
            state.stale_rounds += 1
        if top is not None and top >= cfg.score_threshold:
            state.stop_reason = "threshold"
        elif not state.beam:
            state.stop_reason = "no_candidates"  # nothing scored: no branch to extend
        elif state.rounds_done >= (state.round_limit or cfg.rounds):
            state.stop_reason = "rounds"
        elif state.stale_rounds >= cfg.patience:
            state.stop_reason = "plateau"
        elif self._budget_left(state) < cfg.seeds_per_prompt:
            state.stop_reason = "budget"

    def _select(self, state: SearchCheckpoint, pool: list[str], scores: dict[str, float]) -> list[str]:
        """The beam: the B best-scored prompts of ``pool``, best first; pinned ones stay whatever their rank and the
        best others fill the remaining places (more pins than B: all of them)."""
        ranked = sorted((p for p in pool if p in scores), key=lambda p: -scores[p])  # stable: older first on ties
        others = [p for p in ranked if p not in state.pinned][: max(0, self.config.beam_width - len(state.pinned))]
        return [p for p in ranked if p in state.pinned or p in others]

    async def _propose_round(self, state: SearchCheckpoint, r: int, max_tokens: int | None) -> list[tuple]:
        """(parent candidate id, prompt, source) for the round, in beam order."""
        parents: list[str | None] = [None] if r == 0 else list(state.beam)
        # campaign memory's edits first: cheap, backed by evidence from other intents, and the rewriter then sees them
        # as tried (a rewrite equal to one is a duplicate)
        lessons = await self._lesson_proposals(state, parents, r, max_tokens)
        lesson_plan = [(prop.parent_id, p, "lesson") for prop in lessons for p in prop.prompts]
        if r == 0:
            proposals = await self._propose(state, parents, 0, max_tokens, self.config.temperature, retry=False)
            return ([(None, state.intent.text, "original")] + lesson_plan
                    + [(None, p, "rewrite") for p in proposals[0].prompts])
        proposals = await self._propose(state, parents, r, max_tokens, self.config.temperature, retry=False)
        if not any(p.prompts for p in proposals) and not lesson_plan:  # nothing usable: one hotter retry
            proposals = await self._propose(state, parents, r, max_tokens, self.config.retry_temperature, retry=True)
        if not any(p.prompts for p in proposals) and not lesson_plan:  # still nothing: new seeds for the beam
            return [(self._branch(state, p)[0].parent_id, p, "reseed") for p in parents]
        return lesson_plan + [(prop.parent_id, p, "rewrite") for prop in proposals for p in prop.prompts]

    async def _lesson_proposals(
        self, state: SearchCheckpoint, parents: list[str | None], r: int, max_tokens: int | None
    ) -> list[Proposal]:
        """Campaign memory's prompts for each parent (its best applicable lessons applied; no model call), checked
        like any rewrite. Empty without memory."""
        if self.memory is None or not self.config.memory.apply_lessons:
            return []
        made = [self.memory.apply(state.intent.text if parent is None else parent) for parent in parents]
        if not any(made):
            return []
        texts = [clean_prompt(p) for prompts in made for p in prompts]
        tokens = iter(await self.renderer.count_tokens(texts) if max_tokens else [0] * len(texts))
        seen = {normalize(state.intent.text)} | {normalize(c.prompt) for c in state.search.candidates}
        out = []
        for parent, prompts in zip(parents, made):
            if not prompts:
                continue
            parent_id = self._best(state, parent).id if parent is not None else None
            proposal = self._check_reply(RewriteReply(prompts=prompts), parent_id, seen, tokens, max_tokens)
            proposal.round, proposal.source = r, "lessons"
            state.search.proposals.append(proposal)
            out.append(proposal)
        return out

    async def _propose(
        self, state: SearchCheckpoint, parents: list[str | None], r: int, max_tokens: int | None, temperature: float,
        retry: bool,
    ) -> list[Proposal]:
        """Ask the rewriter for children of every parent prompt concurrently, then check the replies in beam order."""
        k = self.config.candidates_per_beam
        suffix = "/retry" if retry else ""
        request_ids = [f"{state.intent.id}/r{r}/rewrite{i}{suffix}" for i in range(len(parents))]
        scores = self._branch_scores(state)
        replies = await asyncio.gather(
            *(
                self.rewriter.propose(
                    self._context(state, scores, parent, r, k, max_tokens),
                    request_id=rid, seed=stable_seed(self.config.base_seed, rid), temperature=temperature,
                )
                for parent, rid in zip(parents, request_ids)
            )
        )
        # Count every reply's tokens in one renderer call (the renderer's own tokenizer decides what fits).
        texts = [clean_prompt(p) if isinstance(p, str) else "" for reply in replies for p in reply.prompts]
        tokens = iter(await self.renderer.count_tokens(texts) if texts and max_tokens else [0] * len(texts))
        seen = ({normalize(state.intent.text)} | {normalize(c.prompt) for c in state.search.candidates}
                | {normalize(p) for prop in state.search.proposals
                   if prop.round == r and prop.source in ("lessons", "human") for p in prop.prompts})
        proposals = []
        for parent, reply in zip(parents, replies):
            parent_id = self._best(state, parent).id if parent is not None else None
            proposal = self._check_reply(reply, parent_id, seen, tokens, max_tokens)
            proposal.round, proposal.retry = r, retry
            self._count_chat(state.search, reply.chat, failed=reply.error is not None)
            state.search.proposals.append(proposal)
            proposals.append(proposal)
        return proposals

    def _check_reply(self, reply: RewriteReply, parent_id: str | None, seen: set[str], tokens, max_tokens) -> Proposal:
        """Keep non-empty, renderable, allowed, new prompts; record every other one with its reason, as dropped
        (unusable) or blocked (the output filter refused it). ``seen`` (the normalized prompts already tried for this
        intent) is updated in place."""
        kept: list[str] = []
        dropped = list(reply.dropped)
        blocked: list[tuple[str, str]] = []
        for item in reply.prompts:
            prompt = clean_prompt(item) if isinstance(item, str) else ""
            n_tokens = next(tokens)
            if not isinstance(item, str):
                dropped.append((repr(item)[:200], "not a string"))
            elif not prompt:
                dropped.append((item[:200], "empty"))
            elif len(prompt) > MAX_PROMPT_CHARS:
                dropped.append((prompt[:200], f"longer than {MAX_PROMPT_CHARS} characters"))
            elif max_tokens and n_tokens > max_tokens:
                dropped.append((prompt, f"longer than the renderer's {max_tokens} tokens ({n_tokens})"))
            elif normalize(prompt) in seen:
                dropped.append((prompt, "duplicate"))
            elif reason := self.output_filter.check(prompt):
                blocked.append((prompt, reason))
            else:
                seen.add(normalize(prompt))
                kept.append(prompt)
        error = reply.error
        if error is None and not kept:
            error = "no usable rewrite (all empty, too long, duplicate or blocked)"
        return Proposal(parent_id=parent_id, prompts=kept, dropped=dropped, blocked=blocked, error=error)

    # ------------------------------------------------------------------------------------------------------------
    # Seeds and candidates
    # ------------------------------------------------------------------------------------------------------------

    def _round_seeds(self, intent: Intent, r: int) -> list[int]:
        """Round r's new seeds, shared by every prompt of the round (paired mode)."""
        return [stable_seed(self.config.base_seed, intent.id, "seed", r, j) for j in range(self.config.seeds_per_prompt)]

    def _seeds_for(self, state: SearchCheckpoint, parent_prompt: str | None, source: str, r: int) -> list[int]:
        """A prompt's S seeds in paired mode: round 0 and reseeds take the round's seeds; a child keeps its parent's
        best S - E seeds (by the parent's score on them) and fills up with the round's seeds, explore seeds first."""
        fresh = self._round_seeds(state.intent, r)
        if r == 0 or source == "reseed" or parent_prompt is None:
            return fresh
        keep = self.config.seeds_per_prompt - self.config.explore_seeds
        carried = [c.seed for c in sorted(self._branch(state, parent_prompt), key=lambda c: -c.score)][:keep]
        return carried + [s for s in fresh if s not in carried][: self.config.seeds_per_prompt - len(carried)]

    def _candidates(self, state: SearchCheckpoint, plan: list[tuple], r: int) -> list[Candidate]:
        intent = state.intent
        by_id = {c.id: c for c in state.search.candidates}
        out = []
        for p_index, (parent_id, prompt, source) in enumerate(plan):
            parent_prompt = by_id[parent_id].prompt if parent_id and source in ("rewrite", "lesson", "human") else None
            seeds = self._seeds_for(state, parent_prompt, source, r)
            for s in range(self.config.seeds_per_prompt):
                cid = f"{intent.id}/r{r}/p{p_index}/s{s}"
                if self.config.seed_mode == "paired":
                    seed = seeds[s]
                elif self.config.seed_mode == "spread":  # the n-th image of the search: best-of-N's n-th seed
                    seed = self._baseline_seed(state, len(state.search.candidates) + len(out))
                else:
                    seed = stable_seed(self.config.base_seed, cid)
                out.append(Candidate(id=cid, intent_id=intent.id, parent_id=parent_id, round=r, prompt=prompt,
                                     seed=seed, source=source))
        state.search.candidates.extend(out)
        return out

    def _baseline_seed(self, state: SearchCheckpoint, i: int) -> int:
        """The baseline's i-th seed. Paired mode: the seeds the search's rounds introduce, in order (round 0's S seeds,
        then round 1's, ...), so every seed the search draws a new prompt on is also one the baseline draws the
        original on, and best-of-8 is the first 8 images of best-of-32. Spread mode: one sequence of draws, which
        the search's images take in the order they are made. Fresh mode: the original prompt's round-0 seeds first,
        then its own."""
        s = self.config.seeds_per_prompt
        if self.config.seed_mode == "spread":
            return stable_seed(self.config.base_seed, state.intent.id, "draw", i)
        if self.config.seed_mode == "paired":
            return stable_seed(self.config.base_seed, state.intent.id, "seed", i // s, i % s)
        if i < s:
            return stable_seed(self.config.base_seed, f"{state.intent.id}/r0/p0/s{i}")
        return stable_seed(self.config.base_seed, state.intent.id, "baseline", i)

    def _baseline_candidates(self, state: SearchCheckpoint, n: int, r: int) -> list[Candidate]:
        arm = state.baseline
        start = len(arm.candidates)
        intent = state.intent
        out = [
            Candidate(id=f"{intent.id}/baseline/i{i}", intent_id=intent.id, parent_id=None, round=r, prompt=intent.text,
                      seed=self._baseline_seed(state, i), source="baseline")
            for i in range(start, start + n)
        ]
        arm.candidates.extend(out)
        return out

    # ------------------------------------------------------------------------------------------------------------
    # Render, critique, score
    # ------------------------------------------------------------------------------------------------------------

    async def _render_and_critique(self, state: SearchCheckpoint, arm: ArmState, candidates: list[Candidate]) -> None:
        cfg = self.config
        requests = [
            RenderRequest(request_id=c.id, prompt=c.prompt, negative_prompt=state.intent.negative_prompt, seed=c.seed,
                          steps=cfg.steps, guidance_scale=cfg.guidance_scale, width=cfg.width, height=cfg.height,
                          intent=state.intent.id, critic_max_pixels=self.critic_max_pixels)
            for c in candidates
        ]
        budget = self.image_budget or ImageBudget(max_bytes=2**62)
        async with budget.hold(requests) as hold:
            # Infrastructure errors (renderer down, bad request) raise: they are not the model's fault.
            results = await self.renderer.render(requests)
            await hold.resize(sum(held_bytes(r) for r in results))
            arm.counts.images += len(results)
            arm.counts.render_calls += 1
            for c, res in zip(candidates, results):
                c.timings["render_s"] = res.render_seconds
                c.timings["render_share_s"] = res.render_seconds / res.batch_size  # this image's share of the call
                arm.counts.render_seconds += c.timings["render_share_s"]
            withheld = [(c, res) for c, res in zip(candidates, results) if res.withheld_reason is not None]
            for c, res in withheld:  # the output check kept its pixels: no image, no score, never in the beam
                c.status = CandidateStatus.withheld
                c.error = f"output check: {res.withheld_reason}"
                arm.counts.images_withheld += 1
            kept = [(c, res) for c, res in zip(candidates, results) if res.withheld_reason is None]
            del results, withheld
            await asyncio.gather(*(self._store_and_critique(state, arm, c, res) for c, res in kept))
        scored = [c.score for c in candidates if c.score is not None]
        arm.best_score_per_round.append(max(scored) if scored else None)

    async def _store_and_critique(self, state: SearchCheckpoint, arm: ArmState, candidate: Candidate, res: RenderResult):
        # the renderer stored the image (a reference came back) or the sink stores the bytes: one path that degrades
        if res.stored is not None:
            candidate.image, candidate.image_size, candidate.image_sha256 = (res.stored.uri, res.stored.size,
                                                                             res.stored.sha256)
        else:
            candidate.image = await self.image_sink(candidate, res.png)
            candidate.image_size, candidate.image_sha256 = len(res.png), res.sha256
        # the renderer's critic variant where it made one; else the image itself (the critic fits it, off the loop)
        image = res.critic_image or res.png
        if not image and res.stored is not None:  # stored, and nothing sent to look at: read it back from the store
            if self.image_source is None:
                raise RuntimeError(f"the renderer stored {res.stored.uri} and sent no critic image, and this planner "
                                   "has no image_source to read it back")
            image = await self.image_source(res.stored)
        t0 = time.perf_counter()
        try:
            critique, chat = await self.critic.critique(
                image, state.intent, state.checks, request_id=f"{candidate.id}/critique",
                seed=stable_seed(candidate.id, "critic"),
            )
        except CriticError as exc:  # model-caused: record it on the candidate and carry on
            candidate.status = CandidateStatus.failed
            candidate.error = f"critic: {exc}"
            self._count_chat(arm, exc.result, failed=True)
            return
        finally:
            candidate.timings["critique_s"] = time.perf_counter() - t0
            arm.counts.critique_seconds += candidate.timings["critique_s"]
        self._count_chat(arm, chat, failed=False)
        candidate.critique = critique
        candidate.score = critique.score

    async def _decompose(self, intent: Intent, arm: ArmState) -> list[Check]:
        checks, chat = await self.critic.decompose(
            intent, request_id=f"{intent.id}/decompose", seed=stable_seed(self.config.base_seed, intent.id, "decompose")
        )
        self._count_chat(arm, chat, failed=chat is not None and chat.parsed is None)
        return checks

    @staticmethod
    def _count_chat(arm: ArmState, chat, failed: bool) -> None:
        arm.counts.add_chat(chat)
        if failed:
            arm.counts.llm_failures += 1

    @staticmethod
    def _branch(state: SearchCheckpoint, prompt: str) -> list[Candidate]:
        """The scored candidates of one prompt (a branch), in order."""
        return [c for c in state.search.candidates if c.prompt == prompt and c.score is not None]

    @classmethod
    def _best(cls, state: SearchCheckpoint, prompt: str) -> Candidate:
        """A branch's best-scored image (the first of equal scores): its children's parent in the lineage."""
        return max(cls._branch(state, prompt), key=lambda c: c.score)

    @staticmethod
    def _branch_scores(state: SearchCheckpoint) -> dict[str, float]:
        """Branch score of every scored prompt (see the module docstring); vetoed branches have none."""
        return seed_adjusted_means((c.prompt, c.seed, c.score) for c in state.search.candidates
                                   if c.score is not None and c.status is CandidateStatus.scored)

    def _budget_left(self, state: SearchCheckpoint) -> int:
        return self.config.max_images - len(state.search.candidates)

    # ------------------------------------------------------------------------------------------------------------
    # The rewriter's context
    # ------------------------------------------------------------------------------------------------------------

    def _context(
        self, state: SearchCheckpoint, scores: dict[str, float], parent: str | None, r: int, k: int,
        max_tokens: int | None,
    ) -> RewriteContext:
        """What the rewriter sees for extending ``parent`` (None in round 0); ``scores`` are the branch scores."""
        questions = {c.id: c.question for c in state.checks}
        current = parent if parent is not None else state.intent.text
        ancestry: list[BranchStep] = []
        prompt = parent
        while prompt is not None:
            branch = self._branch(state, prompt)
            ancestry.insert(0, self._step(prompt, branch, scores, questions))
            parent_id = branch[0].parent_id if branch else None
            prompt = next((c.prompt for c in state.search.candidates if c.id == parent_id), None)
        failed = []
        if ancestry:
            rates = ancestry[-1].check_pass_rate
            failed = sorted((q for q, rate in rates.items() if rate < 1.0), key=lambda q: rates[q])
        rendered = list(dict.fromkeys(c.prompt for c in state.search.candidates))
        counts = {p: len(self._branch(state, p)) for p in scores}
        dropped = [p for prop in state.search.proposals for p, why in [*prop.dropped, *prop.blocked]
                   if why not in ("duplicate", "empty", "not a string")]
        tried: dict[str, str] = {}
        for p in rendered + dropped:
            tried.setdefault(normalize(p), p)
        return RewriteContext(
            intent=state.intent,
            round=r,
            k=k,
            ancestry=ancestry,
            failed_checks=failed,
            checks=list(questions.values()),
            best_prompts=[PromptScore(prompt=p, score=scores[p], seeds=counts[p])
                          for p in sorted((p for p in rendered if p in scores), key=lambda p: -scores[p])],
            tried=list(tried.values()),
            max_prompt_tokens=max_tokens,
            lessons=self.memory.hints(current) if self.memory else [],
            unhelpful_edits=self.memory.unhelpful(current) if self.memory else [],
        )

    @staticmethod
    def _step(prompt: str, branch: list[Candidate], scores: dict[str, float], questions: dict[str, str]) -> BranchStep:
        passed: dict[str, int] = {}
        for c in branch:
            for a in c.critique.answers:
                passed[a.check_id] = passed.get(a.check_id, 0) + a.answer
        feedback = [c.critique.feedback for c in sorted(branch, key=lambda c: c.score) if c.critique.feedback]
        return BranchStep(
            prompt=prompt,
            round=min((c.round for c in branch), default=0),
            score=scores.get(prompt),
            seeds=len(branch),
            check_pass_rate={questions.get(cid, cid): n / len(branch) for cid, n in passed.items()},
            feedback=list(dict.fromkeys(feedback)),
        )

    # ------------------------------------------------------------------------------------------------------------
    # Campaign memory
    # ------------------------------------------------------------------------------------------------------------

    def _learn(self, state: SearchCheckpoint, candidates: list[Candidate], scores: dict[str, float]) -> None:
        """Hand campaign memory each new prompt of the round with its parent's prompt (round 0: the intent's words),
        their branch scores and the checks the new prompt passed more often than its parent."""
        by_id = {c.id: c for c in state.search.candidates}
        questions = {c.id: c.question for c in state.checks}
        for cand in {c.prompt: c for c in candidates if c.source in ("rewrite", "lesson")}.values():
            parent = by_id[cand.parent_id].prompt if cand.parent_id else state.intent.text
            if cand.prompt not in scores or parent not in scores:
                continue
            before = self._step(parent, self._branch(state, parent), scores, questions).check_pass_rate
            after = self._step(cand.prompt, self._branch(state, cand.prompt), scores, questions).check_pass_rate
            fixed = [q for q, rate in after.items() if rate > before.get(q, 0.0)]
            self.memory.observe(state.intent.id, parent, cand.prompt, scores[parent], scores[cand.prompt],
                                fixed if state.checks else None)

    # ------------------------------------------------------------------------------------------------------------
    # A human in the loop (agents.steering)
    # ------------------------------------------------------------------------------------------------------------

    async def _unapplied(self, state: SearchCheckpoint, r: int) -> list[HumanAction]:
        """The intent's actions this run has not applied yet, in the order they were posted."""
        done = {a.action.id for a in state.human_actions}
        actions = await self.steering.actions(state.intent.id, r)
        return [a for a in sorted(actions, key=lambda a: (a.at, a.id)) if a.id not in done]

    def _target(self, state: SearchCheckpoint, target: str | None) -> str | None:
        """The rendered prompt an action names, by candidate id or by the prompt itself (None: no such branch)."""
        for c in state.search.candidates:
            if target in (c.id, c.prompt):
                return c.prompt
        return None

    async def _steer(self, state: SearchCheckpoint, r: int, max_tokens: int | None) -> list[tuple]:
        """Apply the actions not applied yet, in order: pins and vetoes change ``state.beam`` now; added prompts that
        pass the rewrites' checks come back as (parent candidate id, prompt, mark) to be rendered first this round.
        Each is recorded in ``state.human_actions`` (with a note when it had no effect), so it is applied once."""
        out: list[tuple] = []
        for action in await self._unapplied(state, r):
            note = self._apply(state, action) if action.kind != "add_prompt" else None
            if action.kind == "add_prompt":
                proposal, note = await self._human_prompt(state, action, r, max_tokens)
                state.search.proposals.append(proposal)
                if proposal.prompts:
                    mark = HumanMark(action_id=action.id, kind=action.kind, by=action.by, at=action.at)
                    out.append((proposal.parent_id, proposal.prompts[0], mark))
            state.human_actions.append(AppliedAction(action=action, round=r, note=note))
        return out

    def _apply(self, state: SearchCheckpoint, action: HumanAction) -> str | None:
        """A pin, veto or accept: its effect on the state now; the reason it had none, if so."""
        if action.kind == "accept":
            return None if state.review is not None else "not waiting for review: the intent will not wait"
        prompt = self._target(state, action.target)
        if prompt is None:
            return f"no branch {action.target[:80]!r} in this intent"
        mark = HumanMark(action_id=action.id, kind=action.kind, by=action.by, at=action.at)
        branch = [c for c in state.search.candidates if c.prompt == prompt]
        if action.kind == "pin":
            state.pinned = [*dict.fromkeys([*state.pinned, prompt])]
            state.vetoed = [p for p in state.vetoed if p != prompt]
            for c in branch:
                c.human.append(mark)
                if c.status is CandidateStatus.vetoed:  # the later action wins
                    c.status = CandidateStatus.scored
            state.beam = self._select(state, [*state.beam, prompt], self._branch_scores(state))
            return None
        state.vetoed = [*dict.fromkeys([*state.vetoed, prompt])]
        state.pinned = [p for p in state.pinned if p != prompt]
        state.beam = [p for p in state.beam if p != prompt]
        for c in branch:
            c.human.append(mark)
            if c.status is CandidateStatus.scored and c.score is not None:
                c.status = CandidateStatus.vetoed
        return None

    async def _human_prompt(self, state: SearchCheckpoint, action: HumanAction, r: int, max_tokens: int | None
                            ) -> tuple[Proposal, str | None]:
        """A person's prompt, checked like any rewrite (length in renderer tokens, duplicates, output filter); its
        parent is the best image of the branch it names (none named or found: a new root)."""
        parent = self._target(state, action.target) if action.target else None
        parent_id = self._best(state, parent).id if parent is not None and self._branch(state, parent) else None
        text = clean_prompt(action.prompt or "")
        tokens = iter(await self.renderer.count_tokens([text]) if max_tokens else [0])
        seen = ({normalize(state.intent.text)} | {normalize(c.prompt) for c in state.search.candidates}
                | {normalize(p) for prop in state.search.proposals if prop.round == r and prop.source == "human"
                   for p in prop.prompts})
        proposal = self._check_reply(RewriteReply(prompts=[text]), parent_id, seen, tokens, max_tokens)
        proposal.round, proposal.source = r, "human"
        if not proposal.prompts:
            proposal.error = None
            why = [*proposal.dropped, *proposal.blocked]
            return proposal, f"not rendered: {why[0][1] if why else 'unusable'}"
        if action.target and parent is None:
            return proposal, f"no branch {action.target[:80]!r}: rendered as a new root"
        return proposal, None

    def _best_score(self, state: SearchCheckpoint) -> float | None:
        return max((c.score for c in state.search.candidates
                    if c.score is not None and c.status is CandidateStatus.scored), default=None)

    async def _review(self, state: SearchCheckpoint, on_round: RoundCallback | None) -> bool:
        """The search stopped: with a review policy and its best score under the threshold, the intent waits for a
        person (see ``agents.steering``). True: a person acted, run another round; False: finish."""
        review = self.steering.review if self.steering is not None else None
        best = self._best_score(state)
        if review is None or (best is not None and best >= review.threshold):
            return False
        if state.review is not None and state.review.ended in ("accepted", "timed_out"):
            return False
        now = self.steering.now()
        if state.review is None or state.review.ended is not None:  # it begins waiting (again, after a person's round)
            state.review = ReviewState(since=now, best_score=best)
        new = await self._unapplied(state, state.rounds_done)
        accepted = [a for a in new if a.kind == "accept"]
        if accepted or any(a.action.kind == "accept" for a in state.human_actions):
            for action in new:  # pins and vetoes still change what the result shows; prompts are not rendered
                note = ("not rendered: the intent was accepted" if action.kind == "add_prompt"
                        else self._apply(state, action))
                state.human_actions.append(AppliedAction(action=action, round=state.rounds_done, note=note))
            who = accepted[0].by if accepted else next(a.action.by for a in state.human_actions
                                                        if a.action.kind == "accept")
            state.review = state.review.model_copy(update={"ended": "accepted", "by": who, "ended_at": now})
            return False
        if new:  # one more round with the person's input (applied at its start)
            state.review = state.review.model_copy(update={"ended": "steered", "by": new[-1].by, "ended_at": now})
            state.stop_reason, state.round_limit = None, state.rounds_done + 1
            return True
        deadline = state.review.since + review.timeout_s
        if now >= deadline:
            state.review = state.review.model_copy(update={"ended": "timed_out", "ended_at": now})
            return False
        if on_round is not None:
            await on_round(state.model_copy(deep=True))
        raise AwaitingReview(state.intent.id, state.review.since, deadline)

    # ------------------------------------------------------------------------------------------------------------
    # Checks, checkpoints, results
    # ------------------------------------------------------------------------------------------------------------

    def _check(self, intent: Intent) -> None:
        reason = self.moderator.check(intent.text) or (
            self.moderator.check(intent.negative_prompt) if intent.negative_prompt else None
        )
        if reason:
            raise IntentRejected(f"intent {intent.id!r} was refused by moderation: {reason}", by_moderation=True)
        if reason := check_intent(intent, self.config):
            raise IntentRejected(reason)

    def _restore(self, checkpoint: SearchCheckpoint, intent: Intent, baseline: bool) -> SearchCheckpoint:
        if checkpoint.intent != intent:
            raise ValueError(f"checkpoint is for intent {checkpoint.intent.id!r}, not {intent.id!r} as given")
        config = self.config.model_dump(mode="json")
        changed = sorted(k for k in config.keys() | checkpoint.config.keys() if config.get(k) != checkpoint.config.get(k))
        if changed:
            raise ValueError(
                f"checkpoint of intent {intent.id!r} was made under another search config: "
                + ", ".join(f"{k} {checkpoint.config.get(k)!r} -> {config.get(k)!r}" for k in changed)
            )
        if baseline != (checkpoint.baseline is not None):
            raise ValueError(f"checkpoint of intent {intent.id!r} has baseline={checkpoint.baseline is not None}, "
                             f"resumed with baseline={baseline}")
        return checkpoint.model_copy(deep=True)

    def _result(self, state: SearchCheckpoint, arm: ArmState, mode: str) -> SearchResult:
        scored = [c for c in arm.candidates if c.score is not None and c.status is CandidateStatus.scored]
        best = max(scored, key=lambda c: c.score) if scored else None  # max keeps the first of equal scores
        per_round = arm.best_score_per_round
        if any(c.status is CandidateStatus.vetoed for c in arm.candidates):  # a vetoed image is no round's best
            per_round = [max((c.score for c in scored if c.round == r), default=None) for r in range(len(per_round))]
        return SearchResult(
            intent=state.intent,
            mode=mode,
            candidates=arm.candidates,
            proposals=arm.proposals,
            best_id=best.id if best else None,
            rounds_run=state.rounds_done,
            stop_reason=state.stop_reason if arm.candidates else "no_candidates",
            best_score_per_round=per_round,
            branch_score_per_round=state.branch_score_per_round if mode == "beam" else [],
            counts=arm.counts,
            checks=state.checks,
            human_actions=state.human_actions if mode == "beam" else [],
            review=state.review if mode == "beam" else None,
        )
