"""Every message that crosses a process boundary (planner <-> renderer / language model, runner <-> store <-> HTTP).

One definition each. Images travel as PNG bytes (base64 in JSON) or a storage URI, never as PIL objects.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

MAX_PROMPT_CHARS = 1000
"""Longest prompt (intent text, rewrite or negative prompt) accepted anywhere. CLIP reads 77 tokens; T5-based
pipelines read more; beyond this a rewrite is rambling, not refining."""


class Message(BaseModel):
    """Base for all messages: unknown fields are errors; bytes are base64 in JSON."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


# --------------------------------------------------------------------------------------------------------------------
# Intents
# --------------------------------------------------------------------------------------------------------------------


class ObjectSpec(Message):
    """One object the image must contain (GenEval-style structured check)."""

    name: str = Field(min_length=1, max_length=100, description="Object class, e.g. 'dog'.")
    count: int | None = Field(default=None, ge=1, le=20, description="How many must appear, if it matters.")
    color: str | None = Field(default=None, max_length=40, description="Required color, if any.")


class RelationSpec(Message):
    """A spatial relation between two objects, e.g. ('cat', 'left of', 'dog')."""

    subject: str = Field(min_length=1, max_length=100)
    relation: str = Field(min_length=1, max_length=40, description="e.g. 'left of', 'above', 'next to'.")
    object: str = Field(min_length=1, max_length=100)


class IntentChecks(Message):
    """Optional structured requirements; when present the critic derives its yes/no checks from them."""

    objects: list[ObjectSpec] = Field(default_factory=list, max_length=20)
    relations: list[RelationSpec] = Field(default_factory=list, max_length=20)
    questions: list[str] = Field(default_factory=list, max_length=20, description="Extra yes/no questions.")


class Intent(Message):
    """What a user wants to see. The critic always scores against this text, never a rewrite of it."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$", description="Unique within a campaign.")
    text: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    checks: IntentChecks | None = None
    tags: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("`text` must contain non-whitespace characters")
        return v


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


class RenderRequest(Message):
    """One image to draw. Requests batched into one pipeline call must share :meth:`shape_key`."""

    request_id: str = Field(min_length=1, max_length=256)
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    seed: int = Field(ge=0, lt=2**63)
    steps: int = Field(default=4, description="Denoising steps (>= 1).")
    guidance_scale: float = Field(default=0.0, ge=0.0, le=30.0, description="CFG scale; <= 1 disables CFG.")
    width: int = Field(default=64, description="Pixels, a positive multiple of 8.")
    height: int = Field(default=64, description="Pixels, a positive multiple of 8.")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError(f"`prompt` must be a non-empty string but is {v!r}")
        return v

    @field_validator("steps")
    @classmethod
    def _steps_positive(cls, v: int) -> int:
        if v < 1 or v > 200:
            raise ValueError(f"`steps` has to be between 1 and 200 but is {v}")
        return v

    @model_validator(mode="after")
    def _size_divisible(self) -> RenderRequest:
        for name in ("width", "height"):
            v = getattr(self, name)
            if v < 8 or v > 4096 or v % 8:
                raise ValueError(
                    f"`height` and `width` have to be positive multiples of 8 up to 4096 "
                    f"but are {self.height} and {self.width}."
                )
        return self

    def shape_key(self) -> tuple[int, int, int, float]:
        """Settings that one pipeline call shares across its batch."""
        return (self.width, self.height, self.steps, self.guidance_scale)


class RendererInfo(Message):
    """What a renderer tells its callers about the prompts it can read."""

    model: str
    max_prompt_tokens: int | None = Field(
        default=None, description="Tokens the text encoder reads (77 for CLIP, incl. start/end); longer is truncated."
    )
    tokenizer: str | None = Field(default=None, description="Which tokenizer counts them, e.g. 'CLIPTokenizer'.")


class RenderResult(Message):
    """A rendered image plus what produced it."""

    request_id: str
    png: bytes = Field(repr=False)
    seed: int
    model: str
    width: int
    height: int
    steps: int
    batch_size: int = Field(description="How many images the pipeline call that drew this one produced.")
    render_seconds: float = Field(description="Wall time of that pipeline call.")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Language model
# --------------------------------------------------------------------------------------------------------------------


class TextPart(Message):
    type: Literal["text"] = "text"
    text: str


class ImagePart(Message):
    type: Literal["image"] = "image"
    png: bytes = Field(repr=False)


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(Message):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        """The message's text, image parts left out (for logs and tests)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def images(self) -> list[bytes]:
        if isinstance(self.content, str):
            return []
        return [p.png for p in self.content if isinstance(p, ImagePart)]


ChatPurpose = Literal["decompose", "rewrite", "critique", "other"]
"""Why a chat request was made; metrics and logs label requests by it (never by parsing request ids)."""


class ChatRequest(Message):
    """A chat completion, optionally constrained to a JSON schema (guided decoding)."""

    request_id: str = Field(min_length=1, max_length=256)
    purpose: ChatPurpose = Field(default="other", description="decompose | rewrite | critique | other.")
    messages: list[ChatMessage] = Field(min_length=1)
    json_schema: dict[str, Any] | None = Field(default=None, description="Constrain the output to this JSON schema.")
    max_tokens: int = Field(default=256, ge=1, le=32768)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, lt=2**63, description="Per-request sampling seed.")


class ChatResult(Message):
    """The model's reply. ``parsed`` is set when a schema was given and the text parsed as JSON; otherwise
    ``parse_error`` says why. ``error`` is set when the server refused the request for its content (e.g. longer than
    the context). Both are model-side failures that callers record and move past."""

    request_id: str
    text: str
    parsed: Any = None
    parse_error: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------------------------------
# Agents' outputs and the search record
# --------------------------------------------------------------------------------------------------------------------


class Proposal(Message):
    """What the rewriter proposed for one branch: prompts kept, prompts dropped with reasons."""

    parent_id: str | None
    prompts: list[str]
    dropped: list[tuple[str, str]] = Field(default_factory=list, description="(prompt, reason) pairs.")
    error: str | None = None


class Check(Message):
    """An atomic yes/no question about the image, derived from the ORIGINAL intent."""

    id: str
    question: str = Field(min_length=1, max_length=300)


class CheckAnswer(Message):
    check_id: str
    answer: bool


class Critique(Message):
    """The critic's verdict on one image against the original intent (see ``agents.critic`` for the formula)."""

    answers: list[CheckAnswer] = Field(default_factory=list)
    alignment: float = Field(ge=0.0, le=1.0, description="VLM's overall intent-alignment rating, 0..1.")
    quality: float = Field(ge=0.0, le=1.0, description="VLM's image-quality rating, 0..1.")
    feedback: str = Field(default="", max_length=2000, description="What is missing or wrong, for the rewriter.")
    scores: dict[str, float] = Field(default_factory=dict, description="Named component scores, 0..1.")
    score: float = Field(ge=0.0, le=1.0, description="The aggregate the search optimises.")
    held_out: dict[str, float] = Field(default_factory=dict, description="Reported, never optimised.")


class CandidateStatus(str, enum.Enum):
    scored = "scored"
    failed = "failed"  # model-caused failure (recorded, search continues)
    blocked = "blocked"  # the output filter or moderation refused it


class Candidate(Message):
    """One (prompt, seed) attempt and everything that happened to it. Failed candidates are kept."""

    id: str
    intent_id: str
    parent_id: str | None = Field(description="Candidate whose branch proposed this prompt; None for round 0.")
    round: int = Field(ge=0)
    prompt: str
    seed: int
    source: Literal["original", "rewrite", "baseline"]
    image: str | None = Field(default=None, description="Image reference: a store path/URI or a content hash.")
    critique: Critique | None = None
    score: float | None = None
    status: CandidateStatus = CandidateStatus.scored
    error: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)


class CallCounts(Message):
    llm_calls: int = 0
    llm_failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    render_calls: int = 0

    def add_chat(self, result: ChatResult) -> None:
        """Count one LLM call and its tokens."""
        self.llm_calls += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens


class SearchResult(Message):
    """Everything a search did: every candidate (lineage via ``parent_id``), the best one, why it stopped."""

    intent: Intent
    mode: Literal["beam", "best_of_n"]
    candidates: list[Candidate]
    proposals: list[Proposal] = Field(default_factory=list, description="Every rewriter reply: kept and dropped.")
    best_id: str | None
    rounds_run: int
    stop_reason: Literal["rounds", "threshold", "plateau", "budget", "no_candidates"]
    best_score_per_round: list[float | None]
    counts: CallCounts
    checks: list[Check] = Field(default_factory=list)
    _images: dict[str, bytes] = PrivateAttr(default_factory=dict)

    @property
    def images(self) -> dict[str, bytes]:
        """PNG bytes by candidate id, when the planner had no image sink (not serialised)."""
        return self._images

    @images.setter
    def images(self, value: dict[str, bytes]) -> None:
        self._images = value

    @property
    def best(self) -> Candidate | None:
        return next((c for c in self.candidates if c.id == self.best_id), None)
