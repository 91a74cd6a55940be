"""Content safety: moderation of intents and an output filter on rewritten prompts.

The default :class:`KeywordModerator` is deliberately transparent: a lexicon of concepts ("sexual", "minor",
"nonconsent"), rules over those concepts and a few regular expressions, all plain data in this module, applied to text
that has first been *normalised* so that the usual obfuscations read as the words they hide:

- Unicode: NFKC (fullwidth ``ｎａｋｅｄ``, ligatures), lower case, accents stripped (``nákéd``), zero-width and other
  invisible format characters removed, Cyrillic/Greek/other look-alike letters mapped to Latin (``nаkеd`` with
  Cyrillic а/е);
- spacing and punctuation: runs of single letters are joined (``n a k e d``, ``n.a.k.e.d``, ``n-a-k-e-d``),
  punctuation inside a word is dropped (``na.ked``), a word cut in two by a space is rejoined (``na ked``), ``*``
  stands for any letter (``n*ked``), repeated letters are squeezed (``naaaked``), words run together are split over
  the lexicon (``nakedchild``);
- leetspeak: ``0→o 1→i/l 3→e 4→a 5→s 7→t 8→b 9→g @→a $→s !→i |→l/i +→t``, tried only inside tokens that contain a
  letter, so ages such as "12 year old" keep their digits.

Benign phrases are matched before concept words and neutralise them ("a naked mole rat next to children", "keep
children away from the naked flame", "kid gloves"). It is a floor, not a classifier: it knows only its lexicon, and a
phrase it calls benign hides the words in it. A production deployment plugs a model-based moderator into the same
:class:`Moderator` protocol (and can keep this one in front of it: it costs well under a millisecond per text).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol


class Moderator(Protocol):
    def check(self, text: str) -> str | None:
        """None if allowed, else the reason it is blocked."""
        ...


# ----------------------------------------------------------------------------------------------------------------------
# Normalisation tables (data)
# ----------------------------------------------------------------------------------------------------------------------

# Letters from other scripts that look like Latin ones (after case folding). NFKC already maps fullwidth and most
# mathematical/enclosed forms; accents are stripped separately.
HOMOGLYPHS: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "є": "e", "г": "r", "к": "k", "м": "m", "н": "h", "о": "o", "п": "n",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ш": "w", "ь": "b", "ѕ": "s",
    "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
    "ρ": "p", "σ": "o", "ς": "c", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # Armenian and Latin look-alikes NFKD does not decompose
    "ո": "n", "ս": "u", "օ": "o", "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t", "ƙ": "k", "ɑ": "a",
    "ɩ": "i", "ʀ": "r", "ɴ": "n", "ᴋ": "k", "ᴅ": "d", "ᴇ": "e",
}

# Leetspeak, only inside tokens that also contain a letter. Ambiguous characters list every reading.
LEET: dict[str, tuple[str, ...]] = {
    "0": ("o",), "1": ("i", "l"), "3": ("e",), "4": ("a",), "5": ("s",), "7": ("t",), "8": ("b",), "9": ("g",),
    "@": ("a",), "$": ("s",), "!": ("i",), "|": ("l", "i"), "+": ("t",), "€": ("e",),
}
MASK = "*"  # stands for any one letter: "n*ked"

# Punctuation dropped when it sits between two word characters ("na.ked", "n-a-k-e-d", "child's").
_INNER_PUNCT = re.compile(r"(?<=[\w@$!|+€*])[.\-_'`~^·•:,/\\]+(?=[\w@$!|+€*])")
_TOKEN_B = re.compile(r"[a-z0-9@$!|+€*]+")
_TOKEN_A = re.compile(r"[a-z0-9]+")
_SQUEEZE = re.compile(r"(.)\1{2,}")
_MAX_VARIANTS = 16

# ----------------------------------------------------------------------------------------------------------------------
# Lexicon and rules (data)
# ----------------------------------------------------------------------------------------------------------------------

CONCEPT_WORDS: dict[str, tuple[str, ...]] = {
    "sexual": (
        "nude", "nudes", "naked", "nakedness", "nudity", "unclothed", "undressed", "undressing", "disrobed",
        "disrobing", "topless", "bottomless", "sex", "sexual", "sexually", "sexy", "sexualized", "sexualised", "porn",
        "porno", "pornographic", "pornography", "xxx", "nsfw", "erotic", "erotica", "lewd", "lingerie", "fetish",
        "hentai", "seductive", "sensual", "stripper", "striptease", "orgasm", "genitals", "genitalia", "nipples",
        "nudist", "nudism", "naturist", "naturism",
    ),
    "minor": (
        "child", "children", "childs", "kid", "kids", "kiddie", "kiddo", "minor", "minors", "underage", "preteen",
        "preteens", "teen", "teens", "teenage", "teenager", "teenagers", "tween", "tweens", "toddler", "toddlers",
        "infant", "infants", "baby", "babies", "youngster", "youngsters", "juvenile", "juveniles", "adolescent",
        "adolescents", "pubescent", "prepubescent", "schoolgirl", "schoolgirls", "schoolboy", "schoolboys", "loli",
        "lolita", "lolicon", "shota", "shotacon",
    ),
    "nonconsent": (
        "rape", "raped", "raping", "rapist", "nonconsensual", "molest", "molested", "molesting", "molestation",
        "molester", "upskirt", "creepshot", "creepshots",
    ),
}

# Multi-word phrases, matched before single words. A phrase mapped to None is benign: its words count for nothing.
PHRASES: dict[str, str | None] = {
    # sexual
    "in the nude": "sexual", "no clothes": "sexual", "without clothes": "sexual", "without clothing": "sexual",
    "no clothing": "sexual", "wearing nothing": "sexual", "sexually explicit": "sexual", "explicit photo": "sexual",
    "explicit photos": "sexual", "explicit image": "sexual", "explicit images": "sexual", "explicit content": "sexual",
    "explicit pictures": "sexual",
    # minor
    "little girl": "minor", "little girls": "minor", "little boy": "minor", "little boys": "minor",
    "young girl": "minor", "young girls": "minor", "young boy": "minor", "young boys": "minor",
    "school girl": "minor", "school girls": "minor", "school boy": "minor", "school boys": "minor",
    "under age": "minor", "pre teen": "minor", "middle schooler": "minor", "grade schooler": "minor",
    "elementary schooler": "minor",
    # non-consent
    "non consensual": "nonconsent", "revenge porn": "nonconsent", "sexual assault": "nonconsent",
    "against her will": "nonconsent", "against his will": "nonconsent", "against their will": "nonconsent",
    "forced sex": "nonconsent", "deepfake porn": "nonconsent", "deep fake porn": "nonconsent",
    "deepfake nude": "nonconsent", "deepfake nudes": "nonconsent",
    # benign uses of the words above
    "naked mole rat": None, "naked mole rats": None, "naked mole": None, "naked eye": None, "naked flame": None,
    "naked flames": None, "naked truth": None, "naked tree": None, "naked trees": None, "naked branches": None,
    "nude lipstick": None, "nude color": None, "nude colour": None, "nude colored": None, "nude coloured": None,
    "nude heels": None, "nude shoes": None, "nude palette": None, "nude tones": None, "nude beige": None,
    "baby blue": None, "baby pink": None, "baby shower": None, "baby grand": None, "baby carrots": None,
    "baby spinach": None, "baby steps": None, "baby oil": None, "baby elephant": None, "baby animals": None,
    "kid gloves": None, "kid goat": None, "kid goats": None, "kid leather": None,
    "oilseed rape": None, "rape field": None, "rape fields": None, "rape seed": None, "rape blossom": None,
    "minor key": None, "minor chord": None, "minor scale": None, "minor league": None, "minor detail": None,
    "minor details": None, "minor planet": None, "minor changes": None, "minor damage": None,
}

_NUMBER_WORDS = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
                 "seventeen|eighteen|nineteen|twenty")
# "12 year old", "12-year-old", "12 yrs old", "12yo", "12 y/o", "aged 12", "twelve year old"
AGE_PATTERNS: tuple[str, ...] = (
    rf"\b(\d{{1,3}}|{_NUMBER_WORDS})\s*[-_ ]?\s*(?:years?|yrs?|y)\s*[-_ ]?\s*(?:old|o)\b",
    r"\b(\d{1,3})\s*(?:yo|y/o)\b",
    rf"\baged?\s+(\d{{1,3}}|{_NUMBER_WORDS})\b",
)
ADULT_AGE = 18


@dataclass(frozen=True)
class Rule:
    """Block with ``reason`` when every concept in ``all_of`` occurs in the text, or when ``pattern`` (a regular
    expression over the normalised text) matches. Exactly one of the two is given."""

    reason: str
    all_of: frozenset[str] = frozenset()
    pattern: str | None = None

    def __post_init__(self):
        if bool(self.all_of) == bool(self.pattern):
            raise ValueError(f"rule {self.reason!r} needs exactly one of all_of and pattern")

    @classmethod
    def regex(cls, pattern: str, reason: str) -> Rule:
        return cls(reason=reason, pattern=pattern)


DEFAULT_RULES: list[Rule] = [
    Rule("sexual content involving minors", all_of=frozenset({"sexual", "minor"})),
    Rule("non-consensual sexual content", all_of=frozenset({"nonconsent"})),
    Rule.regex(r"\bhow to (make|build|synthesi[sz]e|produce|assemble) (a |an )?(pipe )?(bomb|explosive|nerve agent|"
               r"bioweapon|chemical weapon)s?\b", "instructions for mass harm"),
]

# Markers of text addressed to a model rather than describing a picture. Blocked in rewrites only: an intent that
# contains them is still rendered (it is data), but a rewrite that carries them on is a sign the rewriter was steered.
INJECTION_RULES: list[Rule] = [
    Rule.regex(r"\b(ignore|disregard) (all |any )?(previous|prior|above) (instructions|prompts?)\b",
               "prompt-injection text"),
    Rule.regex(r"<\|im_(start|end)\|>|</?user_data>|\bsystem prompt\b", "chat-markup or injection text"),
]


def _joinings(words: list[str]) -> list[tuple[str, ...]]:
    """Every way of writing a phrase with some neighbouring words run together (2^(k-1) of them)."""
    out = []
    for glue in itertools.product((False, True), repeat=len(words) - 1):
        parts = [words[0]]
        for w, join in zip(words[1:], glue):
            if join:
                parts[-1] += w
            else:
                parts.append(w)
        out.append(tuple(parts))
    return out


@dataclass(frozen=True)
class Lexicon:
    """Words and phrases that signal a concept; phrases mapped to None are benign."""

    words: Mapping[str, str]
    phrases: Mapping[tuple[str, ...], str | None]
    age_patterns: tuple[re.Pattern, ...] = ()
    _first: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, concepts: Mapping[str, Iterable[str]] = CONCEPT_WORDS,
              phrases: Mapping[str, str | None] = PHRASES, age_patterns: Iterable[str] = AGE_PATTERNS) -> Lexicon:
        words = {w: concept for concept, ws in concepts.items() for w in ws}
        phrase_map: dict[tuple[str, ...], str | None] = {}
        for p, c in phrases.items():
            for joined in _joinings(p.split()):  # "naked mole-rat" reads as ("naked", "molerat") once "-" is dropped
                phrase_map.setdefault(joined, c)
        first: dict[str, list[tuple[str, ...]]] = {}
        for p in sorted(phrase_map, key=len, reverse=True):  # longest first
            first.setdefault(p[0], []).append(p)
        return cls(words=words, phrases=phrase_map, age_patterns=tuple(re.compile(p) for p in age_patterns),
                   _first={k: tuple(v) for k, v in first.items()})


DEFAULT_LEXICON = Lexicon.build()

# ----------------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lowercase, NFKC, control characters removed, whitespace collapsed (for matching and de-duplication)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\t\n ")
    return re.sub(r"\s+", " ", text).strip().lower()


def fold(text: str) -> str:
    """Characters only: NFKC, lower case, accents and invisible characters removed, look-alikes mapped to Latin,
    every kind of whitespace made one space. Punctuation and digits stay."""
    # lower(), not casefold(): casefold turns the final sigma "ς" (looks like c) into "σ" (looks like o)
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).lower())
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Mn", "Me", "Cf", "Cc", "Co", "Cs", "Cn") and ch not in "\t\n\r":
            continue  # combining accents, zero-width/bidi/tag characters, controls, unassigned
        if cat.startswith("Z") or ch in "\t\n\r":
            out.append(" ")
        else:
            out.append(HOMOGLYPHS.get(ch, ch))
    return re.sub(r" +", " ", "".join(out)).strip()


def _leet_variants(token: str) -> list[str]:
    if not any(ch.isalpha() for ch in token if ch != MASK) or not any(ch in LEET for ch in token):
        return [token]
    options = [LEET.get(ch, (ch,)) for ch in token]
    variants = []
    for combo in itertools.islice(itertools.product(*options), _MAX_VARIANTS):
        variants.append("".join(combo))
    return variants


def _squeezed(token: str) -> list[str]:
    """'naaaked' -> 'naked' and 'naaked'; only for tokens with a letter repeated three or more times."""
    if not _SQUEEZE.search(token):
        return []
    return [_SQUEEZE.sub(r"\1", token), _SQUEEZE.sub(r"\1\1", token)]


def words_view(folded: str) -> list[tuple[str, ...]]:
    """Plain words, split at any punctuation: one reading per token."""
    return [(t,) for t in _TOKEN_A.findall(folded)]


def deobfuscated_view(folded: str) -> list[tuple[str, ...]]:
    """Inner punctuation dropped, single-letter runs joined, leetspeak and repeated letters decoded: each slot holds
    every reading of its token (the first is the canonical one)."""
    tokens = _TOKEN_B.findall(_INNER_PUNCT.sub("", folded))
    merged: list[str] = []
    run: list[str] = []
    for tok in [*tokens, ""]:  # sentinel flushes the last run
        if len(tok) == 1:
            run.append(tok)
            continue
        if len(run) >= 3:
            merged.append("".join(run))
        else:
            merged.extend(run)
        run = []
        if tok:
            merged.append(tok)
    slots = []
    for tok in merged:
        readings: list[str] = []
        for v in _leet_variants(tok):
            for r in (v, *_squeezed(v)):
                if r not in readings:
                    readings.append(r)
        slots.append(tuple(readings))
    return slots


# ----------------------------------------------------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _masked(word: str, vocabulary: frozenset[str]) -> str | None:
    pattern = re.compile("".join("[a-z]" if ch == MASK else re.escape(ch) for ch in word))
    return next((w for w in sorted(vocabulary) if len(w) == len(word) and pattern.fullmatch(w)), None)


class KeywordModerator:
    """Rules over a concept lexicon and regular expressions, applied to normalised views of the text.

    ``rules`` may also be given as ``(pattern, reason)`` pairs (regular-expression rules, as before).
    """

    def __init__(self, rules: Sequence[Rule | tuple[str, str]] | None = None, lexicon: Lexicon | None = None):
        given = DEFAULT_RULES if rules is None else rules
        self.rules = [r if isinstance(r, Rule) else Rule.regex(r[0], r[1]) for r in given]
        self.lexicon = lexicon or DEFAULT_LEXICON
        self._patterns = [(re.compile(r.pattern, re.DOTALL), r.reason) for r in self.rules if r.pattern]
        self._concept_rules = [r for r in self.rules if r.all_of]
        self._vocabulary = frozenset(self.lexicon.words)

    # -- concepts ------------------------------------------------------------------------------------------------------
    def _word(self, reading: str) -> str | None:
        """The lexicon word a reading stands for: itself, without a plural ending, or a masked spelling of it."""
        words = self.lexicon.words
        if MASK in reading:
            letters, masks = sum(ch.isalpha() for ch in reading), reading.count(MASK)
            return _masked(reading, self._vocabulary) if letters >= 2 and masks <= len(reading) // 2 else None
        plurals: tuple[str, ...] = ()
        if reading.endswith("s"):
            plurals = (reading[:-1], reading[:-2]) if reading.endswith("es") else (reading[:-1],)
        for form in (reading, *plurals):
            if form in words:
                return form
        return None

    def _compound(self, reading: str) -> list[str]:
        """'nakedchild' -> ['naked', 'child']: the whole token split into >= 2 lexicon words of >= 3 letters; a
        leading 'a' may be a spaced-out article ('a n a k e d' -> 'anaked' -> ['naked'])."""
        if MASK in reading:
            return []
        texts = [reading[1:], reading] if reading.startswith("a") else [reading]
        for text in texts:
            if text is not reading and (word := self._word(text)):
                return [word]
            n = len(text)
            if n < 6:
                continue
            best: list[list[str] | None] = [[]] + [None] * n  # best[k]: a split of text[:k] into lexicon words
            for end in range(3, n + 1):
                for start in range(0, end - 2):
                    if best[start] is not None and (word := self._word(text[start:end])):
                        best[end] = [*best[start], word]  # type: ignore[misc]
                        break
            if best[n] is not None and len(best[n]) >= 2:  # type: ignore[arg-type]
                return best[n]  # type: ignore[return-value]
        return []

    def concepts(self, slots: list[tuple[str, ...]], join_split: bool = False) -> set[str]:
        """The concepts the slots mention. ``join_split`` also rejoins a word cut in two by a space: only on the
        deobfuscated view, where "it's ex" is one token "its" and cannot read as "s" + "ex"."""
        found: set[str] = set()
        lex = self.lexicon
        i = 0
        while i < len(slots):
            # 1. phrases (longest first), benign ones included: they consume their words
            matched = 0
            for reading in slots[i]:
                for phrase in lex._first.get(reading, ()):
                    span = slots[i : i + len(phrase)]
                    if len(span) == len(phrase) and all(w in s for w, s in zip(phrase, span)):
                        if (concept := lex.phrases[phrase]) is not None:
                            found.add(concept)
                        matched = len(phrase)
                        break
                if matched:
                    break
            if matched:
                i += matched
                continue
            # 2. single words, then compounds, then a word split in two by a space ("na ked")
            step = 1
            for reading in slots[i]:
                if word := self._word(reading):
                    found.add(lex.words[word])
                    break
                if parts := self._compound(reading):
                    found.update(lex.words[p] for p in parts)
                    break
            else:
                if join_split and (word := self._split_word(slots[i], slots[i + 1] if i + 1 < len(slots) else ())):
                    found.add(lex.words[word])
                    step = 2
            i += step
        return found

    def _split_word(self, left: tuple[str, ...], right: tuple[str, ...]) -> str | None:
        """A lexicon word written as two neighbouring tokens ('na ked', 'k id', 'topl 355')."""
        for a, b in itertools.product(left[:1], right[:1]):  # first readings (digit-only tokens stay as written: leetspeak may span the cut)
            for joined in _leet_variants(a + b):
                for reading in (joined, *_squeezed(joined)):
                    if word := self._word(reading):
                        return word
        return None

    def _ages(self, folded: str) -> set[str]:
        numbers = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                   "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
                   "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20}
        for pattern in self.lexicon.age_patterns:
            for m in pattern.finditer(folded):
                age = int(m.group(1)) if m.group(1).isdigit() else numbers[m.group(1)]
                if age < ADULT_AGE:
                    return {"minor"}
        return set()

    # -- the check -----------------------------------------------------------------------------------------------------
    def check(self, text: str) -> str | None:
        folded = fold(text)
        views = [words_view(folded), deobfuscated_view(folded)]
        targets = [folded, *(" ".join(slot[0] for slot in view) for view in views)]
        for pattern, reason in self._patterns:
            if any(pattern.search(t) for t in targets):
                return reason
        if not self._concept_rules:
            return None
        ages = self._ages(folded)
        for view, join_split in zip(views, (False, True)):
            present = self.concepts(view, join_split) | ages
            for rule in self._concept_rules:
                if rule.all_of <= present:
                    return rule.reason
        return None


class OutputFilter:
    """What a rewritten prompt must pass before it is rendered: moderation plus injection markers (on the same
    normalised views, so zero-width characters or homoglyphs do not smuggle them through)."""

    def __init__(self, moderator: Moderator | None = None):
        self.moderator = moderator or KeywordModerator()
        self.injection = KeywordModerator(INJECTION_RULES)

    def check(self, text: str) -> str | None:
        return self.moderator.check(text) or self.injection.check(text)
