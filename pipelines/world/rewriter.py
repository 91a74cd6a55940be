"""The oracle rewriter (``agents.ports.PromptRewriter``): a labelled upper bound that knows the world's vocabulary.

It is **an oracle, not a rewriter a user could have**: its thesaurus (:data:`THESAURUS`) was written from the world's
own synonym tables (every held-out and rare word of :mod:`pipelines.world.grammar` is a key, most mapping only to the
concept's training word), its merge/reorder rules mirror the grammar's held-out templates, and ``restate`` and
``emphasise`` write the judge's spec out in the model's training words: it reads the intent through the world's
decomposer (:func:`pipelines.world.decompose.parse_intent`, the judge's side) and maps the critic's failed checks to
the spec's objects. Its figure in ``benchmarks/bench_world.py`` is an upper bound on what rewriting can reach, beside
the oracle phrasing arm; with ``restate``/``emphasise`` off and intents worded with synonyms outside its table it
fell *below* best-of-N (DESIGN.md, "an instrument that leaks proves nothing").

Its transformations, each a plain text rule applied to the parent prompt:

- ``common_words``: replace a word or phrase with its training-vocabulary synonym from :data:`THESAURUS`;
- ``attributes``: merge an attribute said after its noun into the usual order ("a circle in red" -> "a red circle"),
  or split it the other way;
- ``reorder``: swap two joined objects, or say a relation the other way round ("A left of B" -> "B right of A");
- ``restate``: restate the failed checks (or all of them) from the judge's spec, in training words;
- ``emphasise``: repeat what a failed check says is missing, in training words.

Which transformation runs is a seeded random choice, weighted toward the ones that address the failed checks. Same
context and seed, same proposals.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from agents.config import RewriterConfig
from agents.critic import checks_from_structure
from agents.messages import IntentChecks, ObjectSpec, RewriteContext, RewriteReply
from agents.rewriter import clean_prompt
from pipelines.world.decompose import ParseError, parse_intent, questions
from pipelines.world.judge import spec_to_checks

THESAURUS: dict[str, list[str]] = {
    # colours
    "crimson": ["red", "scarlet"], "ruby": ["red"], "scarlet": ["red"], "rose": ["red", "pink"],
    "tangerine": ["orange"], "apricot": ["orange", "amber"], "amber": ["orange", "yellow"],
    "lemon": ["yellow"], "canary": ["yellow"], "golden": ["yellow", "orange"],
    "emerald": ["green"], "jade": ["green"], "lime": ["green", "yellow"],
    "azure": ["blue"], "sapphire": ["blue"], "cobalt": ["blue"], "navy": ["blue"],
    "lilac": ["purple", "pink"], "lavender": ["purple"], "violet": ["purple"],
    "magenta": ["pink", "purple"], "salmon": ["pink", "orange"],
    "snowy": ["white"], "pearl": ["white"], "ivory": ["white", "yellow"],
    # shapes
    "dot": ["circle"], "disk": ["circle", "disc"], "disc": ["circle"], "ring": ["circle"], "ball": ["circle"],
    "box": ["square", "block"], "tile": ["square"], "block": ["square"], "rectangle": ["square"],
    "wedge": ["triangle"], "cone": ["triangle"], "pyramid": ["triangle"],
    "plus sign": ["cross", "plus"], "plus": ["cross"], "cruciform": ["cross"],
    # numbers
    "a pair of": ["two", "2"], "a couple of": ["two", "a few"], "a trio of": ["three"], "a quartet of": ["four"],
    "three separate": ["three"], "four separate": ["four"], "a lone": ["one", "a"], "just one": ["one"],
    "a single": ["one", "a"], "2": ["two"], "3": ["three"], "4": ["four"],
    # relations
    "on the left side of": ["left of", "to the left of"], "leftward of": ["left of"],
    "on the right side of": ["right of", "to the right of"], "rightward of": ["right of"],
    "on top of": ["above", "over"], "higher than": ["above"], "over": ["above"],
    "beneath": ["below", "under"], "lower than": ["below"], "under": ["below"],
    "to the left of": ["left of"], "to the right of": ["right of"],
    # frames
    "a picture of": ["a photo of", "an image of"], "a drawing showing": ["a photo of", "a picture of"],
    "an image of": ["a photo of"],
}
"""Word or phrase -> the world's training words for it (written from pipelines/world/grammar.py: an oracle's table)."""

BASIC_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "brown", "black", "gray")
COLOR_WORDS = sorted({*BASIC_COLORS, *(w for w, alts in THESAURUS.items() if set(alts) & set(BASIC_COLORS))})
"""Words the attribute rules treat as colours."""
NOUN_RE = r"[a-z]+(?: sign)?"
RELATIONS: dict[str, str] = {
    "left of": "right of", "right of": "left of", "above": "below", "below": "above",
    "to the left of": "to the right of", "to the right of": "to the left of", "over": "under", "under": "over",
    "on top of": "beneath", "beneath": "on top of",
    "on the left side of": "on the right side of", "on the right side of": "on the left side of",
    "higher than": "lower than", "lower than": "higher than", "leftward of": "rightward of",
    "rightward of": "leftward of",
}
"""Relation phrases and their inverses ("A left of B" == "B right of A")."""
FRAMES = ("a photo of ", "an image of ", "a picture of ", "a drawing showing ")
NUMBERS = {1: ["one", "a single"], 2: ["two", "2"], 3: ["three", "3"], 4: ["four", "4"]}

_COLOR = "(" + "|".join(sorted(COLOR_WORDS, key=len, reverse=True)) + ")"
_REL = "(" + "|".join(sorted(map(re.escape, RELATIONS), key=len, reverse=True)) + ")"

Transform = Callable[[str, "Focus", random.Random], str | None]


class Focus:
    """What the failed checks point at, read from the intent's structure and the critic's answers."""

    def __init__(self, context: RewriteContext):
        checks = context.intent.checks or IntentChecks()
        structured = checks.objects or checks.relations
        questions = [c.question for c in checks_from_structure(checks, 32)] if structured else []
        failed = set(context.failed_checks)
        n_obj = len(checks.objects)
        self.checks = checks
        self.failed_objects = [o for o, q in zip(checks.objects, questions) if q in failed]
        self.failed_relations = [r for r, q in zip(checks.relations, questions[n_obj:]) if q in failed]
        self.failed_questions = [q for q in context.failed_checks if q not in questions]  # unstructured checks

    @property
    def color_failed(self) -> bool:
        return any(o.color for o in self.failed_objects)

    @property
    def count_failed(self) -> bool:
        return any(o.count for o in self.failed_objects)

    def weights(self) -> dict[str, float]:
        """How likely each transformation is: uniform with nothing failed, else toward what addresses the failures."""
        w = {"common_words": 1.0, "attributes": 1.0, "reorder": 1.0, "restate": 1.0, "emphasise": 1.0}
        if self.failed_objects:
            w["common_words"] += 2.0
            w["restate"] += 1.0
            w["emphasise"] += 0.5
        if self.color_failed:
            w["attributes"] += 1.5
        if self.count_failed:
            w["common_words"] += 1.0
        if self.failed_relations:
            w["reorder"] += 2.0
            w["restate"] += 1.5
        return w


def _object_phrase(o: ObjectSpec, rng: random.Random) -> str:
    color = f"{o.color} " if o.color else ""
    if o.count is None:
        words = f"{color}{o.name}"
        return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"
    noun = o.name if o.count == 1 else (o.name + "es" if o.name.endswith(("s", "x")) else o.name + "s")
    number = rng.choice(NUMBERS.get(o.count, [str(o.count)]))
    return f"{number} {color}{noun}"


def common_words(prompt: str, focus: Focus, rng: random.Random) -> str | None:
    """Replace one less common phrase (preferring one whose common form a failed check names) — or, one time in
    three, every one — with a more common synonym."""
    found = []
    for phrase in sorted(THESAURUS, key=len, reverse=True):
        for m in re.finditer(rf"\b{re.escape(phrase)}(?=(e?s)?\b)", prompt):
            if not any(m.start() < e and s < m.end() for s, e, _ in found):
                found.append((m.start(), m.end(), phrase))
    if not found:
        return None
    named = " ".join([o.name + " " + (o.color or "") for o in focus.failed_objects] + focus.failed_questions)
    preferred = [f for f in found if any(c in named for c in THESAURUS[f[2]])]
    chosen = found if rng.random() < 1 / 3 else [rng.choice(preferred or found)]
    for start, end, phrase in sorted(chosen, reverse=True):
        prompt = prompt[:start] + rng.choice(THESAURUS[phrase]) + prompt[end:]
    return prompt


def attributes(prompt: str, focus: Focus, rng: random.Random) -> str | None:
    """Merge "NOUN in/that is/painted COLOUR" or "COLOUR colored NOUN" into "COLOUR NOUN"; if there is nothing to
    merge (or one time in four), split "COLOUR NOUN" into "NOUN in COLOUR" instead."""
    merge_patterns = [
        (rf"\b({NOUN_RE}) (?:in|that is|that are|painted) {_COLOR}\b", lambda m: f"{m.group(2)} {m.group(1)}"),
        (rf"\b{_COLOR} colou?red ({NOUN_RE})\b", lambda m: f"{m.group(1)} {m.group(2)}"),
    ]
    merges = [(pat, fn) for pat, fn in merge_patterns if re.search(pat, prompt)]
    if merges and rng.random() < 0.75:
        pat, fn = rng.choice(merges)
        return re.sub(pat, fn, prompt, count=1)
    splits = list(re.finditer(rf"\b{_COLOR} ({NOUN_RE})\b", prompt))
    if not splits:
        return None
    m = rng.choice(splits)
    form = rng.choice(["{n} in {c}", "{n} that is {c}", "{n} colored {c}"])
    return prompt[:m.start()] + form.format(n=m.group(2), c=m.group(1)) + prompt[m.end():]


def reorder(prompt: str, focus: Focus, rng: random.Random) -> str | None:
    """Say a relation the other way round ("A REL B" -> "B INVERSE A"), or swap two objects joined by a conjunction."""
    frame = next((f for f in FRAMES if prompt.startswith(f)), "")
    body = prompt[len(frame):]
    m = re.fullmatch(rf"(.+?) with (.+?) {_REL} it", body)  # "B with A left of it" -> "A left of B"
    if m:
        return frame + f"{m.group(2)} {m.group(3)} {m.group(1)}"
    m = re.fullmatch(rf"(.+?) (placed |sitting |positioned )?{_REL} (.+)", body)
    if m:
        return frame + f"{m.group(4)} {m.group(2) or ''}{RELATIONS[m.group(3)]} {m.group(1)}"
    m = re.fullmatch(r"(?:both )?(.+?) (and|with|as well as) (.+)", body)
    if m:
        return frame + f"{m.group(3)} {m.group(2)} {m.group(1)}"
    return None


def restate(prompt: str, focus: Focus, rng: random.Random) -> str | None:
    """Describe the intent from its checks, the failed ones first: "a red circle left of a blue square"."""
    checks = focus.checks
    if not checks.objects:
        return None
    objects = sorted(checks.objects, key=lambda o: o not in focus.failed_objects)
    phrases = {id(o): _object_phrase(o, rng) for o in objects}
    if checks.relations:
        r = checks.relations[0]
        by_name = {(f"{o.color} {o.name}" if o.color else o.name): o for o in objects}
        s, o = by_name.get(r.subject), by_name.get(r.object)
        if s is None or o is None:
            return None
        body = f"{phrases[id(s)]} {r.relation} {phrases[id(o)]}"
    else:
        body = " and ".join(phrases[id(o)] for o in objects)
    return rng.choice(["", "a photo of ", "an image of "]) + body


def emphasise(prompt: str, focus: Focus, rng: random.Random) -> str | None:
    """Repeat what is missing: the failed objects (or, with none failed, a random one of the intent)."""
    missing = focus.failed_objects or list(focus.checks.objects)
    if not missing:
        return None
    phrase = _object_phrase(rng.choice(missing), rng)
    return rng.choice(["{p}, {m}", "{p}, with {m} clearly visible", "{m}: {p}", "{p}, {m} in the picture"]).format(
        p=prompt, m=phrase)


def fix_articles(text: str) -> str:
    """"a" before a vowel, "an" before a consonant (a replaced word may change which one fits)."""
    text = re.sub(r"\b([Aa])n ([^aeiouAEIOU\W])", r"\1 \2", text)
    return re.sub(r"\b([Aa]) ([aeiouAEIOU])", r"\1n \2", text)


TRANSFORMS: dict[str, Transform] = {
    "common_words": common_words, "attributes": attributes, "reorder": reorder, "restate": restate,
    "emphasise": emphasise,
}


class OracleRewriter:
    """``PromptRewriter`` with the transformations above (an upper bound: see the module docstring). Each proposal
    applies one transformation, or with probability ``temperature / 2`` two in a row, to the parent prompt; duplicates
    and tried prompts are skipped."""

    knows = ("ORACLE, an upper bound and not a rewriter a user could have: the world's synonym table and the judge's "
             "spec, in the model's training words")

    def __init__(self, config: RewriterConfig | None = None, max_attempts: int = 40):
        self.config = config or RewriterConfig()
        self.max_attempts = max_attempts

    def proposals(self, context: RewriteContext, seed: int, temperature: float) -> list[tuple[str, list[str]]]:
        """Up to ``context.k`` new prompts, each with the names of the transformations that made it."""
        rng = random.Random(f"rule-rewriter:{seed}")
        focus = Focus(with_spec(context))
        weights = focus.weights()
        names = list(weights)
        seen = {p.lower() for p in context.tried} | {context.current_prompt.lower()}
        out: list[tuple[str, list[str]]] = []
        for _ in range(self.max_attempts):
            if len(out) == context.k:
                break
            prompt, used = context.current_prompt, []
            for _ in range(2 if rng.random() < temperature / 2 else 1):
                name = rng.choices(names, weights=[weights[n] for n in names])[0]
                new = TRANSFORMS[name](prompt, focus, rng)
                if new is not None:
                    prompt, used = fix_articles(clean_prompt(new)), [*used, name]
            if used and prompt.lower() not in seen and len(prompt) <= self.config.max_prompt_chars:
                seen.add(prompt.lower())
                out.append((prompt, used))
        return out

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        prompts = [p for p, _ in self.proposals(context, seed, temperature)]
        if not prompts:
            return RewriteReply(error=f"no transformation changes {context.current_prompt!r} into an untried prompt")
        return RewriteReply(prompts=prompts)


def with_spec(context: RewriteContext) -> RewriteContext:
    """The context with the judge's spec put in: the intent's structured checks in training words and the failed
    checks mapped onto them (by position: the world's critic asks one question per object, then the relation). What
    makes this rewriter an oracle. A context whose intent already has structured checks is returned as it is."""
    intent = context.intent
    if intent.checks and (intent.checks.objects or intent.checks.relations):
        return context
    try:
        parsed = parse_intent(intent.text)
    except ParseError:
        return context
    canonical = spec_to_checks(parsed.spec)
    honest = questions(parsed)
    oracle = [c.question for c in checks_from_structure(canonical, 32)]
    failed = [oracle[honest.index(q)] for q in context.failed_checks if q in honest]
    return context.model_copy(update={"intent": intent.model_copy(update={"checks": canonical}),
                                      "failed_checks": failed, "checks": oracle})


def oracle_rewriter(llm, config: RewriterConfig) -> OracleRewriter:
    """Preset factory (``rewriter: pipelines.world.rewriter:oracle_rewriter``): needs no language model."""
    return OracleRewriter(config)
