"""Rewriter agent: proposes new prompts for a branch from the intent, the branch and the history of attempts."""

from __future__ import annotations

import unicodedata

from agents import prompts
from agents.config import RewriterConfig
from agents.messages import Candidate, ChatMessage, ChatRequest, ChatResult, Intent, Proposal
from agents.ports import LanguageModel
from agents.safety import OutputFilter, normalize
from agents.schemas import string_list_schema


FEEDBACK_CHARS = 200
"""Critic feedback shown per attempt is cut to this length, which bounds the rewriter's prompt."""


def proposal_schema(k: int, max_chars: int) -> dict:
    """JSON schema of a proposal: exactly ``k`` non-empty strings of bounded length."""
    return string_list_schema("prompts", k, k, max_chars)


def clean_prompt(text: str) -> str:
    """Drop control characters and collapse whitespace (keeps case: prompts are case-sensitive for some encoders)."""
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch == " ")
    return " ".join(text.split())


class Rewriter:
    """Turns (intent, parent, history) into a chat request and validates what comes back."""

    def __init__(self, llm: LanguageModel, config: RewriterConfig | None = None, output_filter: OutputFilter | None = None):
        self.llm = llm
        self.config = config or RewriterConfig()
        self.output_filter = output_filter or OutputFilter()

    def build_request(
        self,
        intent: Intent,
        parent: Candidate | None,
        history: list[Candidate],
        k: int,
        *,
        request_id: str,
        seed: int,
        temperature: float,
    ) -> ChatRequest:
        """The chat request for ``k`` proposals. ``history`` is shown best first (DSPy COPRO's ordering)."""
        scored = sorted((c for c in history if c.score is not None), key=lambda c: -c.score)[: self.config.history_size]
        data = {
            "intent": intent.text,
            "current_prompt": parent.prompt if parent else intent.text,
            "current_feedback": parent.critique.feedback[:FEEDBACK_CHARS] if parent and parent.critique else None,
            "earlier_attempts_best_first": [
                {
                    "prompt": c.prompt,
                    "score": round(c.score, 3),
                    "feedback": c.critique.feedback[:FEEDBACK_CHARS] if c.critique else "",
                }
                for c in scored
            ],
        }
        if intent.negative_prompt:
            data["avoid"] = intent.negative_prompt
        max_chars = self.config.max_prompt_chars
        return ChatRequest(
            request_id=request_id,
            purpose="rewrite",
            messages=[
                ChatMessage(role="system", content=prompts.render("rewriter", "system", k=k, max_chars=max_chars)),
                ChatMessage(role="user", content=prompts.render("rewriter", "user", k=k, data=data)),
            ],
            json_schema=proposal_schema(k, max_chars),
            max_tokens=self.config.max_tokens,
            temperature=temperature,
            seed=seed,
        )

    def validate(self, raw: list, parent_id: str | None, seen: set[str]) -> Proposal:
        """Keep non-empty, not over-long, allowed, new prompts; record every dropped one with its reason.
        ``seen`` holds normalized prompts already tried for this intent and is updated in place."""
        kept: list[str] = []
        dropped: list[tuple[str, str]] = []
        for item in raw:
            if not isinstance(item, str):
                dropped.append((repr(item)[:200], "not a string"))
                continue
            prompt = clean_prompt(item)
            if not prompt:
                dropped.append((item[:200], "empty"))
            elif len(prompt) > self.config.max_prompt_chars:
                dropped.append((prompt[:200], f"longer than {self.config.max_prompt_chars} characters"))
            elif normalize(prompt) in seen:
                dropped.append((prompt, "duplicate"))
            elif reason := self.output_filter.check(prompt):
                dropped.append((prompt, f"blocked: {reason}"))
            else:
                seen.add(normalize(prompt))
                kept.append(prompt)
        return Proposal(parent_id=parent_id, prompts=kept, dropped=dropped)

    async def propose(
        self,
        intent: Intent,
        parent: Candidate | None,
        history: list[Candidate],
        k: int,
        seen: set[str],
        *,
        request_id: str,
        seed: int,
        temperature: float,
    ) -> tuple[Proposal, ChatResult]:
        request = self.build_request(
            intent, parent, history, k, request_id=request_id, seed=seed, temperature=temperature
        )
        result = await self.llm.chat(request)
        parent_id = parent.id if parent else None
        if result.error:
            return Proposal(parent_id=parent_id, prompts=[], error=result.error), result
        if result.parse_error or not isinstance(result.parsed, dict) or not isinstance(result.parsed.get("prompts"), list):
            error = result.parse_error or f"reply has no 'prompts' list: {result.text[:200]!r}"
            return Proposal(parent_id=parent_id, prompts=[], error=error), result
        proposal = self.validate(result.parsed["prompts"], parent_id, seen)
        if not proposal.prompts:
            proposal.error = "no usable rewrite (all empty, too long, duplicate or blocked)"
        return proposal, result
