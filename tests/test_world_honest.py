"""Nothing a rewriter reads leaks the world's vocabulary (the honest world).

The world's benchmark measures whether a rewriter can say an intent in words the image model draws well. That is only
a measurement if the rewriter cannot read those words off the system: here every held-out and example intent goes
through the real planner with the real world critic (the judge on drawn images: right, wrong and blank ones, so every
kind of feedback is produced), and every text a rewriter receives — the ``RewriteContext`` it is handed and the chat
messages the LLM rewriter renders from it, with and without feedback — is checked: no word that the caption grammar
lists for a concept (a colour, shape, count or relation, any split) appears unless the intent's own text has it.
The one sanctioned exception is the operator's fixed model vocabulary (``RewriterConfig.model_vocabulary``), which must
be the same text for every intent.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from agents import edits
from agents.config import MemoryConfig, RewriterConfig, SearchConfig
from agents.explorer import VocabularyExplorer
from agents.memory import CampaignMemory
from agents.safety import OutputFilter
from agents.messages import Intent, RenderRequest, RenderResult, RewriteContext, RewriteReply
from agents.planner import BeamSearchPlanner
from agents.rewriter import Rewriter
from pipelines.world.critic import JudgeCritic
from pipelines.world.eval import load_heldout
from pipelines.world.grammar import COLOR_WORDS, COUNT_WORDS, RELATION_WORDS, SHAPE_WORDS
from pipelines.world.judge import spec_to_checks, spec_to_intent
from pipelines.world.model import ANSWER_WORDS, tokenizer_words
from pipelines.world.scenes import TAGS, SceneSpec, draw_specs, plural, sample_spec
from tests.test_world import _wrong

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_WORDS = {"a", "an", "the", "of", "to", "on", "than"}
"""Words of the grammar's concept tables that name no concept themselves ("to the left of", "a pair of")."""


def concept_words() -> set[str]:
    """Every word the grammar uses for a colour, shape, count or relation (all splits, plurals of nouns included)."""
    words: set[str] = set()
    for table in (COLOR_WORDS, SHAPE_WORDS, COUNT_WORDS, RELATION_WORDS):
        for options in table.values():
            for texts in options.values():
                for text in texts:
                    words |= set(text.split())
    words |= {plural(t.split()[-1]) for options in SHAPE_WORDS.values() for texts in options.values() for t in texts}
    return words - FUNCTION_WORDS


CONCEPT_WORDS = concept_words()


def leaks(text: str, intent_text: str) -> set[str]:
    """Concept words in ``text`` that the intent's own text does not have."""
    tokens = set(re.findall(r"[a-z]+|\d+", text.lower()))
    return (tokens & CONCEPT_WORDS) - set(re.findall(r"[a-z]+|\d+", intent_text.lower()))


def strings(value) -> list[str]:
    """Every string inside a JSON-like value (dict keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings(v)]
    return []


SUFFIXES = [", detailed", ", sharp focus", ", clean style", ", studio lighting", ", wide shot", ", close up",
            ", simple background", ", flat colours", ", minimal"]


class RecordingRewriter:
    """Records every context the planner hands a rewriter and the chat messages the LLM rewriter would send for it;
    proposes the parent prompt with style words that name no concept (so any concept word it is shown came from the
    system, not from an earlier proposal)."""

    def __init__(self):
        self.contexts: list[RewriteContext] = []

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        self.contexts.append(context)
        rng = random.Random(seed)
        base = context.intent.text
        return RewriteReply(prompts=[base + s for s in rng.sample(SUFFIXES, context.k)])


class DrawingRenderer:
    """Draws, for each request, a scene with one thing wrong (a colour, shape, count or the relation), a scene of
    another tag, nothing, or (one time in ten) the intent's own scene — seeded by the request — so the critic's every
    kind of answer and feedback occurs and searches run several rounds."""

    def __init__(self, specs: dict[str, SceneSpec]):
        self.specs = specs

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        drawn, blank = [], []
        for req in requests:
            spec = self.specs[req.request_id.split("/")[0]]
            rng = random.Random(req.request_id)
            kind = rng.random()
            drawn.append(spec if kind < 0.1 else _wrong(spec, rng) if kind < 0.6 else sample_spec(rng.choice(TAGS), rng))
            blank.append(kind > 0.9)
        images = draw_specs(drawn, seed=random.Random(requests[0].request_id).randrange(10_000))[0]
        out = []
        for req, image, empty in zip(requests, images, blank):
            if empty:
                image[:] = image[0, 0]
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            out.append(RenderResult(request_id=req.request_id, png=buf.getvalue(), seed=req.seed, model="drawn",
                                    width=64, height=64, steps=1, batch_size=len(requests), render_seconds=0.0))
        return out

    async def info(self):
        from agents.messages import RendererInfo

        return RendererInfo(model="drawn", max_prompt_tokens=None)

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        return [len(p.split()) for p in prompts]


async def keep_nothing(candidate, png: bytes) -> None:
    return None


def world_intents() -> list[tuple[Intent, SceneSpec]]:
    """Every held-out intent and every example intent, as the benchmark and the README's first command submit them."""
    rows = [(spec_to_intent(r["spec"], r["text"], r["id"]), SceneSpec.model_validate(r["spec"])) for r in load_heldout()]
    for line in (ROOT / "examples" / "world.jsonl").read_text().splitlines():
        intent = Intent.model_validate_json(line)
        assert intent.checks is None, f"{intent.id}: world example intents carry no structured checks"
        from pipelines.world.decompose import parse_intent

        rows.append((intent, parse_intent(intent.text).spec))
    return rows


def run_recorded(intents: list[tuple[Intent, SceneSpec]], memory: CampaignMemory | None = None,
                 results: list | None = None) -> list[RewriteContext]:
    """Every intent through the planner with the recording rewriter; with ``memory``, campaign memory on (lessons
    learned from earlier intents offered as hints and as lesson prompts). ``results`` collects the SearchResults."""
    rewriter = RecordingRewriter()
    renderer = DrawingRenderer({i.id: s for i, s in intents})
    config = SearchConfig(beam_width=2, candidates_per_beam=2, rounds=3, seeds_per_prompt=1, explore_seeds=1,
                          max_images=9, width=64, height=64, steps=1, run_baseline=False,
                          memory=MemoryConfig(enabled=memory is not None))
    planner = BeamSearchPlanner(renderer, rewriter, JudgeCritic(), config, image_sink=keep_nothing, memory=memory)

    async def all_intents():
        sem = asyncio.Semaphore(8)  # a campaign's concurrency: later intents see earlier intents' lessons

        async def one(intent):
            async with sem:
                result = await planner.run(intent)
                if results is not None:
                    results.append(result)

        await asyncio.gather(*(one(intent) for intent, _ in intents))

    asyncio.run(all_intents())
    return rewriter.contexts


@pytest.fixture(scope="module")
def recorded() -> list[RewriteContext]:
    return run_recorded(world_intents())


def texts_received(context: RewriteContext, config: RewriterConfig) -> list[str]:
    """What a rewriter receives: the context handed to any rewriter, and the LLM rewriter's rendered messages.

    The system message is the one text whose digits are exempt: it takes no intent data, only the config's numbers
    ("Propose exactly 3 prompts, each at most 300 characters"), so they are dropped from it before the check; its
    words are checked like every other text's."""
    rewriter = Rewriter(llm=None, config=config)
    targets = edits.edit_targets(context, config.use_feedback) if config.mode == "edit" else []
    if targets:  # edit mode asks about phrases; without any it falls back to the whole-rewrite request
        request = rewriter.build_edit_request(context, targets, request_id="r", seed=0, temperature=0.7)
    else:
        request = rewriter.build_request(context, request_id="r", seed=0, temperature=0.7)
    texts = strings(context.model_dump(mode="json"))
    for m in request.messages:  # system, the worked examples (user/assistant turns), the request
        if m.role == "system":
            texts.append(re.sub(r"\d+", " ", m.content))
        elif m.role == "user":
            texts += user_texts(m.content)
        else:
            texts += strings(json.loads(m.content))
    return texts


def user_texts(user: str) -> list[str]:
    """The LLM rewriter's user message as texts: the strings of its ``<user_data>`` JSON (numbers there are scores,
    rounds and seed counts, not words) and the instruction around it."""
    m = re.fullmatch(r"<user_data>(.*)</user_data>(.*)", user, re.S)
    assert m, user[:200]
    return [*strings(json.loads(m.group(1))), m.group(2)]


def test_every_world_intent_reached_the_rewriter_with_feedback(recorded):
    ids = {c.intent.id for c in recorded}
    assert len(ids) == len(world_intents())
    feedback = [f for c in recorded for s in c.ancestry for f in s.feedback]
    # every kind of note the critic writes occurs, so the leak check below covers them all
    for kind in ("no ", "too few", "too many", "not in the colour", "is not", "cannot tell"):
        assert any(kind in f for f in feedback), kind


@pytest.mark.parametrize("mode", ["rewrite", "edit"])
@pytest.mark.parametrize("use_feedback", [True, False])
def test_no_text_a_rewriter_receives_names_a_concept_the_intent_does_not(recorded, use_feedback, mode):
    config = RewriterConfig(use_feedback=use_feedback, mode=mode)
    found: dict[str, set[str]] = {}
    for context in recorded:
        for text in texts_received(context, config):
            if bad := leaks(text, context.intent.text):
                found.setdefault(context.intent.text, set()).update(bad)
    assert not found, dict(list(found.items())[:10])


def test_with_campaign_memory_only_the_campaigns_own_words_cross_intents():
    """Memory on: lessons (hints), unhelpful edits and the lesson-made prompts, through the whole-rewrite and the
    phrase-edit requests. Memory exists to carry a phrase from one intent to another, so a concept word may reach an
    intent that lacks it only inside a lesson's phrase, and every word of every lesson must come from the campaign's
    own prompts (its intents' texts and the rewriter's proposals), never from the system: here the recording rewriter
    adds only style words, so a lesson word from anywhere else would be a leak."""
    memory = CampaignMemory(MemoryConfig(enabled=True, min_wins=1, min_win_rate=0.0), OutputFilter())
    results: list = []
    intents = world_intents()
    contexts = run_recorded(intents, memory=memory, results=results)
    assert any(c.lessons for c in contexts) and any(c.unhelpful_edits for c in contexts)  # the paths ran
    lesson_prompts = [p for r in results for prop in r.proposals if prop.source == "lessons" for p in prop.prompts]
    assert lesson_prompts  # memory made prompts of its own

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z]+|\d+", text.lower()))

    campaign = {w for i, _ in intents for w in words(i.text)} | {w for c in contexts for p in c.tried
                                                                 for w in words(p) if p not in lesson_prompts}
    campaign |= {w for s in SUFFIXES for w in words(s)}
    lesson_words = {w for le in memory.lessons() for w in words(f"{le.before} {le.after}")}
    assert lesson_words and lesson_words <= campaign, lesson_words - campaign
    for config in (RewriterConfig(), RewriterConfig(mode="edit")):
        found = {c.intent.text: bad for c in contexts for t in texts_received(c, config)
                 if (bad := leaks(t, c.intent.text) - lesson_words)}
        assert not found, dict(list(found.items())[:10])


def test_the_explorer_reads_the_tokenizer_and_draws_blindly_from_it():
    """The explorer's vocabulary is what the model publishes (its tokenizer's ~32,000 words), and it draws from it
    blindly: concept words turn up in its proposals about as often as in the vocabulary, not first (with the judge's
    answer words as its vocabulary every proposal would name a concept)."""
    vocabulary = tokenizer_words()
    assert len(vocabulary) > 30_000 and set(ANSWER_WORDS) - {"left of", "right of"} <= set(vocabulary)
    explorer = VocabularyExplorer(vocabulary, keep_vocabulary_words=False)
    rows = load_heldout()[::8]
    new_words: list[str] = []
    for i, row in enumerate(rows):
        context = RewriteContext(intent=Intent(id=row["id"], text=row["text"]), round=0, k=3)
        reply = asyncio.run(explorer.propose(context, request_id="r", seed=i, temperature=1.0))
        for p in reply.prompts:
            new_words += sorted(set(re.findall(r"[a-z]+", p.lower())) - set(re.findall(r"[a-z]+", row["text"].lower())))
    share = sum(w in CONCEPT_WORDS for w in new_words) / len(new_words)
    base_rate = len(CONCEPT_WORDS & set(vocabulary)) / len(vocabulary)
    assert len(new_words) >= 60 and share < max(0.05, 10 * base_rate), (share, base_rate)


def test_the_model_vocabulary_is_one_fixed_text_and_the_only_exception(recorded):
    config = RewriterConfig(model_vocabulary=ANSWER_WORDS)
    systems = set()
    for context in recorded[::7]:
        request = Rewriter(llm=None, config=config).build_request(context, request_id="r", seed=0, temperature=0.7)
        system, user = request.messages[0].content, request.messages[-1].content
        systems.add(system)
        assert not any(leaks(t, context.intent.text) for t in user_texts(user))
        without = Rewriter(llm=None, config=RewriterConfig()).build_request(context, request_id="r", seed=0,
                                                                            temperature=0.7).messages[0].content
        assert not leaks(re.sub(r"\d+", " ", without), context.intent.text)
    assert len(systems) == 1 and all(word in next(iter(systems)) for word in ANSWER_WORDS)


def test_the_check_can_fail_structured_checks_in_training_words_leak():
    """The old world handed rewriters the judge's spec as checks: the same check reports it."""
    row = next(r for r in load_heldout() if r["tag"] == "color_attr")
    intent = spec_to_intent(row["spec"], row["text"], row["id"]).model_copy(
        update={"checks": spec_to_checks(row["spec"])})
    contexts = run_recorded([(intent, SceneSpec.model_validate(row["spec"]))])
    assert any(leaks(t, intent.text) for c in contexts for t in texts_received(c, RewriterConfig()))


def test_the_benchmark_intents_are_text_only():
    rows = [json.loads(line) for line in (ROOT / "examples" / "world.jsonl").read_text().splitlines()]
    assert rows and all(set(r) == {"id", "text"} for r in rows)
