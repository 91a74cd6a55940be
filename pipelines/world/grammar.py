"""The caption grammar: many wordings of one spec, split into what training shows often, rarely, or never.

A caption is built from *slots* — the opening ("a photo of ..."), the connective between two objects, where a colour
goes (before or after the noun), and the words for colours, shapes, numbers and relations. Every option of every
slot belongs to one split:

- ``frequent``: the forms training uses almost always (GenEval's own wording among them);
- ``rare``: forms training uses in about ``RARE_SHARE`` of captions, so the model half-learns them;
- ``heldout``: forms training never uses — unseen synonyms ("crimson", "azure", "disk"), number phrases ("a pair of"),
  relation words ("beneath", "on top of"), attribute-after-noun orders ("a circle in red") and new sentence frames.

The model therefore binds attributes well for some wordings, badly for others, and misreads words it never saw, as
real text-to-image models do; user intents in the benchmark are worded with held-out forms (:func:`heldout_wording`),
and a rewriter that restates them in the model's language is what the search can find. The tables below *are* the
split (README's "world" section lists them); ``tests/test_world.py`` checks that training captions contain no
held-out word.

Pure Python (it runs on the training machine).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipelines.world.scenes import NUMBER_WORDS, SceneSpec, plural

FREQUENT, RARE, HELDOUT = "frequent", "rare", "heldout"
SPLITS = (FREQUENT, RARE, HELDOUT)
RARE_SHARE = 0.05
"""In training, a slot takes one of its rare options with this probability (frequent otherwise, held-out never)."""

Options = dict[str, list[str]]

COLOR_WORDS: dict[str, Options] = {
    "red": {FREQUENT: ["red"], RARE: ["scarlet"], HELDOUT: ["crimson", "ruby"]},
    "orange": {FREQUENT: ["orange"], RARE: ["amber"], HELDOUT: ["tangerine", "apricot"]},
    "yellow": {FREQUENT: ["yellow"], RARE: ["golden"], HELDOUT: ["lemon", "canary"]},
    "green": {FREQUENT: ["green"], RARE: ["lime"], HELDOUT: ["emerald", "jade"]},
    "blue": {FREQUENT: ["blue"], RARE: ["cobalt"], HELDOUT: ["azure", "sapphire"]},
    "purple": {FREQUENT: ["purple"], RARE: ["violet"], HELDOUT: ["lilac", "lavender"]},
    "pink": {FREQUENT: ["pink"], RARE: ["rose"], HELDOUT: ["magenta", "salmon"]},
    "white": {FREQUENT: ["white"], RARE: ["ivory"], HELDOUT: ["snowy", "pearl"]},
}

SHAPE_WORDS: dict[str, Options] = {
    "circle": {FREQUENT: ["circle"], RARE: ["disc"], HELDOUT: ["dot", "disk"]},
    "square": {FREQUENT: ["square"], RARE: ["block"], HELDOUT: ["box", "tile"]},
    "triangle": {FREQUENT: ["triangle"], RARE: ["pyramid"], HELDOUT: ["wedge", "cone"]},
    "cross": {FREQUENT: ["cross"], RARE: ["plus"], HELDOUT: ["plus sign", "cruciform"]},
}

COUNT_WORDS: dict[int, Options] = {
    1: {FREQUENT: [NUMBER_WORDS[1]], RARE: ["a single"], HELDOUT: ["a lone", "just one"]},
    2: {FREQUENT: [NUMBER_WORDS[2]], RARE: ["2"], HELDOUT: ["a pair of", "a couple of"]},
    3: {FREQUENT: [NUMBER_WORDS[3]], RARE: ["3"], HELDOUT: ["a trio of", "three separate"]},
    4: {FREQUENT: [NUMBER_WORDS[4]], RARE: ["4"], HELDOUT: ["a quartet of", "four separate"]},
}

RELATION_WORDS: dict[str, Options] = {
    "left of": {FREQUENT: ["left of"], RARE: ["to the left of"], HELDOUT: ["on the left side of", "leftward of"]},
    "right of": {FREQUENT: ["right of"], RARE: ["to the right of"], HELDOUT: ["on the right side of", "rightward of"]},
    "above": {FREQUENT: ["above"], RARE: ["over"], HELDOUT: ["on top of", "higher than"]},
    "below": {FREQUENT: ["below"], RARE: ["under"], HELDOUT: ["beneath", "lower than"]},
}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

OPENINGS: Options = {FREQUENT: ["a photo of {}", "{}"], RARE: ["an image of {}"],
                     HELDOUT: ["a picture of {}", "a drawing showing {}"]}
"""The frame around the whole description."""

COLOR_ORDERS: Options = {FREQUENT: ["{c} {n}"], RARE: ["{c} colored {n}"],
                         HELDOUT: ["{n} in {c}", "{n} that is {c}", "{n} painted {c}"]}
"""Where a colour goes relative to its noun (``{c}`` colour word, ``{n}`` noun). Plural nouns take "that are"."""

PAIRS: Options = {FREQUENT: ["{a} and {b}"], RARE: ["{a} with {b}"],
                  HELDOUT: ["both {a} and {b}", "{a} as well as {b}"]}
"""How two objects without a relation are joined."""

RELATION_FRAMES: Options = {FREQUENT: ["{s} {r} {o}"], RARE: ["{s} placed {r} {o}"],
                            HELDOUT: ["{o} with {s} {r} it", "{s} sitting {r} {o}"]}
"""How "subject relation object" is said; the held-out "{o} with {s} {r} it" names the reference object first."""


@dataclass(frozen=True)
class Wording:
    """A caption and the splits of the choices that made it."""

    text: str
    splits: tuple[str, ...]

    @property
    def split(self) -> str:
        """The least seen split among its choices: heldout > rare > frequent."""
        for s in (HELDOUT, RARE):
            if s in self.splits:
                return s
        return FREQUENT


class _Chooser:
    """Picks one option per slot with split weights, remembering the split of each pick."""

    def __init__(self, rng: random.Random, weights: dict[str, float]):
        self.rng = rng
        self.weights = weights
        self.splits: list[str] = []

    def __call__(self, options: Options) -> str:
        splits = [s for s in SPLITS if options.get(s) and self.weights.get(s, 0) > 0]
        split = self.rng.choices(splits, weights=[self.weights[s] for s in splits])[0]
        self.splits.append(split)
        return self.rng.choice(options[split])


TRAIN_WEIGHTS = {FREQUENT: 1 - RARE_SHARE, RARE: RARE_SHARE, HELDOUT: 0.0}
USER_WEIGHTS = {FREQUENT: 1.0, RARE: 1.0, HELDOUT: 1.0}
CANONICAL_WEIGHTS = {FREQUENT: 1.0}


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _object(choose: _Chooser, shape: str, color: str | None, order, count: int | None = None) -> str:
    """"a red circle" / "a circle in red"; with ``count``: "three red circles" / "a pair of circles in red".
    ``order()`` gives the colour order (chosen once per caption, when a colour is first needed)."""
    noun = choose(SHAPE_WORDS[shape])
    if count is not None and count > 1:
        noun = plural(noun)
    if color is not None:
        c = choose(COLOR_WORDS[color])
        form = order()
        if count is not None and count > 1:
            form = form.replace("that is", "that are")
        noun = form.format(c=c, n=noun)
    if count is None:
        return f"{_article(noun)} {noun}"
    return f"{choose(COUNT_WORDS[count])} {noun}"


def describe(spec: SceneSpec, rng: random.Random, weights: dict[str, float]) -> Wording:
    """A wording of a world spec, each slot drawn with the split ``weights``."""
    choose = _Chooser(rng, weights)
    chosen_order: list[str] = []

    def order() -> str:
        if not chosen_order:
            chosen_order.append(choose(COLOR_ORDERS))
        return chosen_order[0]

    inc = spec.include
    if spec.tag == "counting":
        body = _object(choose, inc[0].cls, inc[0].color, order, count=inc[0].count)
    elif spec.tag == "position":
        rel = inc[1].position[0]  # type: ignore[index]
        subj, obj = inc[1], inc[0]
        if rng.random() < 0.5:  # say it the other way round: "B left of A" == "A right of B"
            subj, obj, rel = obj, subj, INVERSE[rel]
        frame = choose(RELATION_FRAMES)
        s = _object(choose, subj.cls, subj.color, order)
        o = _object(choose, obj.cls, obj.color, order)
        body = frame.format(s=s, r=choose(RELATION_WORDS[rel]), o=o)
    elif len(inc) == 2:
        a, b = (inc[0], inc[1]) if rng.random() < 0.5 else (inc[1], inc[0])
        pair = choose(PAIRS)
        body = pair.format(a=_object(choose, a.cls, a.color, order), b=_object(choose, b.cls, b.color, order))
    else:
        body = _object(choose, inc[0].cls, inc[0].color, order)
    text = choose(OPENINGS).format(body)
    return Wording(text=text, splits=tuple(choose.splits))


def training_wording(spec: SceneSpec, rng: random.Random) -> Wording:
    """A caption as training sees it: frequent forms, rare ones in ``RARE_SHARE`` of slots, never a held-out one."""
    return describe(spec, rng, TRAIN_WEIGHTS)


def heldout_wording(spec: SceneSpec, rng: random.Random, max_tries: int = 100) -> Wording:
    """A user's wording of the spec: every slot uniform over frequent / rare / held-out forms, with at least one
    held-out form (what benchmark intents use)."""
    for _ in range(max_tries):
        w = describe(spec, rng, USER_WEIGHTS)
        if w.split == HELDOUT:
            return w
    raise RuntimeError(f"no held-out wording of {spec.prompt!r} in {max_tries} tries")


def heldout_words() -> set[str]:
    """Words that occur only in held-out options (so never in a training caption)."""
    seen, held = set(), set()
    tables: list[Options] = [*COLOR_WORDS.values(), *SHAPE_WORDS.values(), *COUNT_WORDS.values(),
                             *RELATION_WORDS.values(), OPENINGS, COLOR_ORDERS, PAIRS, RELATION_FRAMES]
    for options in tables:
        for split, texts in options.items():
            for text in texts:
                words = {w for w in text.replace("{}", " ").split() if not w.startswith("{")}
                (held if split == HELDOUT else seen).update(words)
    nouns = [w for options in SHAPE_WORDS.values() for texts in options.values() for t in texts for w in t.split()[-1:]]
    plurals = {plural(n) for n in nouns}
    seen |= {"an"} | {p for p in plurals if p[:-1] in seen or p[:-2] in seen}  # articles and plurals the builder adds
    held |= (plurals - seen) | {"are"}  # "that are" is the plural of the held-out "that is"
    return held - seen


def paraphrases(spec: SceneSpec, n: int, rng: random.Random, avoid: set[str] | None = None,
                max_tries: int = 50) -> list[str]:
    """Up to ``n`` distinct training-distribution wordings of ``spec`` (none in ``avoid``): the phrasings an oracle
    or a rewriter that speaks the model's language would try."""
    seen = set(avoid or ())
    out: list[str] = []
    for _ in range(max_tries):
        if len(out) == n:
            break
        text = training_wording(spec, rng).text
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
