"""A rewriter without a language model: try the image model's own words in place of the intent's unusual ones.

:class:`VocabularyExplorer` proposes prompts that each replace one word of the current prompt by one entry of the
image model's public vocabulary (``RewriterConfig.model_vocabulary``: what the model card says it was trained on, the
same list for every intent). It replaces only words that appear in the critic's failed checks when there are any (the critic quotes the
intent's own words) and never proposes a prompt the intent has already tried, so within an intent it works through
the vocabulary without repeating itself. It is blind: it does not know which vocabulary entry means what, and most of
its proposals are wrong. Alone it is a cheap lexical search; with campaign memory (``agents.memory``) an edit it
finds on one intent ("disc" -> "circle" raised the score) is offered directly to every later intent that says "disc".

With memory, it also reads the campaign's *unhelpful* edits of the current prompt (``RewriteContext.unhelpful_edits``:
replacements other intents tried without a win) and tries those last, so the campaign as a whole works through the
vocabulary instead of each intent drawing blindly.

**What it knows**: the current prompt, the intent's tried prompts, the words of the critic's failed checks, the model's
public vocabulary, :data:`agents.edits.STOP_WORDS` (general English function words) and, with memory, this campaign's unhelpful
edits. No synonym table, no spec, no model call.
"""

from __future__ import annotations

import random
import re

from agents.config import RewriterConfig
from agents.edits import STOP_WORDS
from agents.messages import RewriteContext, RewriteReply
from agents.rewriter import clean_prompt
from agents.safety import normalize

WORD = re.compile(r"[A-Za-z]+")


class VocabularyExplorer:
    """Replaces one word at a time by one of the image model's vocabulary entries (see the module docstring)."""

    def __init__(self, vocabulary: list[str], *, keep_vocabulary_words: bool = True):
        """``keep_vocabulary_words``: never replace a word that is already a vocabulary entry — right for a short
        list of words the model draws well (a model card's), wrong for a tokenizer's vocabulary, which has nearly every
        word: pass False there."""
        if not vocabulary:
            raise ValueError("the vocabulary explorer needs the image model's vocabulary "
                             "(RewriterConfig.model_vocabulary); it is empty")
        self.vocabulary = list(dict.fromkeys(v.lower() for v in vocabulary))
        self.known = {w for v in self.vocabulary for w in v.split()} if keep_vocabulary_words else set()

    knows = ("no language model: the image model's public vocabulary (one fixed list), general English stop words, "
             "the words of the critic's failed checks")

    def targets(self, context: RewriteContext) -> list[str]:
        """Words of the current prompt worth replacing (in prompt order): not a stop word, not already a vocabulary
        word (unless told otherwise); only those the failed checks mention, when any does."""
        words = list(dict.fromkeys(w.lower() for w in WORD.findall(context.current_prompt)))
        words = [w for w in words if w not in STOP_WORDS and w not in self.known]
        failed = {w.lower() for q in context.failed_checks for w in WORD.findall(q)}
        return [w for w in words if w in failed] or words

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        rng = random.Random(seed)
        tried = {normalize(p) for p in context.tried} | {normalize(context.current_prompt)}
        # campaign memory (when on): edits other intents tried without a win go last, the least tried of them first
        unhelpful = {(h.replace, h.by): h.tries for h in context.unhelpful_edits}
        queues = []
        for word in self.targets(context):
            options = self.vocabulary[:]
            rng.shuffle(options)
            options.sort(key=lambda v: unhelpful.get((word, v), 0))  # stable: the shuffle orders the untried
            pattern = re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", re.IGNORECASE)
            queues.append([clean_prompt(pattern.sub(v, context.current_prompt, count=1)) for v in options])
        out: list[str] = []
        while len(out) < context.k and any(queues):  # one option of each target in turn
            for queue in queues:
                while queue and len(out) < context.k:
                    prompt = queue.pop(0)
                    if normalize(prompt) not in tried:
                        tried.add(normalize(prompt))
                        out.append(prompt)
                        break
        if not out:
            return RewriteReply(error="no word left to replace by the model's vocabulary")
        return RewriteReply(prompts=out)


def make_explorer(llm, config: RewriterConfig) -> VocabularyExplorer:
    """Factory for a campaign's ``rewriter`` kind (``agents.explorer:make_explorer``): no language model used."""
    return VocabularyExplorer(config.model_vocabulary)
