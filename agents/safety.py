"""Content safety: moderation of intents and an output filter on rewritten prompts.

The default :class:`KeywordModerator` is a deliberately small, transparent word-list filter: it blocks intents and
rewrites that ask for sexual content involving minors, non-consensual sexual content, or instructions for mass harm,
and prompts that carry obvious injection markers into the renderer. It is a floor, not a classifier: a production
deployment plugs a model-based moderator into the same :class:`Moderator` protocol.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol


class Moderator(Protocol):
    def check(self, text: str) -> str | None:
        """None if allowed, else the reason it is blocked."""
        ...


_MINOR = r"(child|children|kid|kids|minor|minors|underage|preteen|toddler|schoolgirl|schoolboy|\d{1,2}[- ]?year[- ]?old)"
_SEXUAL = r"(nude|naked|sexual|sex|porn|pornographic|explicit|nsfw|erotic|lingerie|topless)"

DEFAULT_RULES: list[tuple[str, str]] = [
    (rf"\b{_SEXUAL}\b.*\b{_MINOR}\b|\b{_MINOR}\b.*\b{_SEXUAL}\b", "sexual content involving minors"),
    (r"\b(rape|non[- ]?consensual|revenge porn)\b", "non-consensual sexual content"),
    (r"\b(how to (make|build) (a )?(bomb|explosive|nerve agent|bioweapon))\b", "instructions for mass harm"),
]

# Markers of text addressed to a model rather than describing a picture. Blocked in rewrites only: an intent that
# contains them is still rendered (it is data), but a rewrite that carries them on is a sign the rewriter was steered.
INJECTION_RULES: list[tuple[str, str]] = [
    (r"\b(ignore|disregard) (all |any )?(previous|prior|above) (instructions|prompts?)\b", "prompt-injection text"),
    (r"<\|im_(start|end)\|>|</?user_data>|\bsystem prompt\b", "chat-markup or injection text"),
]


def normalize(text: str) -> str:
    """Lowercase, NFKC, control characters removed, whitespace collapsed (for matching and de-duplication)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\t\n ")
    return re.sub(r"\s+", " ", text).strip().lower()


class KeywordModerator:
    """Regex rules over normalized text."""

    def __init__(self, rules: list[tuple[str, str]] | None = None):
        self.rules = [(re.compile(p, re.IGNORECASE | re.DOTALL), reason) for p, reason in (rules or DEFAULT_RULES)]

    def check(self, text: str) -> str | None:
        norm = normalize(text)
        for pattern, reason in self.rules:
            if pattern.search(norm):
                return reason
        return None


class OutputFilter:
    """What a rewritten prompt must pass before it is rendered: moderation plus injection markers."""

    def __init__(self, moderator: Moderator | None = None):
        self.moderator = moderator or KeywordModerator()
        self.injection = KeywordModerator(INJECTION_RULES)

    def check(self, text: str) -> str | None:
        return self.moderator.check(text) or self.injection.check(text)
