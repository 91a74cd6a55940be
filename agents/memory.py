"""Campaign memory: edits that raised one intent's score, offered to the campaign's next intents.

A campaign refines many intents against one image model, so what one search finds out about the model ("it does not
draw *disc*, it draws *circle*") is worth trying on every later intent that says *disc*. This module keeps that
evidence and nothing else.

**Learning.** After each round the planner hands :meth:`CampaignMemory.observe` every new prompt with its parent
prompt (round 0: the intent's own words) and both branch scores (the planner's seed-adjusted means: on round 0 all
prompts share their seeds, later rounds are compared through the seeds they share with the rest of the intent). The
word-level difference between the two prompts (``difflib`` on lowercased words) becomes one or a few *edits*: a phrase
of at most ``max_phrase_words`` words replaced by another (a pure insertion or deletion is anchored on its
neighbouring word, so every edit is "replace this phrase by that one"). Each edit is a :class:`Lesson` whose evidence
counts tries, wins (the child scored higher), losses and the summed gain, with a few examples (intent id, scores,
checks the child fixed). A rewrite that changes too much at once teaches nothing local and is not recorded.

**Using.** A lesson is *supported* when it won at least ``min_wins`` times, more often than it lost, and on at least
``min_win_rate`` of its tries (a try that changes nothing counts against it). For a prompt,
the applicable lessons are the supported ones whose ``before`` phrase occurs in it, best supported first:
:meth:`hints` hands them to the rewriter (the LLM sees them as data inside ``<user_data>``), :meth:`apply` edits the
prompt by them directly (no model call); those prompts compete in the same beam, and their outcome is observed like
any other, so a lesson that stops helping loses support.

**What it knows**: prompts and the critic's scores of this campaign, nothing else (no table, no spec). **What crosses
intents**: only a lesson's two phrases; and since a hint or an edit is offered only where the ``before`` phrase is
already in the prompt, the one new text an intent can receive from another is the ``after`` phrase: at most
``max_phrase_words`` words of letters and digits that passed the output filter. Examples (intent ids, check questions)
are kept for the report and never shown to a rewriter.

The memory is plain data (:meth:`lessons` / the ``lessons`` argument) so the campaign store keeps it beside the
lineage and a resumed campaign continues with it. One asyncio loop uses it (no locks).

**Planner workers** (``pipelines/server/planner.py``): the campaign's memory stays one record, owned by the campaign's
runner in the ingress. A worker gets a copy of the lessons as they are when its intent is handed out, records what it
observes and applies (:meth:`CampaignMemory.record`), and hands that back with the intent's result; the runner
replays it (:meth:`CampaignMemory.replay`) before it saves the lessons. So a worker sees what other intents learned
up to its intent's start, never during it (in-process, an intent sees lessons as soon as another round learns them).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, TypeAdapter

from agents.config import MemoryConfig
from agents.messages import LessonHint, Message
from agents.safety import OutputFilter
from agents.stats import TIE_EPS

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
"""A word of a lesson: lowercase letters and digits (an apostrophe inside). Punctuation and markup never enter one."""
MAX_WORD_CHARS = 24
MAX_EXAMPLES = 5
MAX_LESSONS = 2000
"""Lessons kept per campaign; beyond it, the least supported ones with the fewest tries go first."""


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class LessonExample(Message):
    """One observation behind a lesson: for the report only, never shown to a rewriter."""

    intent_id: str
    before_score: float
    after_score: float
    checks_fixed: list[str] = Field(default_factory=list, description="Check questions the child passed more often.")


class Lesson(Message):
    """Replace the phrase ``before`` by ``after``, with the campaign's evidence for it."""

    before: str = Field(min_length=1, max_length=200)
    after: str = Field(max_length=200)
    kind: Literal["substitute", "reorder", "add", "remove"]
    tries: int = Field(default=0, ge=0, description="Rendered prompts that made this edit to their parent.")
    wins: int = Field(default=0, ge=0, description="... and scored higher than the parent.")
    losses: int = Field(default=0, ge=0, description="... and scored lower than the parent.")
    gain_sum: float = Field(default=0.0, description="Sum of (child - parent) branch score over the tries.")
    applied: int = Field(default=0, ge=0, description="Prompts made by applying this lesson directly.")
    intents: int = Field(default=0, ge=0, description="Distinct intents it was tried on (an intent resumed in a later "
                         "run of the campaign may count again).")
    examples: list[LessonExample] = Field(default_factory=list, max_length=MAX_EXAMPLES)

    @property
    def key(self) -> tuple[str, str]:
        return self.before, self.after

    @property
    def mean_gain(self) -> float:
        return self.gain_sum / self.tries if self.tries else 0.0

    @property
    def support(self) -> int:
        return self.wins - self.losses


LESSONS = TypeAdapter(list[Lesson])
"""A list of lessons as JSON (``lessons.json``, the HTTP API's answer)."""


class Observation(Message):
    """One :meth:`CampaignMemory.observe` call, as a planner worker hands it back to the campaign's own memory."""

    intent_id: str
    parent: str
    child: str
    parent_score: float
    child_score: float
    checks_fixed: list[str] | None = None


class MemoryDelta(Message):
    """What a copy of the campaign's memory did while it ran one intent elsewhere (a planner worker): the
    observations it made and the lessons it applied. :meth:`CampaignMemory.replay` folds it into the campaign's
    memory, which stays the one record (the ingress owns it)."""

    observations: list[Observation] = Field(default_factory=list)
    applied: list[tuple[str, str]] = Field(default_factory=list, description="Lesson keys, one per use.")
    prompts_applied: int = Field(default=0, ge=0, description="Prompts made by applying lessons.")


class CampaignMemory:
    """Lessons of one campaign (see the module docstring)."""

    def __init__(self, config: MemoryConfig, output_filter: OutputFilter, lessons: Iterable[Lesson] = ()):
        self.config = config
        self.output_filter = output_filter
        self._lessons: dict[tuple[str, str], Lesson] = {}
        self._seen: dict[tuple[str, str], set[str]] = {}  # intents each lesson was tried on (this process)
        for lesson in lessons:
            self._lessons[lesson.key] = lesson.model_copy(deep=True)
        self.learned = 0  # lessons that became supported since the runner last saved (a metric)
        self.applied = 0  # prompts made by applying a lesson since the runner last saved (a metric)
        self.changed = False  # since the last snapshot
        self._delta: MemoryDelta | None = None  # recording for replay elsewhere (:meth:`record`)

    # -- learning ---------------------------------------------------------------------------------------------------

    def edits(self, parent: str, child: str) -> list[tuple[str, str, str]]:
        """(before, after, kind) edits that turn ``parent`` into ``child``, word by word; [] when the change is too big
        to be local (more than ``max_edits`` edits, or a side longer than ``max_phrase_words``) or a phrase is refused by
        the output filter."""
        a, b = words(parent), words(child)
        if not a or a == b:
            return []
        limit = self.config.max_phrase_words
        out = []
        blocks = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
        if len(blocks) > 1 and blocks[-1][2] - blocks[0][1] <= limit and blocks[-1][4] - blocks[0][3] <= limit:
            blocks = [("replace", blocks[0][1], blocks[-1][2], blocks[0][3], blocks[-1][4])]  # one nearby edit
        if len(blocks) > self.config.max_edits:
            return []
        for tag, i1, i2, j1, j2 in blocks:
            before, after = a[i1:i2], b[j1:j2]
            kind = "add" if not before else "remove" if not after else (
                "reorder" if sorted(before) == sorted(after) else "substitute")
            if not before or not after:  # anchor on the neighbouring word, so the edit is a replacement
                if i1 > 0:
                    before, after = [a[i1 - 1]] + before, [a[i1 - 1]] + after
                elif i2 < len(a):
                    before, after = before + [a[i2]], after + [a[i2]]
                else:
                    continue
            if len(before) > limit or len(after) > limit or any(len(w) > MAX_WORD_CHARS for w in before + after):
                return []
            phrase_b, phrase_a = " ".join(before), " ".join(after)
            if self.output_filter.check(phrase_a) or self.output_filter.check(phrase_b):
                return []
            out.append((phrase_b, phrase_a, kind))
        return out

    def observe(self, intent_id: str, parent: str, child: str, parent_score: float, child_score: float,
                checks_fixed: list[str] | None = None) -> list[Lesson]:
        """Record that ``child`` (a prompt made from ``parent``) scored ``child_score`` against the parent's
        ``parent_score``; ``checks_fixed`` are the checks it passed more often (None: the critic asks none). A win
        needs a gain above ``min_gain`` and a fixed check: a higher score from seed noise alone teaches nothing.
        Returns the lessons it updated."""
        gain = child_score - parent_score
        if self._delta is not None:
            self._delta.observations.append(Observation(
                intent_id=intent_id, parent=parent, child=child, parent_score=parent_score, child_score=child_score,
                checks_fixed=None if checks_fixed is None else list(checks_fixed)))
        eps = max(self.config.min_gain, TIE_EPS)
        won = gain > eps and (checks_fixed is None or bool(checks_fixed))
        updated = []
        for before, after, kind in self.edits(parent, child):
            lesson = self._lessons.get((before, after)) or Lesson(before=before, after=after, kind=kind)
            was_supported = self._supported(lesson)
            lesson.tries += 1
            lesson.wins += won
            lesson.losses += gain < -eps
            lesson.gain_sum += gain
            seen = self._seen.setdefault(lesson.key, set())
            if intent_id not in seen:
                seen.add(intent_id)
                lesson.intents += 1
            if won and len(lesson.examples) < MAX_EXAMPLES:
                lesson.examples.append(LessonExample(intent_id=intent_id, before_score=parent_score,
                                                     after_score=child_score, checks_fixed=list(checks_fixed or [])))
            self._lessons[lesson.key] = lesson
            self.learned += self._supported(lesson) and not was_supported
            updated.append(lesson)
        if updated:
            self.changed = True
            self._trim()
        return updated

    def _trim(self) -> None:
        if len(self._lessons) > MAX_LESSONS:
            keep = sorted(self._lessons.values(), key=lambda le: (-le.support, -le.tries))[:MAX_LESSONS]
            self._lessons = {le.key: le for le in keep}

    # -- using ------------------------------------------------------------------------------------------------------

    def _supported(self, lesson: Lesson) -> bool:
        c = self.config
        return lesson.wins >= c.min_wins and lesson.wins > lesson.losses and lesson.wins >= c.min_win_rate * lesson.tries

    def supported(self) -> list[Lesson]:
        """Supported lessons, best first (support, then mean gain, then the phrase for a stable order)."""
        return sorted((le for le in self._lessons.values() if self._supported(le)),
                      key=lambda le: (-le.support, -le.mean_gain, le.before, le.after))

    @staticmethod
    def _pattern(phrase: str) -> re.Pattern:
        """``phrase``'s words in a prompt, whole words, any case, any non-word characters between them."""
        return re.compile(r"(?<![A-Za-z0-9'])" + r"[^A-Za-z0-9']+".join(map(re.escape, phrase.split()))
                          + r"(?![A-Za-z0-9'])", re.IGNORECASE)

    def _edit(self, prompt: str, lesson: Lesson) -> str | None:
        new, n = self._pattern(lesson.before).subn(lesson.after, prompt, count=1)
        return new if n and words(new) != words(prompt) else None

    def applicable(self, prompt: str, limit: int) -> list[Lesson]:
        """The best supported lessons (at most ``limit``) that change ``prompt``; one per ``before`` phrase."""
        out, phrases = [], set()
        for lesson in self.supported():
            if len(out) >= limit:
                break
            if lesson.before not in phrases and self._edit(prompt, lesson) is not None:
                phrases.add(lesson.before)
                out.append(lesson)
        return out

    def hints(self, prompt: str) -> list[LessonHint]:
        """What the rewriter is shown for improving ``prompt`` (bounded by ``lessons_in_context``)."""
        return [LessonHint(replace=le.before, by=le.after, wins=le.wins, tries=le.tries)
                for le in self.applicable(prompt, self.config.lessons_in_context)]

    def unhelpful(self, prompt: str) -> list[LessonHint]:
        """Edits of ``prompt`` this campaign tried that never won, fewest tries first (at most
        ``unhelpful_in_context``): a searching rewriter tries other edits first."""
        limit = self.config.unhelpful_in_context
        tried = sorted((le for le in self._lessons.values() if le.wins == 0 and le.tries),
                       key=lambda le: (le.tries, le.before, le.after))
        out = []
        for lesson in tried:
            if len(out) >= limit:
                break
            if self._edit(prompt, lesson) is not None:
                out.append(LessonHint(replace=lesson.before, by=lesson.after, wins=0, tries=lesson.tries))
        return out

    def apply(self, prompt: str) -> list[str]:
        """Prompts made from ``prompt`` by its best applicable lessons (at most ``apply_lessons``): the first applies
        every applicable lesson at once (they edit different phrases), the others one lesson each."""
        lessons = self.applicable(prompt, max(self.config.lessons_in_context, self.config.apply_lessons))
        if not lessons or not self.config.apply_lessons:
            return []
        out = []
        together = prompt
        for lesson in lessons:
            together = self._edit(together, lesson) or together
        out.append(together)
        for lesson in lessons:
            out.append(self._edit(prompt, lesson))
        out = [p for p in dict.fromkeys(out) if p and words(p) != words(prompt)][: self.config.apply_lessons]
        for lesson in lessons:
            lesson.applied += 1
        self.applied += len(out)
        self.changed = bool(out) or self.changed
        if self._delta is not None:
            self._delta.applied.extend(lesson.key for lesson in lessons)
            self._delta.prompts_applied += len(out)
        return out

    # -- copies elsewhere (planner workers) --------------------------------------------------------------------------

    def record(self) -> None:
        """From now on, keep what this copy observes and applies, for :meth:`take_delta`."""
        self._delta = MemoryDelta()

    def take_delta(self) -> MemoryDelta:
        """What this copy did since :meth:`record` (or the last take)."""
        delta, self._delta = self._delta or MemoryDelta(), MemoryDelta()
        return delta

    def replay(self, delta: MemoryDelta) -> None:
        """Fold what a copy did into this memory: its observations observed again here (against this memory's
        current evidence, so two workers' tries add up), its applied lessons counted."""
        for obs in delta.observations:
            self.observe(obs.intent_id, obs.parent, obs.child, obs.parent_score, obs.child_score, obs.checks_fixed)
        for key in delta.applied:
            lesson = self._lessons.get(tuple(key))
            if lesson is not None:
                lesson.applied += 1
        self.applied += delta.prompts_applied
        self.changed = self.changed or bool(delta.observations or delta.applied)

    # -- data -------------------------------------------------------------------------------------------------------

    def lessons(self) -> list[Lesson]:
        """Every lesson, supported ones first (a copy: the store and the report read it)."""
        supported = self.supported()
        rest = sorted((le for le in self._lessons.values() if not self._supported(le)),
                      key=lambda le: (-le.tries, le.before, le.after))
        return [le.model_copy(deep=True) for le in supported + rest]

    def __len__(self) -> int:
        return len(self._lessons)
