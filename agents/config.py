"""Agent and search configuration: one model per concern, every field described and bounded."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.messages import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MIN_CRITIC_PIXELS


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemoryConfig(_Config):
    """Campaign memory (``agents.memory``): edits that raised one intent's score, offered to the campaign's next
    intents as hints to the rewriter and as directly edited prompts in the beam."""

    enabled: bool = Field(default=False, description="Learn lessons from this campaign's rewrites and use them.")
    lessons_in_context: int = Field(
        default=5, ge=0, le=20, description="Applicable lessons shown to the rewriter (inside <user_data>)."
    )
    apply_lessons: int = Field(
        default=1, ge=0, le=8,
        description="Prompts per branch and round made by applying lessons directly (no model call); they compete "
        "in the beam and count against the budget like any prompt. 0: hints only.",
    )
    min_wins: int = Field(default=1, ge=1, le=100, description="Wins (and more wins than losses) before a lesson is used.")
    min_win_rate: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="... and at least this share of its tries won: a lesson whose tries stop winning (ties count) "
        "loses its support.",
    )
    min_gain: float = Field(
        default=0.02, ge=0.0, le=1.0,
        description="A try wins when the child's branch score beats its parent's by more than this and (when the "
        "critic asks checks) the child passes some check more often; it loses when it scores this much lower.",
    )
    unhelpful_in_context: int = Field(
        default=100, ge=0, le=1000, description="Unhelpful edits handed to the rewriter (a searching rewriter skips them)."
    )
    start_from: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$",
        description="Start with the lessons of this earlier campaign in the same store (its evidence included). "
        "Default: none; campaigns never share lessons unless asked.",
    )
    max_phrase_words: int = Field(default=3, ge=1, le=8, description="Longest phrase on either side of a lesson.")
    max_edits: int = Field(default=3, ge=1, le=8, description="A rewrite with more separate edits teaches nothing.")


class SearchConfig(_Config):
    """How hard to search for one intent.

    Round 0 renders the original prompt and ``candidates_per_beam`` (K) rewrites of it; each later round renders K
    children of each of the ``beam_width`` (B) best branches. Every prompt is rendered on ``seeds_per_prompt`` (S)
    seeds. In ``paired`` seed mode all prompts of a round share seeds (common random numbers): round 0's prompts share
    one seed set; a child keeps its parent's best S - E seeds and adds the round's E = ``explore_seeds`` new seeds,
    which every prompt of the round shares. ``max_images`` caps the total; a round is cut by whole prompts (every
    prompt gets all S seeds), so selection never favours a prompt scored on fewer seeds.
    :meth:`round_plan` / :meth:`planned_images` say what a full run renders.
    """

    beam_width: int = Field(default=2, ge=1, le=16, description="Branches kept after each round (B).")
    candidates_per_beam: int = Field(default=2, ge=1, le=16, description="Rewrites proposed per branch per round (K).")
    rounds: int = Field(default=3, ge=1, le=20, description="Rounds including round 0 (R).")
    seeds_per_prompt: int = Field(default=2, ge=1, le=8, description="Seeds each prompt is rendered on per round (S).")
    seed_mode: Literal["paired", "fresh", "spread"] = Field(
        default="paired",
        description="paired: prompts of a round share seeds and children keep their parent's best seeds; "
        "fresh: every image gets its own new seed (the unpaired ablation); spread: the search's n-th image takes "
        "best-of-N's n-th seed, so the search draws exactly the seeds best-of-N draws and only the prompts differ "
        "(with one seed per prompt, paired draws one new seed a round; spread draws one an image).",
    )
    explore_seeds: int = Field(
        default=1, ge=0, le=8,
        description="Paired mode, rounds >= 1: of a prompt's S seeds, this many are new seeds shared by the round; "
        "the other S - E are its parent's best seeds. 0 never explores; S never carries.",
    )
    max_images: int = Field(default=64, ge=1, le=10_000, description="Image budget of one intent; never exceeded.")
    score_threshold: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Stop after the first round whose best branch score reaches this."
    )
    patience: int = Field(default=2, ge=1, le=20, description="Stop after this many rounds without improvement.")
    min_improvement: float = Field(
        default=1e-3, ge=0.0, le=1.0, description="A smaller gain of the best branch score counts as no improvement."
    )
    temperature: float = Field(default=0.8, ge=0.0, le=2.0, description="Rewriter sampling temperature.")
    retry_temperature: float = Field(
        default=1.2, ge=0.0, le=2.0,
        description="Temperature of the one retry of a round whose rewrites were all unusable (duplicate, too long, "
        "blocked); if the retry fails too, the round renders the beam's prompts on new seeds instead.",
    )
    base_seed: int = Field(default=0, ge=0, lt=2**31, description="Seeds of an intent derive from this and its id.")
    run_baseline: bool = Field(default=True, description="Also run best-of-N of the original prompt at equal budget.")
    steps: int = Field(default=4, ge=1, le=200, description="Denoising steps per image.")
    guidance_scale: float = Field(default=0.0, ge=0.0, le=30.0, description="CFG scale; <= 1 disables CFG.")
    width: int = Field(default=64, ge=8, le=MAX_IMAGE_SIDE, multiple_of=8, description="Image width in pixels.")
    height: int = Field(default=64, ge=8, le=MAX_IMAGE_SIDE, multiple_of=8, description="Image height in pixels.")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="Campaign memory (off by default).")

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        k, s = self.candidates_per_beam, self.seeds_per_prompt
        round0 = (1 + k) * s
        if self.max_images < round0:
            raise ValueError(
                f"max_images ({self.max_images}) must be at least the images of round 0: "
                f"(1 + candidates_per_beam ({k})) x seeds_per_prompt ({s}) = {round0}"
            )
        if self.explore_seeds > s:
            raise ValueError(f"explore_seeds ({self.explore_seeds}) must be at most seeds_per_prompt ({s})")
        prompts = sum(self.round_plan())
        if self.beam_width > prompts:
            raise ValueError(
                f"beam_width ({self.beam_width}) can never be filled: with candidates_per_beam ({k}), rounds "
                f"({self.rounds}), seeds_per_prompt ({s}) and max_images ({self.max_images}) the search renders "
                f"{prompts} prompts in all"
            )
        return self

    def round_plan(self) -> list[int]:
        """Prompts rendered in each round of a full run (every rewrite usable, no early stop), budget applied.

        The beam after a round holds min(B, prompts so far); the next round asks K children of each; a round is cut to
        the whole prompts that the remaining budget can render on all S seeds. The planner cuts rounds the same way."""
        slots = self.max_images // self.seeds_per_prompt
        plan: list[int] = []
        width = 0
        for r in range(self.rounds):
            n = min(1 + self.candidates_per_beam if r == 0 else width * self.candidates_per_beam, slots)
            if n == 0:
                break
            plan.append(n)
            slots -= n
            width = min(self.beam_width, width + n)
        return plan

    def planned_images(self) -> int:
        """Images a full run renders (see :meth:`round_plan`); an upper bound for any run."""
        return sum(self.round_plan()) * self.seeds_per_prompt


class RewriterConfig(_Config):
    """The LLM that proposes prompts."""

    mode: Literal["rewrite", "edit"] = Field(
        default="rewrite",
        description="rewrite: the model writes whole prompts; edit: the model only rewords the intent's phrases (those "
        "the failed checks quote, with feedback) and every other word is kept by rule (agents.edits) - the narrow "
        "task small models do well.",
    )
    max_prompt_chars: int = Field(default=300, ge=10, le=1000, description="Longer rewrites are dropped.")
    history_size: int = Field(default=6, ge=0, le=50, description="Best distinct prompts shown, best first.")
    context_tokens: int = Field(
        default=1500, ge=200, le=32768,
        description="Budget of the rendered user message (estimated as characters / 4): the oldest tried prompts, "
        "then the weakest best prompts, then the oldest ancestors are dropped until it fits.",
    )
    max_tokens: int = Field(
        default=2048, ge=16, le=16384, description="Cap on one proposal's tokens (a model stops at the JSON's end)."
    )
    use_feedback: bool = Field(
        default=True,
        description="Show the rewriter the critic's words (the checks, which failed, the feedback). Off, it sees the "
        "intent, its branch's prompts and their scores only: the ablation that tells whether feedback helps.",
    )
    model_vocabulary: list[Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z][A-Za-z -]*$")]] = Field(
        default_factory=list, max_length=200,
        description="Words the image model is known to draw well (what its model card says it was trained on), the "
        "same list for every intent; shown to the rewriter so that it can say the intent in the model's words. Empty: "
        "not shown.",
    )


class CriticConfig(_Config):
    """The VLM that scores images against the original intent.

    score = w_checks * (fraction of checks answered yes) + w_alignment * alignment + w_quality * quality
            + sum(extra scorer weight * extra score), divided by the sum of the weights used.
    """

    max_checks: int = Field(default=8, ge=1, le=32, description="At most this many yes/no checks per intent.")
    weight_checks: float = Field(default=0.5, ge=0.0, le=10.0)
    weight_alignment: float = Field(default=0.35, ge=0.0, le=10.0)
    weight_quality: float = Field(default=0.15, ge=0.0, le=10.0)
    max_tokens: int = Field(default=1024, ge=16, le=16384, description="Cap on one critique's tokens.")
    decompose_max_tokens: int = Field(default=1024, ge=16, le=16384, description="Cap on the decomposition's tokens.")
    max_pixels: int = Field(
        default=448 * 448, ge=MIN_CRITIC_PIXELS, le=MAX_IMAGE_PIXELS,
        description="Images with more pixels are downscaled (aspect kept) before they are sent to the critic: a VLM's "
        "image tokens grow with pixels (Qwen2-VL: one per 28x28 patch).",
    )

    @model_validator(mode="after")
    def _some_weight(self) -> CriticConfig:
        if self.weight_checks + self.weight_alignment + self.weight_quality <= 0:
            raise ValueError(
                f"at least one of weight_checks ({self.weight_checks}), weight_alignment ({self.weight_alignment}) "
                f"and weight_quality ({self.weight_quality}) must be positive"
            )
        return self
