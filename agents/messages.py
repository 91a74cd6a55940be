"""Every message that crosses a process boundary (planner <-> renderer / language model, runner <-> store <-> HTTP).

One definition each. Images travel as encoded bytes (base64 in JSON) with their media type, or a storage URI, never as
PIL objects.
"""

from __future__ import annotations

import enum
import hashlib
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SAFE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
"""Names that become file or folder names (campaign names, intent ids): letters, digits and ``_.-``, not starting with
a dot, so never ``.``/``..``, a hidden file, a path separator or a NUL. Lengths are bounded where each is used."""
MAX_PROMPT_CHARS = 1000
"""Longest prompt (intent text, rewrite or negative prompt) accepted anywhere. CLIP reads 77 tokens; T5-based
pipelines read more; beyond this a rewrite is rambling, not refining."""
MAX_IMAGE_SIDE = 4096
"""Widest and tallest image anyone may ask for (pixels); :data:`MAX_IMAGE_PIXELS` is the largest image."""
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
MIN_CRITIC_PIXELS = 28 * 28
"""The smallest image a critic is shown: one 28x28 patch, a VLM's unit of image tokens (Qwen2-VL)."""

ImageMediaType = Literal["image/png", "image/jpeg", "image/webp"]
"""The encodings images travel in: what the renderers make (``DiffusionEngineConfig.image_format``, the critic's JPEG
variant) and what every VLM input path reads."""


def image_media_type(data: bytes) -> ImageMediaType | None:
    """The media type of encoded image bytes, from their signature (None for anything else, e.g. empty bytes)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


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

    id: str = Field(min_length=1, max_length=128, pattern=SAFE_NAME,
                    description="Unique within a campaign; letters, digits, '_.-', not starting with a dot.")
    text: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    checks: IntentChecks | None = None
    tags: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("text")
    @classmethod
    def _something_to_draw(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("`text` must contain non-whitespace characters")
        check_text(v, "text")
        if not any(unicodedata.category(c)[0] in DRAWABLE for c in unicodedata.normalize("NFKC", v)):
            raise ValueError("`text` has no letter, digit or symbol: only spaces, invisible characters (zero-width, "
                             "format), combining marks or punctuation, which name nothing to draw")
        return v

    @field_validator("negative_prompt")
    @classmethod
    def _no_controls(cls, v: str | None) -> str | None:
        return v if v is None else check_text(v, "negative_prompt")


DRAWABLE = ("L", "N", "S")
"""Unicode categories an intent needs one character of: letters, numbers, symbols (emoji among them). Decided on
purpose: text of only whitespace, format characters (zero-width space/joiner, BOM, word joiner, soft hyphen),
combining marks or punctuation is refused (422 naming the field); one visible letter, digit or emoji is accepted ("a",
"7", "🐱": a model can draw each); format characters inside otherwise drawable text are kept (emoji sequences need the
zero-width joiner)."""


def check_text(v: str, field: str) -> str:
    """Refuse control characters (Unicode Cc other than tab, newline and carriage return: escape sequences, NUL) in
    user text that reaches prompts, logs and terminals."""
    bad = next((c for c in v if unicodedata.category(c) == "Cc" and c not in "\t\n\r"), None)
    if bad is not None:
        raise ValueError(f"`{field}` contains the control character U+{ord(bad):04X}")
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
    campaign: str | None = Field(default=None, max_length=100, description="Campaign, for the image's provenance.")
    intent: str | None = Field(default=None, max_length=128, description="Intent id, for the image's provenance.")
    critic_max_pixels: int | None = Field(
        default=None, ge=MIN_CRITIC_PIXELS, le=MAX_IMAGE_PIXELS,
        description="When set, the renderer also returns ``critic_image``: the image at most this many pixels "
        "(aspect kept), made where the pixels are, so the campaign never decodes or re-encodes an image.",
    )
    image_uri: str | None = Field(
        default=None, max_length=2048,
        description="fsspec URI the renderer writes the image to (the campaign's store); it then returns a "
        "``StoredImage`` instead of the bytes. Unset, or where the renderer cannot write there, the bytes come back.",
    )

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
            if v < 8 or v > MAX_IMAGE_SIDE or v % 8:
                raise ValueError(
                    f"`height` and `width` have to be positive multiples of 8 up to {MAX_IMAGE_SIDE} "
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


class StoredImage(Message):
    """An image the renderer wrote itself: where, how big, and its content hash (the campaign keeps only this)."""

    uri: str = Field(description="Where it was written: the request's ``image_uri``, or the campaign's reference to it.")
    size: int = Field(ge=0, description="Bytes written.")
    sha256: str = Field(min_length=64, max_length=64)


class RenderResult(Message):
    """A rendered image plus what produced it: the bytes in ``png``, or (``stored`` set, ``png`` empty) a reference to
    where the renderer wrote them."""

    request_id: str
    png: bytes = Field(repr=False)
    stored: StoredImage | None = Field(default=None, description="Set when the renderer wrote the image itself.")
    critic_image: bytes | None = Field(
        default=None, repr=False,
        description="What the critic is shown: the image downscaled to the request's ``critic_max_pixels`` (JPEG), or "
        "the image's own bytes where it fits and ``png`` is empty (stored). None where ``png`` already fits.",
    )
    seed: int
    model: str
    width: int
    height: int
    steps: int
    batch_size: int = Field(description="How many images the pipeline call that drew this one produced.")
    render_seconds: float = Field(description="Wall time of that pipeline call.")
    withheld_reason: str | None = Field(
        default=None, description="Set when the output check flagged the image: ``png`` is then empty.",
    )
    nsfw_score: float | None = Field(default=None, description="The output check's score, when it ran.")

    @property
    def sha256(self) -> str:
        return self.stored.sha256 if self.stored is not None else hashlib.sha256(self.png).hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Language model
# --------------------------------------------------------------------------------------------------------------------


class TextPart(Message):
    type: Literal["text"] = "text"
    text: str


class ImagePart(Message):
    """An image in a chat message: its encoded bytes and their media type, which must be the bytes' own (a JPEG sent
    as ``image/png`` is refused by strict endpoints). :meth:`of` reads the type from the bytes."""

    type: Literal["image"] = "image"
    data: bytes = Field(repr=False)
    media_type: ImageMediaType

    @classmethod
    def of(cls, data: bytes) -> ImagePart:
        media_type = image_media_type(data)
        if media_type is None:
            raise ValueError(f"image bytes are not PNG, JPEG or WebP (they start {data[:12]!r})")
        return cls(data=data, media_type=media_type)

    @model_validator(mode="after")
    def _type_matches_the_bytes(self) -> ImagePart:
        if image_media_type(self.data) != self.media_type:
            raise ValueError(f"`media_type` is {self.media_type!r} but the bytes are "
                             f"{image_media_type(self.data) or 'no known image format'}")
        return self


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
        return [p.data for p in self.content if isinstance(p, ImagePart)]


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
    """What the rewriter proposed for one branch, after the planner's checks: prompts kept, prompts dropped as
    unusable and prompts blocked by the output filter, each with its reason. A proposal with ``retry`` True is the one
    hotter retry of a round whose rewrites were all unusable."""

    parent_id: str | None
    prompts: list[str]
    dropped: list[tuple[str, str]] = Field(
        default_factory=list, description="(prompt, reason) pairs of unusable rewrites: not a string, empty, too long, "
        "a duplicate, or refused by the rewriter itself."
    )
    blocked: list[tuple[str, str]] = Field(
        default_factory=list, description="(prompt, reason) pairs the output filter refused (moderation or injection "
        "markers): usable but not allowed. Records written before this field held them in ``dropped``."
    )
    error: str | None = None
    round: int = Field(default=0, ge=0)
    retry: bool = False
    source: Literal["rewriter", "lessons", "human"] = Field(
        default="rewriter", description="Who proposed: the rewriter, campaign memory applying its lessons, or a person "
        "(add_prompt)."
    )


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


# --------------------------------------------------------------------------------------------------------------------
# A human in the loop (agents.steering): actions a person takes on a running intent, and their marks in the lineage
# --------------------------------------------------------------------------------------------------------------------

HumanActionKind = Literal["pin", "veto", "add_prompt", "accept"]
"""pin: keep a branch in the beam whatever its rank; veto: drop a branch, never expand it, withhold its images from the
results; add_prompt: render a person's prompt in the intent's next round; accept: finish an intent waiting for review
as it is."""


class ActionRequest(Message):
    """What a person posts (``POST /v1/campaigns/{id}/actions``): ``id`` is their idempotency key (re-posting it with the
    same body changes nothing). Who and when are set by the server (:class:`HumanAction`)."""

    id: str = Field(min_length=1, max_length=128, pattern=SAFE_NAME,
                    description="Idempotency key chosen by the client; letters, digits, '_.-', not starting with a dot.")
    intent_id: str = Field(min_length=1, max_length=128, pattern=SAFE_NAME)
    kind: HumanActionKind
    target: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS,
        description="pin/veto: the branch, as its prompt or one of its candidate ids; add_prompt: the branch the prompt "
        "continues (optional; none: a new root).",
    )
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS, description="add_prompt: the prompt to render.")
    note: str | None = Field(default=None, max_length=500, description="Why, in the person's words (shown, never used).")

    @field_validator("target", "prompt", "note")
    @classmethod
    def _no_controls(cls, v: str | None, info) -> str | None:
        return v if v is None else check_text(v, info.field_name)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ActionRequest:
        if self.kind in ("pin", "veto") and not (self.target or "").strip():
            raise ValueError(f"`target` is required for {self.kind}: the branch's prompt or a candidate id")
        if self.kind == "add_prompt" and not (self.prompt or "").strip():
            raise ValueError("`prompt` is required for add_prompt and must contain non-whitespace characters")
        if self.kind != "add_prompt" and self.prompt is not None:
            raise ValueError(f"`prompt` is only for add_prompt, not {self.kind}")
        if self.kind == "accept" and self.target is not None:
            raise ValueError("`target` is not used by accept (it finishes the whole intent)")
        return self


class HumanAction(ActionRequest):
    """A stored action: the request plus who (the bearer token's name) and when (server time, seconds since the
    epoch)."""

    by: str = Field(min_length=1, max_length=100, description="The name of the token the action was posted with.")
    at: float = Field(description="When the server accepted it (seconds since the epoch).")

    def request(self) -> ActionRequest:
        return ActionRequest.model_validate(self.model_dump(exclude={"by", "at"}))


class HumanMark(Message):
    """On a candidate in the lineage: a person's action that made it (add_prompt) or changed it (pin, veto)."""

    action_id: str
    kind: HumanActionKind
    by: str
    at: float


class AppliedAction(Message):
    """An action as the planner applied it: the round boundary it took effect at, and what came of it."""

    action: HumanAction
    round: int = Field(ge=0, description="The round it took effect before (the next round's index).")
    note: str | None = Field(default=None, description="Set when it had no effect, saying why (e.g. no such branch).")


class ReviewState(Message):
    """An intent whose search stopped with its best score under the campaign's review threshold
    (``CampaignSpec.review``): it waits for a person, and how that ended."""

    since: float = Field(description="When it started waiting (seconds since the epoch).")
    best_score: float | None = None
    ended: Literal["accepted", "timed_out", "steered"] | None = Field(
        default=None, description="accepted: a person finished it; timed_out: nobody acted in time; steered: a person "
        "acted and it ran another round.",
    )
    by: str | None = Field(default=None, description="Who ended the wait (accepted or steered).")
    ended_at: float | None = None


class CandidateStatus(str, enum.Enum):
    scored = "scored"
    failed = "failed"  # model-caused failure (recorded, search continues)
    withheld = "withheld"  # the output check withheld its image (no image, no score, never in the beam)
    vetoed = "vetoed"  # a person vetoed its branch (score kept for the record; never best, never in the beam)


class Candidate(Message):
    """One (prompt, seed) attempt and everything that happened to it. Failed candidates are kept."""

    id: str
    intent_id: str
    parent_id: str | None = Field(description="Candidate whose branch proposed this prompt; None for round 0.")
    round: int = Field(ge=0)
    prompt: str
    seed: int
    source: Literal["original", "rewrite", "lesson", "reseed", "baseline", "human"] = Field(
        description="original: the intent's text; rewrite: a rewriter proposal; lesson: campaign memory's edit of the "
        "parent by lessons learned on other intents; reseed: a beam prompt on new seeds "
        "(a round whose rewrites were all unusable); baseline: best-of-N on the original; human: a person's prompt "
        "(add_prompt)."
    )
    image: str | None = Field(default=None, description="Image reference: a store path/URI or a content hash.")
    image_size: int | None = Field(default=None, ge=0, description="Bytes of the stored image.")
    image_sha256: str | None = Field(default=None, min_length=64, max_length=64,
                                     description="SHA-256 of the stored image's bytes (checked where it is read back).")
    critique: Critique | None = None
    score: float | None = None
    status: CandidateStatus = CandidateStatus.scored
    error: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    human: list[HumanMark] = Field(
        default_factory=list, description="The people's actions that made (add_prompt) or changed (pin, veto) it."
    )


class CallCounts(Message):
    """What one arm (search or baseline) of an intent cost. Adding two arms' counts gives the intent's total."""

    llm_calls: int = Field(default=0, description="Chat requests sent (decompose, rewrite, critique).")
    llm_failures: int = Field(default=0, description="Of those, replies that were unusable (model-caused).")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = Field(default=0, description="Images rendered.")
    images_withheld: int = Field(default=0, description="Of those, images the output check withheld.")
    render_calls: int = Field(default=0, description="Calls to the renderer (each a list of requests).")
    render_seconds: float = Field(default=0.0, description="Sum of each image's share of its pipeline call's time.")
    critique_seconds: float = Field(default=0.0, description="Sum of the wall time of every critique.")

    def add_chat(self, result: ChatResult | None) -> None:
        """Count one LLM call and its tokens; ``None`` (an agent that made no LLM call) costs nothing."""
        if result is None:
            return
        self.llm_calls += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens


StopReason = Literal["rounds", "threshold", "plateau", "budget", "no_candidates"]


class SearchResult(Message):
    """Everything one arm did for an intent: every candidate (lineage via ``parent_id``), the best one, why it stopped.

    ``best_score_per_round`` is the best image score among each round's candidates (comparable with the baseline's
    images); ``branch_score_per_round`` is the best branch's score after each round, the statistic that selection and
    the stop rules use (see ``agents.planner``)."""

    intent: Intent
    mode: Literal["beam", "best_of_n"]
    candidates: list[Candidate]
    proposals: list[Proposal] = Field(default_factory=list, description="Every rewriter reply: kept and dropped.")
    best_id: str | None
    rounds_run: int
    stop_reason: StopReason
    best_score_per_round: list[float | None]
    branch_score_per_round: list[float | None] = Field(default_factory=list)
    counts: CallCounts
    checks: list[Check] = Field(default_factory=list)
    human_actions: list[AppliedAction] = Field(default_factory=list, description="People's actions, as applied.")
    review: ReviewState | None = Field(default=None, description="Set when the intent waited for review.")

    @property
    def best(self) -> Candidate | None:
        return next((c for c in self.candidates if c.id == self.best_id), None)


# --------------------------------------------------------------------------------------------------------------------
# What the planner tells a rewriter (any rewriter: LLM, rule-based) and what it answers
# --------------------------------------------------------------------------------------------------------------------


class BranchStep(Message):
    """One prompt on a branch's path from round 0, with what the critic said about it over all its seeds."""

    prompt: str
    round: int = Field(ge=0, description="Round in which this prompt was first rendered.")
    score: float | None = Field(description="The branch statistic (seed-adjusted mean over its seeds); None if none scored.")
    seeds: int = Field(ge=0, description="Seeds it was scored on.")
    check_pass_rate: dict[str, float] = Field(
        default_factory=dict, description="Check question -> share of its scored seeds on which the check passed."
    )
    feedback: list[str] = Field(default_factory=list, description="Distinct critic feedback, worst-scored seed first.")


class PromptScore(Message):
    """A distinct prompt already rendered for the intent and its branch statistic."""

    prompt: str
    score: float
    seeds: int = Field(ge=1)


class LessonHint(Message):
    """A campaign-memory edit as a rewriter sees it (``agents.memory``): replace the phrase ``replace`` (which
    occurs in the prompt being improved) by ``by``; in this campaign it was tried ``tries`` times and raised the score
    (fixing a check) ``wins`` times."""

    replace: str = Field(max_length=200)
    by: str = Field(max_length=200)
    wins: int = Field(ge=0)
    tries: int = Field(ge=0)


class RewriteContext(Message):
    """Everything a rewriter may use to propose ``k`` prompts: built by the planner, read by any rewriter.

    An LLM rewriter renders it into its template (dropping the oldest entries to fit its token budget); a rule-based
    rewriter reads the fields directly."""

    intent: Intent
    round: int = Field(ge=0)
    k: int = Field(ge=1, description="How many prompts to propose.")
    ancestry: list[BranchStep] = Field(
        default_factory=list, description="The branch being extended, root first; its last entry is the parent. "
        "Empty in round 0 (the rewriter starts from the intent)."
    )
    failed_checks: list[str] = Field(
        default_factory=list, description="Questions the parent failed on at least one seed, most often failed first."
    )
    checks: list[str] = Field(default_factory=list, description="Every check question of the intent.")
    best_prompts: list[PromptScore] = Field(
        default_factory=list, description="The intent's distinct prompts so far, best first, one entry per prompt."
    )
    tried: list[str] = Field(
        default_factory=list, description="Prompts already rendered or dropped, oldest first: do not propose them again."
    )
    max_prompt_tokens: int | None = Field(
        default=None, description="Tokens the renderer's text encoder reads; longer proposals are dropped."
    )
    lessons: list[LessonHint] = Field(
        default_factory=list, description="Campaign memory: edits that raised other intents' scores and apply to the "
        "current prompt, best supported first (empty without memory)."
    )
    unhelpful_edits: list[LessonHint] = Field(
        default_factory=list, description="Campaign memory: edits of the current prompt this campaign tried that "
        "never raised a score, fewest tries first (empty without memory). A searching rewriter tries others first."
    )

    @property
    def parent(self) -> BranchStep | None:
        return self.ancestry[-1] if self.ancestry else None

    @property
    def current_prompt(self) -> str:
        """The prompt being improved: the parent's, or the intent's text in round 0."""
        return self.ancestry[-1].prompt if self.ancestry else self.intent.text


class RewriteReply(Message):
    """A rewriter's answer. ``chat`` is the LLM call it made (None for a rewriter that calls no model: zero cost).
    The planner still checks every prompt (length in renderer tokens, duplicates, output filter)."""

    prompts: list[str] = Field(default_factory=list)
    dropped: list[tuple[str, str]] = Field(
        default_factory=list, description="(prompt, reason) the rewriter itself refused, e.g. over its character cap."
    )
    error: str | None = Field(default=None, description="Model-caused failure (unparseable reply, refusal).")
    chat: ChatResult | None = None


# --------------------------------------------------------------------------------------------------------------------
# Per-round checkpoint of one intent's search (and its baseline arm)
# --------------------------------------------------------------------------------------------------------------------


class ArmState(Message):
    """What one arm has done so far."""

    candidates: list[Candidate] = Field(default_factory=list)
    proposals: list[Proposal] = Field(default_factory=list)
    counts: CallCounts = Field(default_factory=CallCounts)
    best_score_per_round: list[float | None] = Field(default_factory=list)


class SearchCheckpoint(Message):
    """Everything needed to continue an intent's search after its last finished round.

    Seeds and rewriter sampling seeds derive from ``base_seed``, the intent id and the round (no hidden RNG state),
    so resuming from the checkpoint of round r runs round r+1 with the same seeds as an uninterrupted run."""

    intent: Intent
    config: dict[str, Any] = Field(description="The SearchConfig it ran under; resuming under another is refused.")
    rounds_done: int = Field(ge=0, description="Finished rounds; the next round has this index.")
    checks: list[Check]
    search: ArmState
    baseline: ArmState | None = Field(default=None, description="The best-of-N arm, when it runs beside the search.")
    beam: list[str] = Field(default_factory=list, description="Prompts in the beam, best first.")
    branch_score_per_round: list[float | None] = Field(default_factory=list)
    best_branch_score: float | None = Field(default=None, description="Best branch score at the last improvement.")
    stale_rounds: int = Field(default=0, ge=0, description="Rounds since the last improvement (plateau rule).")
    stop_reason: StopReason | None = Field(default=None, description="Set once the search has stopped.")
    human_actions: list[AppliedAction] = Field(
        default_factory=list, description="People's actions applied so far, in order: a resumed run skips these ids."
    )
    pinned: list[str] = Field(default_factory=list, description="Prompts a person pinned (kept in the beam).")
    vetoed: list[str] = Field(default_factory=list, description="Prompts a person vetoed (never in the beam).")
    round_limit: int | None = Field(
        default=None, description="Rounds the search may run when a person granted more than config.rounds (review)."
    )
    review: ReviewState | None = Field(default=None, description="The intent's wait for review, when it waits or did.")
