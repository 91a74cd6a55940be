"""Critic agent: decomposes an intent into yes/no checks once, then scores each image against the ORIGINAL intent.

Scores never look at the rewritten prompt: a rewrite that drifts from the intent cannot score well by describing its
own image, which is what keeps the search from reward hacking.

Aggregation (weights from :class:`agents.config.CriticConfig`, extra scorers from :class:`WeightedScorer`)::

    checks    = (number of checks answered yes) / (number of checks)
    alignment = VLM alignment rating / 10
    quality   = VLM quality rating / 10
    score     = (w_checks*checks + w_alignment*alignment + w_quality*quality + sum_i w_i*extra_i)
                / (w_checks + w_alignment + w_quality + sum_i w_i)

Held-out scorers are computed and reported in ``Critique.held_out`` but never enter ``score``.
:func:`build_critique` applies the formula; any critic (a VLM here, a programmatic judge elsewhere) calls it, so scores
mean the same thing whoever answered the checks.

The critique request puts the parts that are the same for every image of an intent first (system text, then the
intent and its checks) and the image last, so a serving engine with prefix caching reuses them across the intent's
images; the image is downscaled to ``CriticConfig.max_pixels`` first.
"""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass

from agents import prompts
from agents.config import CriticConfig
from agents.messages import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    Check,
    CheckAnswer,
    Critique,
    ImagePart,
    Intent,
    IntentChecks,
    TextPart,
)
from agents.ports import CriticError, LanguageModel, Scorer
from agents.schemas import string_list_schema

QUESTION_MAX_CHARS = 150
FEEDBACK_MAX_CHARS = 300


@dataclass(frozen=True)
class WeightedScorer:
    scorer: Scorer
    weight: float = 1.0
    held_out: bool = False


def build_critique(
    config: CriticConfig,
    checks: list[Check],
    answers: dict[str, bool],
    *,
    alignment: float,
    quality: float,
    feedback: str = "",
    extra: dict[str, tuple[float, float]] | None = None,
    held_out: dict[str, float] | None = None,
) -> Critique:
    """The module docstring's formula. ``answers`` maps every check id to its answer; ``alignment`` and ``quality``
    are in 0..1; ``extra`` maps an optimised scorer's name to (value in 0..1, weight)."""
    missing = [c.id for c in checks if not isinstance(answers.get(c.id), bool)]
    if missing:
        raise CriticError(f"verdict does not answer every check: missing {missing}, got {answers!r}"[:300])
    extra = extra or {}
    answer_list = [CheckAnswer(check_id=c.id, answer=answers[c.id]) for c in checks]
    checks_frac = sum(a.answer for a in answer_list) / len(answer_list) if answer_list else 0.0
    total = config.weight_checks * checks_frac + config.weight_alignment * alignment + config.weight_quality * quality
    weight = config.weight_checks + config.weight_alignment + config.weight_quality
    for value, w in extra.values():
        total += w * value
        weight += w
    return Critique(
        answers=answer_list,
        alignment=alignment,
        quality=quality,
        feedback=feedback[:FEEDBACK_MAX_CHARS],
        scores={"checks": checks_frac, "alignment": alignment, "quality": quality}
        | {name: value for name, (value, _) in extra.items()},
        score=min(max(total / weight, 0.0), 1.0),
        held_out=held_out or {},
    )


def fitted_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` is shown to the critic at: at most ``max_pixels``, aspect kept
    (the renderer's critic variant and :func:`fit_pixels` both use it)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height read from a PNG or JPEG header without decoding the image (microseconds, no Pillow), so the
    campaign can tell that an image already fits the critic; None for another format or a truncated header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    return None


def fits(data: bytes, max_pixels: int) -> bool:
    size = image_size(data)
    return size is not None and size[0] * size[1] <= max_pixels


def fit_pixels(png: bytes, max_pixels: int) -> bytes:
    """The image downscaled (aspect ratio kept) to at most ``max_pixels`` pixels, as PNG; unchanged if it already
    fits. The fallback for renderers that send no critic variant (``RenderResult.critic_image``): it decodes and
    re-encodes (~45 ms for 512² on one core), so :meth:`Critic.critique` runs it off the event loop."""
    if fits(png, max_pixels):
        return png
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    size = fitted_size(*image.size, max_pixels)
    if size == image.size:
        return png
    buf = io.BytesIO()
    image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


def checks_from_structure(spec: IntentChecks, max_checks: int) -> list[Check]:
    """Deterministic yes/no checks from GenEval-style structured requirements (no LLM call)."""
    questions: list[str] = []
    for obj in spec.objects:
        color = f"{obj.color} " if obj.color else ""
        if obj.count is not None:
            noun = obj.name if obj.count == 1 else f"{obj.name}s" if not obj.name.endswith("s") else obj.name
            questions.append(f"Does the image show exactly {obj.count} {color}{noun}?")
        else:
            questions.append(f"Does the image show a {color}{obj.name}?")
    for rel in spec.relations:
        questions.append(f"Is the {rel.subject} {rel.relation} the {rel.object}?")
    questions.extend(spec.questions)
    return [Check(id=f"q{i + 1}", question=q[:QUESTION_MAX_CHARS]) for i, q in enumerate(questions[:max_checks])]


def decompose_schema(max_checks: int) -> dict:
    return string_list_schema("questions", 1, max_checks, QUESTION_MAX_CHARS)


def critique_schema(checks: list[Check]) -> dict:
    """Exactly one boolean per check id, two 0..10 integer ratings, bounded feedback."""
    return {
        "type": "object",
        "properties": {
            "answers": {
                "type": "object",
                "properties": {c.id: {"type": "boolean"} for c in checks},
                "required": [c.id for c in checks],
                "additionalProperties": False,
            },
            "alignment": {"type": "integer", "minimum": 0, "maximum": 10},
            "quality": {"type": "integer", "minimum": 0, "maximum": 10},
            "feedback": {"type": "string", "maxLength": FEEDBACK_MAX_CHARS},
        },
        "required": ["answers", "alignment", "quality", "feedback"],
        "additionalProperties": False,
    }


class Critic:
    """Builds the critic's chat requests, parses its verdicts and aggregates scores."""

    def __init__(
        self,
        llm: LanguageModel,
        config: CriticConfig | None = None,
        scorers: list[WeightedScorer] | None = None,
        timeout_s: float = 300.0,
    ):
        self.llm = llm
        self.config = config or CriticConfig()
        self.scorers = scorers or []
        self.timeout_s = timeout_s

    @property
    def image_max_pixels(self) -> int | None:
        """Pixels this critic looks at: the planner asks the renderer for a variant of this size. None when extra or
        held-out scorers need the whole image (they score the image they were written for): the critic then fits
        the image for its VLM itself, off the event loop."""
        return None if self.scorers else self.config.max_pixels

    # -- decomposition -------------------------------------------------------------------------------------------

    def build_decompose_request(self, intent: Intent, *, request_id: str, seed: int) -> ChatRequest:
        return ChatRequest(
            request_id=request_id,
            purpose="decompose",
            messages=[
                ChatMessage(
                    role="system",
                    content=prompts.render("critic", "decompose_system", max_checks=self.config.max_checks),
                ),
                ChatMessage(role="user", content=prompts.render("critic", "decompose_user", data={"intent": intent.text})),
            ],
            json_schema=decompose_schema(self.config.max_checks),
            max_tokens=self.config.decompose_max_tokens,
            temperature=0.0,
            seed=seed,
        )

    async def decompose(self, intent: Intent, *, request_id: str, seed: int) -> tuple[list[Check], ChatResult | None]:
        """Checks for the intent: from its structured spec when given, else from the LLM. If the LLM's reply is
        unusable, fall back to one holistic check (and return the reply so the caller can record the failure)."""
        if intent.checks and (intent.checks.objects or intent.checks.relations or intent.checks.questions):
            return checks_from_structure(intent.checks, self.config.max_checks), None
        result = await self.llm.chat(self.build_decompose_request(intent, request_id=request_id, seed=seed))
        questions = []
        if isinstance(result.parsed, dict) and isinstance(result.parsed.get("questions"), list):
            questions = [q.strip() for q in result.parsed["questions"] if isinstance(q, str) and q.strip()]
        if not questions:
            return [Check(id="q1", question="Does the image show everything the intent describes?")], result
        return [Check(id=f"q{i + 1}", question=q[:QUESTION_MAX_CHARS]) for i, q in enumerate(questions)], result

    # -- critique ------------------------------------------------------------------------------------------------

    def build_critique_request(
        self, png: bytes, intent: Intent, checks: list[Check], *, request_id: str, seed: int
    ) -> ChatRequest:
        """System text, then the intent and its checks, then the image (see the module docstring for why)."""
        data = {"intent": intent.text, "questions": [{"id": c.id, "question": c.question} for c in checks]}
        return ChatRequest(
            request_id=request_id,
            purpose="critique",
            messages=[
                ChatMessage(role="system", content=prompts.render("critic", "critique_system")),
                ChatMessage(
                    role="user",
                    content=[
                        TextPart(text=prompts.render("critic", "critique_user", data=data)),
                        ImagePart.of(fit_pixels(png, self.config.max_pixels)),
                    ],
                ),
            ],
            json_schema=critique_schema(checks),
            max_tokens=self.config.max_tokens,
            temperature=0.0,
            seed=seed,
        )

    def aggregate(self, parsed: dict, checks: list[Check], extra: dict[str, float], held_out: dict[str, float]) -> Critique:
        """Turn a parsed VLM verdict into a :class:`Critique` with :func:`build_critique`."""
        answers = parsed.get("answers")
        if not isinstance(answers, dict):
            raise CriticError(f"verdict does not answer every check: {answers!r}"[:300])
        try:
            alignment = min(max(int(parsed["alignment"]), 0), 10) / 10
            quality = min(max(int(parsed["quality"]), 0), 10) / 10
        except (KeyError, TypeError, ValueError) as exc:
            raise CriticError(f"verdict lacks integer ratings: {exc}") from exc
        weights = {ws.scorer.name: ws.weight for ws in self.scorers if not ws.held_out}
        feedback = parsed.get("feedback") if isinstance(parsed.get("feedback"), str) else ""
        return build_critique(
            self.config, checks, answers, alignment=alignment, quality=quality, feedback=feedback,
            extra={name: (value, weights[name]) for name, value in extra.items()}, held_out=held_out,
        )

    async def critique(
        self, png: bytes, intent: Intent, checks: list[Check], *, request_id: str, seed: int
    ) -> tuple[Critique, ChatResult]:
        """Score one image: the renderer's critic variant, or the whole image where scorers need it (an image that
        does not fit ``max_pixels`` is downscaled for the VLM here, off the event loop; the scorers see it whole).
        Raises :class:`CriticError` for model-caused failures."""
        shown = png
        if not fits(png, self.config.max_pixels):
            shown = await asyncio.to_thread(fit_pixels, png, self.config.max_pixels)
        request = self.build_critique_request(shown, intent, checks, request_id=request_id, seed=seed)
        try:
            result, scored = await asyncio.wait_for(
                asyncio.gather(self.llm.chat(request), self._extra_scores(png, intent)), timeout=self.timeout_s
            )
        except asyncio.TimeoutError as exc:
            raise CriticError(f"critic timed out after {self.timeout_s:.0f}s") from exc
        if result.error or result.parse_error or not isinstance(result.parsed, dict):
            raise CriticError(result.error or result.parse_error or f"verdict is not a JSON object: {result.text[:200]!r}", result)
        extra, held_out = scored
        try:
            return self.aggregate(result.parsed, checks, extra, held_out), result
        except CriticError as exc:
            raise CriticError(str(exc), result) from exc

    async def _extra_scores(self, png: bytes, intent: Intent) -> tuple[dict[str, float], dict[str, float]]:
        """Each extra scorer's named scores, averaged into one value under the scorer's name."""
        extra: dict[str, float] = {}
        held_out: dict[str, float] = {}
        for ws in self.scorers:
            values = await ws.scorer.score(png, intent)
            value = sum(values.values()) / len(values) if values else 0.0
            (held_out if ws.held_out else extra)[ws.scorer.name] = min(max(value, 0.0), 1.0)
        return extra, held_out
