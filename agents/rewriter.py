"""The LLM rewriter: renders the planner's :class:`RewriteContext` into a chat request and parses the proposals.

What it knows: the intent's text, the critic's checks and feedback (unless ``RewriterConfig.use_feedback`` is off),
the branch's earlier prompts with their scores, and — only when the operator sets ``RewriterConfig.model_vocabulary``
— the image model's public vocabulary, one fixed list for every intent, and — only with campaign memory on — the
campaign's lessons that apply to the prompt (phrase substitutions that raised other intents' critic scores,
``agents.memory``). Nothing else: no table from the intent's words to the model's, no spec.

In ``edit`` mode (``RewriterConfig.mode``) the model is asked only for plain wordings of the intent's phrases and
:mod:`agents.edits` builds the prompts (every other word kept); it falls back to a whole rewrite where no phrase of
the intent can be found in the current prompt.

It is one implementation of :class:`agents.ports.PromptRewriter`; the planner checks what any rewriter returns
(length in renderer tokens, duplicates, output filter), so this class only parses and applies its own character cap.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from agents import edits, prompts
from agents.config import RewriterConfig
from agents.messages import ChatMessage, ChatRequest, RewriteContext, RewriteReply
from agents.ports import LanguageModel
from agents.schemas import string_list_schema


def proposal_schema(k: int, max_chars: int) -> dict:
    """JSON schema of a proposal: exactly ``k`` non-empty strings of bounded length."""
    return string_list_schema("prompts", k, k, max_chars)


def clean_prompt(text: str) -> str:
    """Drop control characters and collapse whitespace (keeps case: prompts are case-sensitive for some encoders)."""
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch == " ")
    return " ".join(text.split())


def approx_tokens(text: str) -> int:
    """Rough LLM token count (characters / 4): the rewriter cannot see the serving model's tokenizer."""
    return len(text) // 4 + 1


def words_for_tokens(max_prompt_tokens: int) -> int:
    """About how many English words fit in a text encoder's token limit (start/end tokens and punctuation aside)."""
    return max(1, int((max_prompt_tokens - 2) * 0.75))


class Rewriter:
    """Turns a :class:`RewriteContext` into a chat request for ``context.k`` prompts and parses the reply."""

    def __init__(self, llm: LanguageModel, config: RewriterConfig | None = None):
        self.llm = llm
        self.config = config or RewriterConfig()

    @property
    def knows(self) -> str:
        """What this rewriter reads, in one line (reports and benchmark tables say it beside its prompts)."""
        parts = ["the intent's words"] if self.config.mode == "rewrite" else [
            "the intent's words (it rewords one phrase at a time; every other word is kept by rule)"]
        if self.config.use_feedback:
            parts.append("the critic's checks and feedback")
        parts.append("its branch's earlier prompts and their scores")
        if self.config.model_vocabulary:
            parts.append("the image model's public vocabulary (one fixed list)")
        return "a language model reading " + ", ".join(parts)

    def context_data(self, context: RewriteContext) -> dict[str, Any]:
        """The JSON shown to the model, trimmed to ``context_tokens``: the oldest tried prompts go first, then the
        weakest of the best prompts, then the oldest ancestors (the parent and the top prompt always stay)."""
        tried = list(context.tried)
        best = [{"prompt": p.prompt, "score": round(p.score, 3), "seeds": p.seeds}
                for p in context.best_prompts[: self.config.history_size]]
        branch = [
            {
                "prompt": step.prompt,
                "round": step.round,
                "score": None if step.score is None else round(step.score, 3),
                "seeds": step.seeds,
                "checks_passed": {q: round(rate, 2) for q, rate in step.check_pass_rate.items()},
                "feedback": step.feedback,
            }
            for step in context.ancestry
        ]

        if not self.config.use_feedback:  # the ablation: no critic words, scores only
            for step in branch:
                del step["checks_passed"], step["feedback"]

        def data() -> dict[str, Any]:
            d: dict[str, Any] = {"intent": context.intent.text}
            if context.intent.negative_prompt:
                d["avoid"] = context.intent.negative_prompt
            if self.config.use_feedback:
                d["checks"] = context.checks
            d["current_prompt"] = context.current_prompt
            if self.config.use_feedback:
                d["failed_checks"] = context.failed_checks
            d["branch_oldest_first"] = branch
            d["best_prompts_so_far"] = best
            d["already_tried"] = tried
            if context.lessons:  # campaign memory: edits that raised other intents' scores (phrases only)
                d["lessons_from_this_campaign"] = [
                    {"replace": h.replace, "by": h.by, "wins": h.wins, "tries": h.tries} for h in context.lessons
                ]
            return d

        while approx_tokens(self._user_text(context, data())) > self.config.context_tokens:
            if tried:
                tried.pop(0)
            elif len(best) > 1:
                best.pop()
            elif len(branch) > 1:
                branch.pop(0)
            else:
                break  # what is left is the intent, the parent and the best prompt: send it as it is
        return data()

    @staticmethod
    def _user_text(context: RewriteContext, data: dict[str, Any]) -> str:
        return prompts.render("rewriter", "user", k=context.k, data=data)

    @staticmethod
    def few_shot(k: int) -> list[ChatMessage]:
        """The prompt file's worked examples as earlier user/assistant turns (small models follow a shown answer
        better than a described one), each answer cut or kept to ``k`` prompts so it matches what is asked."""
        turns = []
        for example in prompts.data("rewriter", "few_shot"):
            answer = {"prompts": example["prompts"][:k]}
            turns.append(ChatMessage(role="user", content=prompts.render("rewriter", "user", data=example["data"])))
            turns.append(ChatMessage(role="assistant", content=json.dumps(answer)))
        return turns

    def build_request(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> ChatRequest:
        limit = context.max_prompt_tokens
        system = prompts.render(
            "rewriter", "system", k=context.k, max_chars=self.config.max_prompt_chars,
            max_prompt_tokens=limit, max_words=words_for_tokens(limit) if limit else None,
            vocabulary=", ".join(self.config.model_vocabulary), feedback=self.config.use_feedback,
            lessons=bool(context.lessons),
        )
        return ChatRequest(
            request_id=request_id,
            purpose="rewrite",
            messages=[
                ChatMessage(role="system", content=system),
                *self.few_shot(context.k),
                ChatMessage(role="user", content=self._user_text(context, self.context_data(context))),
            ],
            json_schema=proposal_schema(context.k, self.config.max_prompt_chars),
            max_tokens=self.config.max_tokens,
            temperature=temperature,
            seed=seed,
        )

    def build_edit_request(self, context: RewriteContext, targets: list[edits.Target], *, request_id: str, seed: int,
                           temperature: float) -> ChatRequest:
        """Edit mode: ask for ``k`` plain wordings of each target phrase (``agents/prompts/edits.yaml``)."""
        feedback = self.config.use_feedback
        turns = []
        for example in prompts.data("edits", "few_shot"):
            answer = {"edits": [{"phrase": e["phrase"], "options": e["options"][:context.k]} for e in example["edits"]]}
            turns.append(ChatMessage(role="user", content=prompts.render("edits", "user", data=example["data"])))
            turns.append(ChatMessage(role="assistant", content=json.dumps(answer)))
        data = edits.edit_request_data(context, targets, feedback)
        return ChatRequest(
            request_id=request_id,
            purpose="rewrite",
            messages=[
                ChatMessage(role="system", content=prompts.render("edits", "system", k=context.k, feedback=feedback)),
                *turns,
                ChatMessage(role="user", content=prompts.render("edits", "user", data=data)),
            ],
            json_schema=edits.edit_schema(len(targets), context.k),
            max_tokens=self.config.max_tokens,
            temperature=temperature,
            seed=seed,
        )

    @staticmethod
    def example_words() -> set[str]:
        """Every word of the edit prompt's worked example: a wording that brings one in copied it."""
        text = json.dumps(prompts.data("edits", "few_shot"))
        return set(edits.TOKEN.findall(text.lower())) - edits.FUNCTION_WORDS - {"phrase", "phrases", "prompt",
                                                                                "options", "edits", "data"}

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        if self.config.mode == "edit":
            targets = edits.edit_targets(context, self.config.use_feedback)
            if targets:
                return await self._propose_edits(context, targets, request_id=request_id, seed=seed,
                                                 temperature=temperature)
        return await self._propose_rewrites(context, request_id=request_id, seed=seed, temperature=temperature)

    async def _propose_edits(self, context: RewriteContext, targets: list[edits.Target], *, request_id: str,
                             seed: int, temperature: float) -> RewriteReply:
        request = self.build_edit_request(context, targets, request_id=request_id, seed=seed, temperature=temperature)
        result = await self.llm.chat(request)
        if result.error:
            return RewriteReply(error=result.error, chat=result)
        entries = result.parsed.get("edits") if isinstance(result.parsed, dict) else None
        if result.parse_error or not isinstance(entries, list):
            error = result.parse_error or f"reply has no 'edits' list: {result.text[:200]!r}"
            return RewriteReply(error=error, chat=result)
        example_words = self.example_words()
        options: list[list[str]] = []
        dropped: list[tuple[str, str]] = []
        for i, target in enumerate(targets):  # entries are matched to phrases by position (the schema fixes the count)
            entry = entries[i] if i < len(entries) and isinstance(entries[i], dict) else {}
            usable = []
            for option in entry.get("options") or []:
                option = clean_prompt(option) if isinstance(option, str) else ""
                reason = edits.refuse_option(option, target, context.intent.text, example_words)
                if reason:
                    dropped.append((f"{target.phrase} -> {option}"[:200], reason))
                elif option.lower() not in (u.lower() for u in usable):
                    usable.append(option)
            options.append(usable)
        made = edits.apply_options(context.current_prompt, targets, options, context.k)
        cap = self.config.max_prompt_chars
        kept = [p for p in made if len(p) <= cap]
        dropped += [(p[:200], f"longer than {cap} characters") for p in made if len(p) > cap]
        if not kept:
            return RewriteReply(error="no usable wording for any phrase", dropped=dropped, chat=result)
        return RewriteReply(prompts=kept, dropped=dropped, chat=result)

    async def _propose_rewrites(self, context: RewriteContext, *, request_id: str, seed: int,
                                temperature: float) -> RewriteReply:
        result = await self.llm.chat(self.build_request(context, request_id=request_id, seed=seed, temperature=temperature))
        if result.error:
            return RewriteReply(error=result.error, chat=result)
        if result.parse_error or not isinstance(result.parsed, dict) or not isinstance(result.parsed.get("prompts"), list):
            error = result.parse_error or f"reply has no 'prompts' list: {result.text[:200]!r}"
            return RewriteReply(error=error, chat=result)
        kept: list[str] = []
        dropped: list[tuple[str, str]] = []
        cap = self.config.max_prompt_chars
        for item in result.parsed["prompts"]:
            if isinstance(item, str) and len(clean_prompt(item)) > cap:
                dropped.append((clean_prompt(item)[:200], f"longer than {cap} characters"))
            else:
                kept.append(item)  # the planner checks the rest (type, emptiness, tokens, duplicates, filter)
        return RewriteReply(prompts=kept, dropped=dropped, chat=result)
