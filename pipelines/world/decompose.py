"""The world's decomposer: an intent's own words -> the judge's private spec, and checks and feedback that quote them.

A critic that judges an intent must know what the intent asks for. GenEval's detector gets it from a metadata record;
a VLM critic reads it from the text. The world's critic does the second: :func:`parse_intent` reads a wording of the
caption grammar (:mod:`pipelines.world.grammar`: every frame, connective, colour order, count phrase and word,
frequent, rare or held-out) back into the GenEval-style spec the judge scores against, and keeps, for every object
and relation, the *surface phrase* the intent used ("wedges in crimson", "beneath", "a pair of").

What leaves the critic — the check questions (:func:`questions`) and the feedback (:func:`feedback`) — is built only
from those surface phrases and a few function words ("Is there a crimson wedge?", "no crimson wedge found", "too few
wedges (the intent asks for a pair of wedges)"). The spec, and with it the world's vocabulary, stays inside the
judge: a rewriter reading the checks and the feedback learns what is missing in the words the user chose, never the
words the image model was trained on (``tests/test_world_honest.py`` checks this over every held-out and example
intent).

Pure Python; no image or model work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipelines.world.grammar import (
    COLOR_ORDERS,
    COLOR_WORDS,
    COUNT_WORDS,
    INVERSE,
    OPENINGS,
    RELATION_WORDS,
    SHAPE_WORDS,
)
from pipelines.world.scenes import Requirement, SceneSpec, plural


class ParseError(ValueError):
    """The text is not a wording the world's grammar can produce (so the world cannot judge it)."""


def _table(options_by_concept: dict) -> dict[str, object]:
    """Surface form -> concept, over every split (frequent, rare and held-out alike)."""
    out: dict[str, object] = {}
    for concept, options in options_by_concept.items():
        for texts in options.values():
            for text in texts:
                out[text] = concept
    return out


_COLORS = _table(COLOR_WORDS)
_SHAPES = _table(SHAPE_WORDS)
_SHAPES_PLURAL = {plural(w): c for w, c in _SHAPES.items()}
_COUNTS = _table(COUNT_WORDS)
_RELATIONS = _table(RELATION_WORDS)
_FRAMES = sorted({t.replace("{}", "").strip() for texts in OPENINGS.values() for t in texts} - {""}, key=len,
                 reverse=True)
_ORDERS = [t for texts in COLOR_ORDERS.values() for t in texts]


def _alt(words) -> str:
    return "(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def _noun_phrase_patterns(nouns: dict[str, object], plural_form: bool) -> list[re.Pattern]:
    """One full-match regex per colour order (and one for a bare noun): groups ``n`` (noun) and ``c`` (colour)."""
    n, c = f"(?P<n>{_alt(nouns)[1:-1]})", f"(?P<c>{_alt(_COLORS)[1:-1]})"
    pats = [f"{n}"]
    for form in _ORDERS:
        if plural_form:
            form = form.replace("that is", "that are")
        pats.append(form.replace("{c}", c).replace("{n}", n))
    return [re.compile(p) for p in pats]


_NP_SINGULAR = _noun_phrase_patterns(_SHAPES, plural_form=False)
_NP_PLURAL = _noun_phrase_patterns(_SHAPES_PLURAL, plural_form=True)


@dataclass(frozen=True)
class ParsedObject:
    """One object of the intent: the judge's reading (``shape``, ``color``, ``count``, ``exact``) and the intent's
    own words for it (``phrase``: the noun with its colour as written, e.g. "wedges in crimson"; ``quantity``: the
    article or count phrase as written, e.g. "a", "a pair of")."""

    shape: str
    color: str | None
    count: int
    exact: bool
    phrase: str
    quantity: str

    @property
    def mention(self) -> str:
        """The object as the intent says it: "a crimson wedge", "a pair of wedges in crimson"."""
        return f"{self.quantity} {self.phrase}"


@dataclass(frozen=True)
class ParsedRelation:
    """``objects[subject]`` stands ``relation`` (canonical, for the judge) of ``objects[object]``; ``phrase`` is the
    relation as the intent says it ("beneath", "on the left side of")."""

    subject: int
    object: int
    relation: str
    phrase: str


@dataclass(frozen=True)
class ParsedIntent:
    """An intent read by the world: its objects in the order the text names them, at most one relation, and the
    GenEval-style spec the judge scores (include entries in the same order as ``objects``)."""

    objects: tuple[ParsedObject, ...]
    relation: ParsedRelation | None
    spec: SceneSpec


def _noun_phrase(text: str, plural_form: bool) -> tuple[str, str | None, str] | None:
    """(shape, colour, phrase) if ``text`` is exactly one noun phrase of the grammar, else None."""
    for pat in (_NP_PLURAL if plural_form else _NP_SINGULAR):
        m = pat.fullmatch(text)
        if m:
            nouns = _SHAPES_PLURAL if plural_form else _SHAPES
            color = m.groupdict().get("c")
            return nouns[m.group("n")], (_COLORS[color] if color else None), text  # type: ignore[return-value]
    return None


def _single(text: str) -> ParsedObject | None:
    """"a crimson wedge" / "an azure disk" (article + singular noun phrase)."""
    art, _, rest = text.partition(" ")
    if art not in ("a", "an"):
        return None
    np = _noun_phrase(rest, plural_form=False)
    if np is None:
        return None
    return ParsedObject(shape=np[0], color=np[1], count=1, exact=False, phrase=np[2], quantity=art)


def _counted(text: str) -> ParsedObject | None:
    """"a pair of wedges", "three separate disks that are pearl", "a lone box": a count phrase + noun phrase."""
    for phrase in sorted(_COUNTS, key=len, reverse=True):
        if not text.startswith(phrase + " "):
            continue
        count = int(_COUNTS[phrase])  # type: ignore[arg-type]
        np = _noun_phrase(text[len(phrase) + 1:], plural_form=count > 1)
        if np is not None:
            return ParsedObject(shape=np[0], color=np[1], count=count, exact=True, phrase=np[2], quantity=phrase)
    return None


def _split(text: str, connective: str):
    """Every (left, right) with ``left + connective + right == text`` at word boundaries."""
    sep = f" {connective} "
    start = 0
    while (i := text.find(sep, start)) >= 0:
        yield text[:i], text[i + len(sep):]
        start = i + 1


def _pair(body: str) -> tuple[ParsedObject, ParsedObject] | None:
    """"A and B", "A with B", "both A and B", "A as well as B"."""
    text = body[len("both "):] if body.startswith("both ") else body
    for connective in ("and", "with", "as well as"):
        for left, right in _split(text, connective):
            a, b = _single(left), _single(right)
            if a and b:
                return a, b
    return None


def _position(body: str) -> tuple[list[ParsedObject], ParsedRelation] | None:
    """"S R O", "S placed R O", "S sitting R O" and "O with S R it" (R any relation phrase)."""
    for rel_phrase in sorted(_RELATIONS, key=len, reverse=True):
        relation = str(_RELATIONS[rel_phrase])
        if body.endswith(f" {rel_phrase} it"):  # "O with S R it": the reference object comes first
            for left, right in _split(body[: -len(f" {rel_phrase} it")], "with"):
                o, s = _single(left), _single(right)
                if o and s:
                    return [o, s], ParsedRelation(subject=1, object=0, relation=relation, phrase=rel_phrase)
        for left, right in _split(body, rel_phrase):
            for verb in (" placed", " sitting", ""):
                if verb and not left.endswith(verb):
                    continue
                s, o = _single(left[: len(left) - len(verb)]), _single(right)
                if s and o:
                    return [s, o], ParsedRelation(subject=0, object=1, relation=relation, phrase=rel_phrase)
    return None


def _spec(objects: list[ParsedObject], relation: ParsedRelation | None, tag: str) -> SceneSpec:
    include = [Requirement(cls=o.shape, count=o.count, color=o.color) for o in objects]
    if relation is not None:
        # GenEval's form: the later entry points back at the earlier one ("include[1] is REL of include[0]").
        rel = relation.relation if relation.subject == 1 else INVERSE[relation.relation]
        include[1] = include[1].model_copy(update={"position": (rel, 0)})
    exclude = [Requirement(cls=o.shape, count=o.count + 1) for o in objects if o.exact]
    return SceneSpec(tag=tag, include=include, exclude=exclude, prompt="-")


def parse_intent(text: str) -> ParsedIntent:
    """Read a wording of the world's grammar (any split) into its objects, relation and spec.

    Raises :class:`ParseError` naming the text when it is not such a wording (the world then cannot judge it)."""
    t = " ".join(text.lower().strip().rstrip(".").split())
    bodies = [t] + [t[len(f) + 1:] for f in _FRAMES if t.startswith(f + " ")]
    for body in bodies:
        if (one := _single(body)) is not None:
            return ParsedIntent((one,), None, _spec([one], None, "colors" if one.color else "single_object"))
        if (one := _counted(body)) is not None:
            return ParsedIntent((one,), None, _spec([one], None, "counting"))
        if (pos := _position(body)) is not None:
            objs, rel = pos
            return ParsedIntent(tuple(objs), rel, _spec(objs, rel, "position"))
        if (pair := _pair(body)) is not None:
            tag = "color_attr" if all(o.color for o in pair) else "two_object"
            return ParsedIntent(pair, None, _spec(list(pair), None, tag))
    raise ParseError(f"the world cannot read {text!r}: it is not a wording of its caption grammar (one shape, a "
                     f"counted shape, two shapes, or two shapes in a relation)")


# --------------------------------------------------------------------------------------------------------------------
# What the critic says: questions and feedback in the intent's own words
# --------------------------------------------------------------------------------------------------------------------


def _the(o: ParsedObject) -> str:
    return f"the {o.phrase}"


def questions(parsed: ParsedIntent) -> list[str]:
    """One yes/no question per object (in text order), then one for the relation, quoting the intent."""
    out = []
    for o in parsed.objects:
        if o.exact:
            out.append(f"Does the image show {o.mention}, no more and no fewer?")
        else:
            out.append(f"Is there {o.mention}?")
    if parsed.relation is not None:
        r = parsed.relation
        out.append(f"Is {_the(parsed.objects[r.subject])} {r.phrase} {_the(parsed.objects[r.object])}?")
    return out


def feedback(parsed: ParsedIntent, answers: list[bool], counts: list[dict[str, int]],
             relation_checkable: bool = True) -> list[str]:
    """What is wrong, one sentence per failed check (``answers`` in :func:`questions`' order), in the intent's words.

    ``counts[i]`` is what the judge found for object ``i``: ``n`` (objects of its shape and colour), ``n_shape`` (of
    its shape, any colour) and ``n_color`` (of its colour, any shape; only read when the intent names a colour).
    ``relation_checkable`` is False when an object of the relation is missing. Numbers are said as "too few" / "too
    many" beside the intent's own count phrase: the critic writes no number words of its own."""
    notes: list[str] = []
    for o, ok, c in zip(parsed.objects, answers, counts):
        if ok:
            continue
        if o.exact and c["n_shape"] > o.count and c["n"] >= o.count:
            notes.append(f"too many {o.phrase}: the intent asks for {o.mention}")
        elif 0 < c["n"] < o.count:
            notes.append(f"too few {o.phrase}: the intent asks for {o.mention}")
        elif o.color and c["n_shape"] > 0:
            notes.append(f"no {o.phrase} found: the shape is there, but not in the colour the intent names")
        elif o.color and c["n_color"] > 0:
            notes.append(f"no {o.phrase} found: something has the colour, but not the shape the intent names")
        else:
            notes.append(f"no {o.phrase} found")
    if parsed.relation is not None and len(answers) > len(parsed.objects) and not answers[len(parsed.objects)]:
        r = parsed.relation
        s, t = _the(parsed.objects[r.subject]), _the(parsed.objects[r.object])
        if relation_checkable:
            notes.append(f"{s} is not {r.phrase} {t}")
        else:
            notes.append(f"cannot tell whether {s} is {r.phrase} {t}: an object is missing")
    return notes
