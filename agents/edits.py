"""Phrase edits: the narrow rewriting task a small language model can do well.

A whole-prompt rewrite asks a small model for too much at once: with Qwen2.5-Coder-0.5B/1.5B as the world's rewriter,
rewrites lost objects of the intent, copied the worked examples' words ("a car beside a young tree"), pasted the
critic's feedback sentence or swapped the intent's colour for another. In ``edit`` mode
(``RewriterConfig.mode``) the planner's rewriter asks for less, and this module does the rest by rule:

1. **Targets** (:func:`edit_targets`): the intent's content phrases — runs of words between general English function
   words and medium words ("an image of ...") — each located in the current prompt by aligning the prompt with the
   intent (a phrase an earlier edit replaced is found under its replacement). With the critic's feedback, from round 1
   on only the phrases that the failed checks quote are targets (CRAFT's rule: edit where a check fails, keep the rest).
2. **Ask** (:func:`edit_request_data`, ``agents/prompts/edits.yaml``): for each target phrase, ``k`` plain wordings of
   the same thing, 1 to 6 words, with the wordings already tried for it and (with feedback) the critic's sentences.
3. **Check** each wording (:func:`refuse_option`): not empty or a sentence, no negation, every number of the phrase
   kept, no word of the worked examples that the intent lacks, not the phrase itself or a wording already tried.
4. **Apply** (:func:`apply_options`): prompt *i* replaces every target's span by that target's *i*-th usable wording
   and keeps every other word of the current prompt, so no object, count or relation of the intent can be lost.

**What it knows**: the intent's and the current prompt's words, the wordings tried before, the critic's failed checks
and feedback (with feedback on), :data:`FUNCTION_WORDS` (general English function words plus words that name a
picture's medium) and English number words. No synonym table, no spec, no vocabulary of the image model.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from agents.memory import WORD
from agents.messages import RewriteContext
from agents.safety import normalize

STOP_WORDS = frozenset(
    "a an the and or but of in on at to for from by with without as is are was were be been being it its this that "
    "these those there here some any each every both either neither no not one's than then so such very just also "
    "into onto over under up down out off near beside besides behind between among next toward towards upon within "
    "against along across around through atop inside outside above below beneath".split()
)
"""General English function words: never a phrase to reword or replace (a word list any English text tool has, not
the world's)."""
MEDIUM_WORDS = frozenset(
    "image images picture pictures photo photos photograph drawing drawings painting illustration sketch render "
    "rendering shot showing shows show depicting depicts featuring".split()
)
"""Words that say what kind of picture it is, not what is in it ("a drawing showing ..."): never a target."""
FUNCTION_WORDS = STOP_WORDS | MEDIUM_WORDS
NEGATIONS = frozenset("no not without never none nothing nor isn't aren't doesn't don't".split())
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty".split())}
MAX_OPTION_WORDS = 6
OPTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9' -]*$")
TOKEN = WORD  # a word as campaign memory reads one: lowercase letters and digits


def _key(word: str) -> str:
    """A prompt word as compared: lower case, punctuation around it dropped."""
    return "".join(TOKEN.findall(word.lower()))


def numbers(text: str) -> set[int]:
    """The numbers a text says, as digits or English number words."""
    out = set()
    for w in TOKEN.findall(text.lower()):
        if w.isdigit():
            out.add(int(w))
        elif w in NUMBER_WORDS:
            out.add(NUMBER_WORDS[w])
    return out


@dataclass
class Target:
    """One phrase of the intent to reword: its words in the intent, where it now stands in the current prompt
    (word indices ``start``..``end``), and the wordings already tried for it."""

    phrase: str
    start: int
    end: int
    current: str
    tried: list[str] = field(default_factory=list)


def content_runs(words: list[str]) -> list[tuple[int, int]]:
    """(start, end) word index ranges of the maximal runs of words that are not :data:`FUNCTION_WORDS`."""
    runs, start = [], None
    for i, w in enumerate(words + [""]):
        content = bool(_key(w)) and _key(w) not in FUNCTION_WORDS
        if content and start is None:
            start = i
        elif not content and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _aligned_span(intent_keys: list[str], prompt_keys: list[str], start: int, end: int) -> tuple[int, int] | None:
    """Where intent words ``start..end`` stand in the prompt: the same words where they are unchanged, the words that
    replaced them where an edit changed them; None where they were deleted."""
    lo = hi = None
    matcher = difflib.SequenceMatcher(a=intent_keys, b=prompt_keys, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if i2 <= start or i1 >= end or op == "insert":
            continue
        if op == "equal":
            a, b = j1 + max(start, i1) - i1, j1 + min(end, i2) - i1
        elif op == "replace":
            a, b = j1, j2
        else:  # delete
            continue
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return (lo, hi) if lo is not None and hi > lo else None


def edit_targets(context: RewriteContext, use_feedback: bool) -> list[Target]:
    """The phrases to reword in the current prompt (see the module docstring), in prompt order."""
    intent_words = context.intent.text.split()
    intent_keys = [_key(w) for w in intent_words]
    current_words = context.current_prompt.split()
    current_keys = [_key(w) for w in current_words]
    runs = content_runs(intent_words)
    if use_feedback and context.failed_checks:
        failed = {w for q in context.failed_checks for w in TOKEN.findall(q.lower())}
        quoted = [run for run in runs if failed & set(intent_keys[run[0]:run[1]])]
        runs = quoted or runs
    tried_prompts = [p.split() for p in context.tried]
    targets = []
    for start, end in runs:
        span = _aligned_span(intent_keys, current_keys, start, end)
        if span is None:
            continue
        phrase = " ".join(intent_words[start:end])
        tried = []
        for words in tried_prompts:  # what each earlier prompt put where this phrase stands
            other = _aligned_span(intent_keys, [_key(w) for w in words], start, end)
            if other is not None:
                tried.append(" ".join(words[other[0]:other[1]]))
        current = " ".join(current_words[span[0]:span[1]])
        tried = [t for t in dict.fromkeys(tried) if normalize(t) not in (normalize(phrase), normalize(current))]
        targets.append(Target(phrase=phrase, start=span[0], end=span[1], current=current, tried=tried))
    return sorted(targets, key=lambda t: t.start)


def edit_request_data(context: RewriteContext, targets: list[Target], use_feedback: bool) -> dict:
    """The JSON the model sees inside ``<user_data>`` (user text only ever as data)."""
    data: dict = {"prompt": context.current_prompt, "phrases": []}
    for t in targets:
        entry: dict = {"phrase": t.phrase}
        if normalize(t.current) != normalize(t.phrase):
            entry["now"] = t.current
        if t.tried:
            entry["already_tried"] = t.tried[-8:]
        data["phrases"].append(entry)
    if use_feedback and context.parent is not None and context.parent.feedback:
        data["feedback"] = context.parent.feedback[:4]
    return data


def edit_schema(n_phrases: int, k: int) -> dict:
    """``{"edits": [{"phrase": str, "options": [k str]}, ...]}``, one entry per phrase: bounded, parseable."""
    return {
        "type": "object",
        "properties": {
            "edits": {
                "type": "array",
                "minItems": n_phrases,
                "maxItems": n_phrases,
                "items": {
                    "type": "object",
                    "properties": {
                        "phrase": {"type": "string", "minLength": 1, "maxLength": 80},
                        "options": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1, "maxLength": 60},
                            "minItems": k,
                            "maxItems": k,
                        },
                    },
                    "required": ["phrase", "options"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["edits"],
        "additionalProperties": False,
    }


def refuse_option(option: str, target: Target, intent_text: str, example_words: set[str]) -> str | None:
    """Why a wording cannot replace ``target`` (None: usable)."""
    option = " ".join(option.split())
    words = TOKEN.findall(option.lower())
    if not words or not OPTION.match(option):
        return "not a plain phrase"
    if len(option.split()) > MAX_OPTION_WORDS:
        return f"longer than {MAX_OPTION_WORDS} words"
    if NEGATIONS & set(words):
        return "a negation"
    if numbers(target.phrase) - numbers(option):
        return "drops a number of the phrase"
    copied = (set(words) & example_words) - set(TOKEN.findall(intent_text.lower()))
    if copied:
        return f"copies the worked example ({', '.join(sorted(copied))})"
    if normalize(option) in {normalize(t) for t in [target.phrase, target.current, *target.tried]}:
        return "already tried"
    return None


def apply_options(current_prompt: str, targets: list[Target], options: list[list[str]], k: int) -> list[str]:
    """Up to ``k`` prompts: prompt i puts every target's i-th option (its last one when it has fewer; its current
    words when it has none) in place of the target's span and keeps every other word."""
    words = current_prompt.split()
    out: list[str] = []
    for i in range(k):
        new = list(words)
        changed = False
        for t, opts in sorted(zip(targets, options), key=lambda x: -x[0].start):
            if opts:
                new[t.start:t.end] = opts[min(i, len(opts) - 1)].split()
                changed = True
        prompt = " ".join(new)
        if changed and prompt not in out:
            out.append(prompt)
    return out
