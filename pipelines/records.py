"""The campaign's records: what a campaign submits and what its store holds, one definition each.

    CampaignSpec      what a user submits: intents, typed search overrides, agent configs, baseline policy
    Manifest          what a store knows about its campaign: resolved configs, models (ModelsRecord), the resume
                      fingerprint, the layout version (STORE_FORMAT)
    IntentOutcome     one finished intent, a line of results.jsonl: each arm's best (ArmResult) and costs, the paired
                      improvement
    LineageRecord     one candidate, a line of lineage.jsonl: the planner's Candidate and the arm it belongs to
    IntentPart        one committed intent in the store: its outcome and its lineage
    ABManifest        a model A/B's parent (ab.json): its two variants and their campaigns (pipelines/ab.py)

Stored files are these records as JSON; code outside this module reads them through the models, never by key. The
HTTP API's own answers (CampaignStatus, CampaignPage, ErrorBody, ...) are :mod:`pipelines.wire`; the fold of
outcomes into a campaign's summary is :mod:`pipelines.tally`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.config import CriticConfig, RewriterConfig, SearchConfig
from agents.messages import SAFE_NAME, AppliedAction, CallCounts, Candidate, Intent, ReviewState, SearchResult
from agents.planner import baseline_fraction, baseline_sampled, check_intent
from agents.steering import ReviewConfig
from serving.presets import ModelPreset, RenderDefaults, partial_model

MAX_INTENTS = 100_000
NAME_PATTERN = SAFE_NAME
MAX_NAME_CHARS = 100
"""Campaign names: letters, digits, ``_.-``, not starting with a dot (a name becomes a folder in the store)."""


def name_from(text: str) -> str:
    """A campaign name made from any text (a file's stem): characters outside :data:`NAME_PATTERN` become ``-``, a
    leading dot goes, at most :data:`MAX_NAME_CHARS`; ``campaign`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", text).lstrip(".")[:MAX_NAME_CHARS] or "campaign"


STORE_FORMAT = 2
"""Version of the stored records' layout; a store written in another layout is refused with a clear message."""


class Record(BaseModel):
    """Base of the campaign records (and of the API's wire types, :mod:`pipelines.wire`): unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------------------------------------------------

DEFAULT_RENDERER = "diffusion"
"""The app's renderer deployment for the preset's diffusion model; others are named in ``AppConfig.renderers``."""
VARIANT_PATTERN = r"^[a-z][a-z0-9_]{0,19}$"
"""A/B variant names: short, lower case; a variant's campaign is ``<campaign>.<variant>``."""

SearchOverrides = partial_model(SearchConfig, "SearchOverrides")
"""SearchConfig's fields, each optional: what a campaign sets; the rest come from the model preset's defaults
(image size, steps, guidance) and SearchConfig's own defaults."""


def parse_intents_jsonl(text: str) -> list[Intent]:
    """One intent per line (blank lines and '#' comments skipped). Errors name the line."""
    intents = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            intents.append(Intent.model_validate_json(line))
        except ValueError as exc:
            raise ValueError(f"line {n}: {exc}") from exc
    return intents


class ABVariant(Record):
    """One side of a model A/B: the renderer deployment it renders on and the render settings it changes. Everything
    else (intents, search, seeds, rewriter, critic, baseline, budget) is the campaign's, the same for both sides."""

    renderer: str = Field(default=DEFAULT_RENDERER, pattern=SAFE_NAME, max_length=63,
                          description="A renderer deployment of the app: 'diffusion' (the preset's model) or a name in "
                          "the app's `renderers` (AppConfig).")
    steps: int | None = Field(default=None, ge=1, le=200, description="Denoising steps; None: the campaign's.")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0,
                                         description="Classifier-free guidance; None: the campaign's.")


class CampaignSpec(Record):
    """What a user submits. Give intents inline or as JSONL text (one Intent object per line)."""

    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, min_length=1, max_length=MAX_NAME_CHARS,
        description="Campaign id. Default: a hash of the intents and config, so resubmitting resumes.",
    )
    intents: list[Intent] | None = Field(default=None, max_length=MAX_INTENTS)
    intents_jsonl: str | None = Field(default=None, description="Intents as JSONL text.")
    search: SearchOverrides = Field(  # type: ignore[valid-type]
        default_factory=SearchOverrides,
        description="SearchConfig fields; unset image size/steps/guidance come from the served model preset.",
    )
    rewriter: RewriterConfig = Field(default_factory=RewriterConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    baseline: str = Field(
        default="all", pattern=r"^(all|none|sample:(0?\.\d+|1(\.0*)?|0))$",
        description="Which intents also run the best-of-N baseline at equal budget: 'all', 'none', or "
        "'sample:<fraction>' (e.g. 'sample:0.2'; intents chosen by a stable hash of their id).",
    )
    preset: str | None = Field(default=None, description="Must match the served model preset when given.")
    concurrency: int | None = Field(
        default=None, ge=1, le=1024,
        description="Intents searched at once. Default: enough to keep the renderer's batches full "
        "(its max_batch_size x replicas, with headroom).",
    )
    max_image_bytes_in_flight: int = Field(
        default=256 * 2**20, ge=2**20, le=2**36,
        description="Image bytes the campaign process holds at once, over all intents (agents.budget.ImageBudget): "
        "a render call reserves what its images may bring back (3 bytes a pixel, the critic's variant included) and "
        "waits while the cap is reached; where the renderer stored the images only their critic variants stay once "
        "the call returns. The default admits ~24 calls of eight 512x512 images at once, or ~9 of 1024x1024.",
    )
    budget_images: int | None = Field(
        default=None, ge=1, le=10**9,
        description="Images the whole campaign's search arm may render (agents.allocation.ImageAllocator): each "
        "intent starts with an even share (budget / intents, at most search.max_images); an intent that stops early "
        "gives back what it did not spend, and intents still improving draw on it. Never exceeded. The baseline arm "
        "renders as many images as the search, on top. None: each intent is bounded by search.max_images alone. "
        "With planner workers the workers ask the runner's allocator for each round.",
    )
    budget_device_seconds: float | None = Field(
        default=None, gt=0, le=1e9,
        description="Device seconds (the renderer's pipeline-call time, each image's share) the whole campaign's "
        "search arm may use, shared among intents by the same rule as budget_images "
        "(agents.allocation.DeviceSecondsAllocator): a round reserves its images at the dearest seconds per image "
        "seen (first a probe of one image), and is charged what it took once rendered. Exclusive with budget_images.",
    )
    budget_rule: Literal["adaptive", "even"] = Field(
        default="adaptive",
        description="adaptive: unspent shares go to intents still improving; even: each intent spends at most its "
        "even share (the comparison arm).",
    )
    renderer: str = Field(
        default=DEFAULT_RENDERER, pattern=SAFE_NAME, max_length=63,
        description="The renderer deployment this campaign renders on: 'diffusion' (the preset's model) or a name in "
        "the app's `renderers`.",
    )
    ab: dict[str, ABVariant] | None = Field(
        default=None,
        description="Model A/B: exactly two variants, keyed by name (lower case, e.g. 'a', 'fast'). The campaign runs "
        "as two campaigns '<id>.<variant>', one per variant, with the same intents, search and seeds; "
        "GET /v1/campaigns/{id}/ab compares them paired by intent (pipelines/ab.py).",
    )
    review: ReviewConfig | None = Field(
        default=None,
        description="A human in the loop (agents.steering): an intent whose best score stays under review.threshold "
        "waits for a person (GET .../review) until one acts or review.timeout_s passes. None: intents never wait. Not "
        "part of the campaign's identity: a resume may change it.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> CampaignSpec:
        if (self.intents is None) == (self.intents_jsonl is None):
            raise ValueError("give exactly one of `intents` and `intents_jsonl`")
        if self.intents_jsonl is not None:
            self.intents = parse_intents_jsonl(self.intents_jsonl)
            self.intents_jsonl = None
        if not self.intents:
            raise ValueError("a campaign needs at least one intent")
        if len(self.intents) > MAX_INTENTS:
            raise ValueError(f"a campaign holds at most {MAX_INTENTS} intents but has {len(self.intents)}")
        repeated = sorted(i for i, n in Counter(i.id for i in self.intents).items() if n > 1)
        if repeated:
            raise ValueError(f"intent ids must be unique; repeated: {repeated[:5]}")
        if self.ab is not None:
            self._check_ab(self.ab)
        if self.budget_images is not None and self.budget_device_seconds is not None:
            raise ValueError("give budget_images or budget_device_seconds, not both")
        return self

    def _check_ab(self, ab: dict[str, ABVariant]) -> None:
        if len(ab) != 2:
            raise ValueError(f"ab needs exactly two variants but has {len(ab)}")
        bad = [n for n in ab if re.fullmatch(VARIANT_PATTERN, n) is None]
        if bad:
            raise ValueError(f"ab variant names must match {VARIANT_PATTERN} (lower case, at most 20 characters); "
                             f"not {bad[0][:40]!r}")
        if self.renderer != DEFAULT_RENDERER:
            raise ValueError("with ab, each variant names its renderer; leave the campaign's `renderer` unset")
        first, second = ab.values()
        if first == second:
            raise ValueError("the two ab variants are the same (renderer, steps and guidance_scale): nothing to compare")
        longest = len(self.campaign_id()) + 1 + max(map(len, ab))
        if longest > MAX_NAME_CHARS:
            raise ValueError(f"a variant's campaign id '<name>.<variant>' would have {longest} characters; the most "
                             f"is {MAX_NAME_CHARS}: use a shorter name")

    def variants(self) -> dict[str, CampaignSpec]:
        """An A/B campaign's two campaigns, by variant name: this spec with the variant's renderer and render settings,
        named ``<id>.<variant>``. Seeds derive from the base seed, the intent id and the candidate id, so both sides
        draw the same seeds for the same candidates."""
        if self.ab is None:
            raise ValueError("this campaign has no ab variants")
        out = {}
        for name, variant in self.ab.items():
            search = {**self.search_overrides(), **variant.model_dump(include={"steps", "guidance_scale"},
                                                                      exclude_none=True)}
            out[name] = self.model_copy(update={
                "name": f"{self.campaign_id()}.{name}", "ab": None, "renderer": variant.renderer,
                "search": SearchOverrides.model_validate(search)})
        return out

    @property
    def baseline_fraction(self) -> float:
        """Share of intents that run the baseline: 1 for 'all', 0 for 'none'."""
        return baseline_fraction(self.baseline)

    def runs_baseline(self, intent_id: str, search: SearchConfig) -> bool:
        """A stable draw per intent (its id and the search's base seed): every run, resume and reader agree."""
        return search.run_baseline and baseline_sampled(intent_id, self.baseline_fraction, search.base_seed)

    def search_config(self, defaults: RenderDefaults | None = None) -> SearchConfig:
        """The search config: the preset's image defaults overlaid with what the user set, validated together.
        Raises ValueError (with the values) for a negative prompt the renderer would silently ignore."""
        base = defaults.model_dump() if defaults is not None else {}
        config = SearchConfig(**{**base, **self.search_overrides()})
        problems = [p for i in self.intents or [] if (p := check_intent(i, config))]
        if problems:
            more = f" (and {len(problems) - 1} more intents like it)" if len(problems) > 1 else ""
            raise ValueError(problems[0] + more)
        return config

    def search_overrides(self) -> dict[str, Any]:
        """The search fields the user set. None means "not set" (no SearchConfig field takes None), so a spec that went
        through JSON with explicit nulls means the same as one without them."""
        return self.search.model_dump(mode="json", exclude_none=True)

    def spec_hash(self) -> str:
        """Hash of what the user submitted (the default campaign id)."""
        body = {
            "intents": [i.model_dump(mode="json") for i in self.intents or []],
            "search": self.search_overrides(),
            "rewriter": self.rewriter.model_dump(mode="json"),
            "critic": self.critic.model_dump(mode="json"),
            "baseline": self.baseline,
            **self.budget_identity(),
            **self.renderer_identity(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def budget_identity(self) -> dict[str, Any]:
        """The campaign budget as it enters the id and the fingerprint: nothing when unset (campaigns stored before
        budgets existed keep theirs)."""
        if self.budget_device_seconds is not None:
            return {"budget_device_seconds": self.budget_device_seconds, "budget_rule": self.budget_rule}
        if self.budget_images is None:
            return {}
        return {"budget_images": self.budget_images, "budget_rule": self.budget_rule}

    def renderer_identity(self) -> dict[str, Any]:
        """The renderer choice and the A/B variants as they enter the id: nothing when unset (campaigns stored before
        either existed keep theirs)."""
        out: dict[str, Any] = {}
        if self.renderer != DEFAULT_RENDERER:
            out["renderer"] = self.renderer
        if self.ab is not None:
            out["ab"] = {k: v.model_dump(mode="json") for k, v in sorted(self.ab.items())}
        return out

    def campaign_id(self) -> str:
        return self.name or "c-" + self.spec_hash()[:12]


# ---------------------------------------------------------------------------------------------------------------------
# The store's manifest
# ---------------------------------------------------------------------------------------------------------------------


class ABManifest(Record):
    """``ab.json`` in the parent campaign's folder: the two variants and their campaigns, in the spec's order."""

    id: str
    created_at: float
    fingerprint: str = Field(description="The A/B spec's hash: a resubmission with another setup is refused.")
    variants: dict[str, ABVariant]
    campaigns: dict[str, str] = Field(description="Variant name -> its campaign id ('<id>.<variant>').")
    solved_at: float = Field(description="A best score at or above this counts as solved (search.score_threshold).")

    @classmethod
    def of(cls, spec: CampaignSpec, solved_at: float, created_at: float) -> ABManifest:
        children = spec.variants()
        return cls(id=spec.campaign_id(), created_at=created_at, fingerprint=spec.spec_hash(), variants=spec.ab,
                   campaigns={name: child.campaign_id() for name, child in children.items()}, solved_at=solved_at)




class ModelsRecord(Record):
    """The models a campaign ran with: what makes two runs' images and scores comparable."""

    preset: str = Field(description="Preset name (recorded; not part of the identity).")
    diffusion: str
    diffusion_dtype: str
    llm: str | None
    llm_dtype: str | None
    rewriter: str
    critic: str
    rewriter_endpoint: str | None = Field(
        default=None, description="'<model> at <base_url>' when the rewriter runs on an OpenAI-compatible endpoint."
    )
    critic_endpoint: str | None = Field(
        default=None, description="'<model> at <base_url>' when the critic runs on an OpenAI-compatible endpoint."
    )
    renderer: str = Field(default=DEFAULT_RENDERER,
                          description="The renderer deployment (recorded; its model is `diffusion`, which counts).")

    @classmethod
    def of(cls, preset: ModelPreset) -> ModelsRecord:
        def where(endpoint) -> str | None:
            return f"{endpoint.model} at {endpoint.base_url}" if endpoint is not None else None

        # The preset's llm is recorded unless endpoints replaced every role it would have served.
        no_endpoints = preset.endpoints.rewriter is None and preset.endpoints.critic is None
        llm = preset.llm if preset.needs_llm or no_endpoints else None
        return cls(
            preset=preset.name, diffusion=preset.diffusion.model, diffusion_dtype=preset.diffusion.dtype,
            llm=llm.model if llm else None, llm_dtype=llm.dtype if llm else None,
            rewriter=preset.rewriter, critic=preset.critic,
            rewriter_endpoint=where(preset.endpoints.rewriter), critic_endpoint=where(preset.endpoints.critic),
        )

    def identity(self) -> dict[str, Any]:
        # Endpoint fields count only when set, so campaigns stored before they existed keep their fingerprint.
        identity = self.model_dump(exclude={"preset", "renderer"})
        for key in ("rewriter_endpoint", "critic_endpoint"):
            if identity[key] is None:
                del identity[key]
        return identity

    def describe(self) -> str:
        llm = f"llm {self.llm!r} ({self.llm_dtype})" if self.llm else "no llm"
        rewriter = self.rewriter_endpoint or self.rewriter
        critic = self.critic_endpoint or self.critic
        return f"diffusion {self.diffusion!r} ({self.diffusion_dtype}), {llm}, rewriter {rewriter}, critic {critic}"


class Manifest(Record):
    """``manifest.json``: the resolved campaign. ``fingerprint`` covers everything that changes its results."""

    format: int = Field(default=STORE_FORMAT, description="Layout version of the stored records.")
    id: str
    fingerprint: str
    created_at: float
    intents: int
    intent_ids: list[str] = Field(description="Campaign order: results and reports follow it.")
    search: SearchConfig = Field(description="Resolved: preset defaults + the campaign's overrides.")
    rewriter: RewriterConfig
    critic: CriticConfig
    baseline: str
    models: ModelsRecord
    concurrency: int
    versions: dict[str, str] = Field(default_factory=dict)
    seeds: dict[str, Any] = Field(default_factory=dict, description="How seeds are derived (for reproduction).")
    rewriter_knows: str = Field(
        default="", max_length=500,
        description="The rewriter in one line: what it reads (an ORACLE says it is one). Shown by the report, the CLI "
        "and the status; not part of the fingerprint (the models and the rewriter config are).",
    )
    budget_images: int | None = Field(default=None, description="The campaign's image budget (search arm); None: none.")
    budget_rule: str | None = Field(default=None, description="How the budget is shared (adaptive, even).")
    budget_device_seconds: float | None = Field(default=None, description="The campaign's device-seconds budget.")
    review: ReviewConfig | None = Field(default=None, description="When intents wait for a person (CampaignSpec.review); "
                                        "not part of the fingerprint.")

    @staticmethod
    def compute_fingerprint(spec: CampaignSpec, search: SearchConfig, models: ModelsRecord) -> str:
        """Intents, the resolved search config (so the preset's image size/steps/guidance count), agent configs,
        the baseline policy and the models' identity."""
        body = {
            "intents": [i.model_dump(mode="json") for i in spec.intents or []],
            # memory off (the default) leaves the fingerprint of campaigns stored before memory existed unchanged
            "search": search.model_dump(mode="json", exclude={"memory"} if not search.memory.enabled else None),
            "rewriter": spec.rewriter.model_dump(mode="json"),
            "critic": spec.critic.model_dump(mode="json"),
            "baseline": spec.baseline,
            "models": models.identity(),
            **spec.budget_identity(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def difference(self, other: Manifest) -> str:
        """What differs between this (stored) campaign and ``other`` (requested), naming both sides' values."""
        parts = []
        if self.models.identity() != other.models.identity():
            parts.append(f"models: stored {self.models.describe()}; requested {other.models.describe()}")
        if self.intent_ids != other.intent_ids:
            parts.append(f"intents: stored {self.intents} ({self.intent_ids[:3]}...), requested {other.intents} "
                         f"({other.intent_ids[:3]}...)")
        for section in ("search", "rewriter", "critic"):
            a, b = getattr(self, section).model_dump(), getattr(other, section).model_dump()
            changed = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
            if changed:
                parts.append(f"{section}: " + ", ".join(f"{k} stored {x!r} requested {y!r}" for k, (x, y) in changed.items()))
        if self.baseline != other.baseline:
            parts.append(f"baseline: stored {self.baseline!r}, requested {other.baseline!r}")
        if (self.budget_images, self.budget_device_seconds, self.budget_rule) != (
                other.budget_images, other.budget_device_seconds, other.budget_rule):
            def says(m: Manifest) -> str:
                kind = f"{m.budget_device_seconds!r} device seconds" if m.budget_device_seconds else repr(m.budget_images)
                return f"{kind} ({m.budget_rule})"

            parts.append(f"budget: stored {says(self)}, requested {says(other)}")
        return "; ".join(parts) or "intent texts or checks differ"


# ---------------------------------------------------------------------------------------------------------------------
# Per-intent records
# ---------------------------------------------------------------------------------------------------------------------

Arm = Literal["beam", "best_of_n"]


class ArmResult(Record):
    """One arm of an intent: the search ('beam') or the best-of-N baseline of the original prompt ('best_of_n')."""

    mode: Arm
    best_id: str | None
    best_prompt: str | None
    best_seed: int | None
    best_image: str | None = Field(description="Store path of the best image, relative to the campaign.")
    best_score: float | None
    best_held_out: dict[str, float] = Field(default_factory=dict, description="Held-out scores of the best image.")
    rounds: int
    stop_reason: str
    best_score_per_round: list[float | None]
    counts: CallCounts = Field(description="This arm's costs (images, render calls, LLM calls, tokens, ...).")

    @classmethod
    def of(cls, result: SearchResult) -> ArmResult:
        best = result.best
        return cls(
            mode=result.mode, best_id=best.id if best else None, best_prompt=best.prompt if best else None,
            best_seed=best.seed if best else None, best_image=best.image if best else None,
            best_score=best.score if best else None,
            best_held_out=dict(best.critique.held_out) if best and best.critique else {},
            rounds=result.rounds_run, stop_reason=result.stop_reason,
            best_score_per_round=list(result.best_score_per_round), counts=result.counts,
        )


class IntentOutcome(Record):
    """One finished intent: a line of ``results.jsonl``. Failed intents (infrastructure) are never committed."""

    intent_id: str
    intent: str = Field(description="The intent's text.")
    status: Literal["done", "rejected"]
    error: str | None = Field(default=None, description="Why a rejected intent was refused.")
    search: ArmResult | None = None
    baseline: ArmResult | None = Field(default=None, description="None when the campaign's baseline policy skips it.")
    improvement: float | None = Field(
        default=None, description="Search best minus baseline best (same checks, same critic): the paired difference."
    )
    held_out_improvement: dict[str, float] = Field(
        default_factory=dict, description="The same difference on each held-out scorer (never optimised)."
    )
    checks: list[str] = Field(default_factory=list, description="The yes/no questions both arms were scored on.")
    rewrites_blocked: int = Field(
        default=0, description="Rewrites the output filter dropped before rendering (moderation or injection markers); "
        "not images: an image the output check withheld is a candidate with status 'withheld'.",
    )
    resumed_from_round: int | None = Field(
        default=None, description="Set when this intent continued from a checkpoint: the rounds finished before.",
    )
    human_actions: list[AppliedAction] = Field(
        default_factory=list, description="People's actions on this intent (who, when, the round they took effect at).",
    )
    review: ReviewState | None = Field(default=None, description="Set when the intent waited for review: how it ended.")

    @classmethod
    def done(cls, search: SearchResult, baseline: SearchResult | None) -> IntentOutcome:
        arm, base = ArmResult.of(search), ArmResult.of(baseline) if baseline else None
        improvement = None
        held_out: dict[str, float] = {}
        if base is not None and arm.best_score is not None and base.best_score is not None:
            improvement = arm.best_score - base.best_score
            held_out = {k: v - base.best_held_out[k] for k, v in arm.best_held_out.items() if k in base.best_held_out}
        return cls(
            intent_id=search.intent.id, intent=search.intent.text, status="done", search=arm, baseline=base,
            improvement=improvement, held_out_improvement=held_out, checks=[c.question for c in search.checks],
            rewrites_blocked=sum(len(p.blocked) for p in search.proposals),
            human_actions=search.human_actions, review=search.review,
        )

    @classmethod
    def rejected(cls, intent: Intent, error: str) -> IntentOutcome:
        return cls(intent_id=intent.id, intent=intent.text, status="rejected", error=error)

    @property
    def arms(self) -> list[ArmResult]:
        return [a for a in (self.search, self.baseline) if a is not None]

    @property
    def images(self) -> int:
        """Images rendered for this intent, both arms."""
        return sum(a.counts.images for a in self.arms)


class LineageRecord(Candidate):
    """One candidate of either arm: a line of ``lineage.jsonl`` (every Candidate field, plus its arm)."""

    mode: Arm

    @classmethod
    def of(cls, candidate: Candidate, mode: Arm) -> LineageRecord:
        return cls.model_validate({**candidate.model_dump(), "mode": mode})


def lineage_of(search: SearchResult, baseline: SearchResult | None) -> list[LineageRecord]:
    return [LineageRecord.of(c, r.mode) for r in (search, baseline) if r is not None for c in r.candidates]


class IntentPart(Record):
    """``parts/<intent>.json``: one committed intent (its presence is what "done" means)."""

    outcome: IntentOutcome
    lineage: list[LineageRecord] = Field(default_factory=list)
