"""Agent and search configuration: one model per concern, every field described and bounded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchConfig(_Config):
    """How hard to search for one intent.

    Images per round: round 0 renders (1 original + ``candidates_per_beam`` rewrites) x ``seeds_per_prompt``; each later
    round renders up to ``beam_width`` x ``candidates_per_beam`` x ``seeds_per_prompt``. ``max_images`` caps the total.
    """

    beam_width: int = Field(default=2, ge=1, le=16, description="Branches kept after each round (B).")
    candidates_per_beam: int = Field(default=2, ge=1, le=16, description="Rewrites proposed per branch per round (K).")
    rounds: int = Field(default=2, ge=1, le=20, description="Rounds including round 0 (R).")
    seeds_per_prompt: int = Field(default=1, ge=1, le=8, description="Seeds rendered per prompt (S).")
    max_images: int = Field(default=64, ge=1, le=10_000, description="Image budget of one intent; never exceeded.")
    score_threshold: float = Field(default=1.0, ge=0.0, le=1.0, description="Stop once the best score reaches this.")
    patience: int = Field(default=2, ge=1, le=20, description="Stop after this many rounds without improvement.")
    min_improvement: float = Field(default=1e-3, ge=0.0, le=1.0, description="Smaller gains count as no improvement.")
    temperature: float = Field(default=0.8, ge=0.0, le=2.0, description="Rewriter sampling temperature.")
    base_seed: int = Field(default=0, ge=0, lt=2**31, description="Seeds of an intent derive from this and its id.")
    run_baseline: bool = Field(default=True, description="Also run best-of-N of the original prompt at equal budget.")
    steps: int = Field(default=4, ge=1, le=200, description="Denoising steps per image.")
    guidance_scale: float = Field(default=0.0, ge=0.0, le=30.0, description="CFG scale; <= 1 disables CFG.")
    width: int = Field(default=64, ge=8, le=4096, multiple_of=8, description="Image width in pixels.")
    height: int = Field(default=64, ge=8, le=4096, multiple_of=8, description="Image height in pixels.")

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        round0 = (1 + self.candidates_per_beam) * self.seeds_per_prompt
        if self.max_images < round0:
            raise ValueError(
                f"max_images ({self.max_images}) must be at least the images of round 0: "
                f"(1 + candidates_per_beam ({self.candidates_per_beam})) x seeds_per_prompt ({self.seeds_per_prompt})"
                f" = {round0}"
            )
        if self.beam_width > (1 + self.candidates_per_beam) * self.seeds_per_prompt * max(1, self.rounds):
            raise ValueError(
                f"beam_width ({self.beam_width}) can never be filled with candidates_per_beam "
                f"({self.candidates_per_beam}) and seeds_per_prompt ({self.seeds_per_prompt})"
            )
        return self

    def planned_images(self) -> int:
        """Images the search renders when it runs every round and every rewrite survives (budget applied)."""
        per_round = [(1 + self.candidates_per_beam) * self.seeds_per_prompt]
        width = min(self.beam_width, per_round[0])
        for _ in range(1, self.rounds):
            per_round.append(width * self.candidates_per_beam * self.seeds_per_prompt)
            width = min(self.beam_width, width * self.candidates_per_beam * self.seeds_per_prompt)
        return min(self.max_images, sum(per_round))


class RewriterConfig(_Config):
    """The LLM that proposes prompts."""

    max_prompt_chars: int = Field(default=300, ge=10, le=1000, description="Longer rewrites are dropped.")
    history_size: int = Field(default=6, ge=0, le=50, description="Earlier attempts shown, best first.")
    max_tokens: int = Field(
        default=2048, ge=16, le=16384, description="Cap on one proposal's tokens (a model stops at the JSON's end)."
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

    @model_validator(mode="after")
    def _some_weight(self) -> CriticConfig:
        if self.weight_checks + self.weight_alignment + self.weight_quality <= 0:
            raise ValueError(
                f"at least one of weight_checks ({self.weight_checks}), weight_alignment ({self.weight_alignment}) "
                f"and weight_quality ({self.weight_quality}) must be positive"
            )
        return self
