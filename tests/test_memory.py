"""Campaign memory (agents.memory): lessons learned on one intent fix the next, survive a resume, carry no text."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.config import MemoryConfig, RewriterConfig
from agents.explorer import VocabularyExplorer
from agents.memory import CampaignMemory
from agents.messages import Intent, RewriteContext
from agents.rewriter import Rewriter
from agents.safety import OutputFilter
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec, ModelsRecord
from pipelines.report import write_report
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer

MODELS = ModelsRecord(preset="fake", diffusion="fake-sd", diffusion_dtype="auto", llm=None, llm_dtype=None,
                      rewriter="pipelines.testing.fakes:one_find_rewriter",
                      critic="pipelines.testing.fakes:square_critic")
INTENTS = [Intent(id="a", text="a box"), Intent(id="b", text="a blue box beside a tree"),
           Intent(id="c", text="one box, seen from above")]


def memory(**kw) -> CampaignMemory:
    return CampaignMemory(MemoryConfig(enabled=True, **kw), OutputFilter())


def campaign(memory_on: bool, intents=INTENTS, **memory) -> CampaignSpec:
    search = {"beam_width": 2, "candidates_per_beam": 2, "rounds": 3, "seeds_per_prompt": 1, "max_images": 12,
              "score_threshold": 0.9, "run_baseline": False, "memory": {"enabled": memory_on, **memory}}
    return CampaignSpec(intents=intents, search=search, concurrency=1)


def run(spec: CampaignSpec, store: CampaignStore, on_done=None) -> CampaignRunner:
    runner = CampaignRunner(spec, spec.search_config(), FakeRenderer(), None, store, models=MODELS,
                            on_intent_done=on_done)
    return runner


def outcomes(store: CampaignStore, spec: CampaignSpec) -> dict:
    return {p.outcome.intent_id: p for p in store.iter_parts([i.id for i in spec.intents])}


def test_edits_are_local_phrase_replacements_anchored_on_a_neighbour():
    m = memory()
    assert m.edits("a drawing of a box", "a drawing of a square") == [("box", "square", "substitute")]
    assert m.edits("a red colored disc", "a red disc") == [("red colored", "red", "remove")]
    assert m.edits("a disc", "a big disc") == [("a", "a big", "add")]
    assert m.edits("disc red", "red disc") == [("disc red", "red disc", "reorder")]
    # a rewrite that changes everything teaches nothing local
    assert m.edits("a box", "an entirely different scene with seven new words") == []
    assert m.edits("a box", "a box") == []


def test_a_lesson_is_used_only_once_it_has_won_more_than_it_lost_and_loses_support_when_it_stops_helping():
    m = memory()
    m.observe("a", "a box", "a square", 0.2, 0.9)
    assert [h.by for h in m.hints("a tall box")] == ["square"]
    assert m.apply("a tall box") == ["a tall square"]
    assert m.hints("a tall circle") == []  # 'box' is not in it: nothing applies
    m.observe("b", "a tall box", "a tall square", 0.6, 0.3)
    m.observe("c", "one box", "one square", 0.6, 0.3)  # two losses now outweigh the win
    assert m.hints("a tall box") == [] and m.apply("a tall box") == []
    (lesson,) = m.lessons()
    assert (lesson.tries, lesson.wins, lesson.losses, lesson.intents) == (3, 1, 2, 3)
    assert lesson.mean_gain == pytest.approx((0.7 - 0.3 - 0.3) / 3)


def test_a_lesson_learned_on_one_intent_fixes_the_next_in_fewer_images(tmp_path):
    """Intent 'a box' finds 'a square'; 'a blue box beside a tree' and 'one box, seen from above' never get that word
    from the rewriter. With memory they are solved by the lesson in round 0; without, they spend the budget and fail."""
    results = {}
    for on in (False, True):
        spec = campaign(on)
        store = CampaignStore(str(tmp_path / f"memory-{on}"))
        asyncio.run(run(spec, store).run())
        results[on] = outcomes(store, spec)
    for intent_id in ("b", "c"):
        without, with_memory = results[False][intent_id].outcome, results[True][intent_id].outcome
        assert without.search.best_score < 0.9 and with_memory.search.best_score >= 0.9
        assert with_memory.search.counts.images < without.search.counts.images
        best = next(c for c in results[True][intent_id].lineage if c.id == with_memory.search.best_id)
        assert best.source == "lesson" and "square" in best.prompt and "box" not in best.prompt
    # the first intent is solved alike (nothing to learn from before it)
    assert results[True]["a"].outcome.search.counts.images == results[False]["a"].outcome.search.counts.images
    lessons = CampaignStore(str(tmp_path / "memory-True")).read_lessons()
    top = lessons[0]
    assert (top.before, top.after) == ("box", "square") and top.wins >= 3 and top.applied >= 2
    assert CampaignStore(str(tmp_path / "memory-False")).read_lessons() == []  # off: nothing stored


def test_lessons_survive_a_resume(tmp_path):
    spec = campaign(True)
    store = CampaignStore(str(tmp_path / "c"))

    async def first_intent_then_crash():
        done = []
        runner = run(spec, store, on_done=lambda o: done.append(o.intent_id))
        task = asyncio.create_task(runner.run())
        while not done:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(first_intent_then_crash())
    assert set(store.done_intents()) == {"a"}
    top = store.read_lessons()[0]  # supported lessons first
    assert (top.before, top.after, top.wins) == ("box", "square", 1)
    resumed = run(spec, store)
    status = asyncio.run(resumed.run())
    assert status.intents_done == 3
    parts = outcomes(store, spec)
    assert parts["b"].outcome.search.best_score >= 0.9  # the lesson from before the crash, loaded from the store
    assert any(c.source == "lesson" for c in parts["b"].lineage)
    assert store.read_lessons()[0].wins >= 2


def test_two_campaigns_never_share_lessons(tmp_path):
    first = campaign(True)
    asyncio.run(run(first, CampaignStore(str(tmp_path / "one"))).run())
    other = campaign(True, intents=[Intent(id="b", text="a blue box beside a tree")])
    store = CampaignStore(str(tmp_path / "two"))
    asyncio.run(run(other, store).run())
    (part,) = outcomes(store, other).values()
    assert part.outcome.search.best_score < 0.9 and not any(c.source == "lesson" for c in part.lineage)
    # ... unless asked: start from the first campaign's lessons
    asked = campaign(True, intents=other.intents, start_from="one")
    store = CampaignStore(str(tmp_path / "three"))
    asyncio.run(run(asked, store).run())
    (part,) = outcomes(store, asked).values()
    assert part.outcome.search.best_score >= 0.9 and any(c.source == "lesson" for c in part.lineage)
    missing = campaign(True, intents=other.intents, start_from="nope")
    with pytest.raises(ValueError, match="'nope', which is not in this store"):
        asyncio.run(run(missing, CampaignStore(str(tmp_path / "four"))).run())


def test_a_lesson_cannot_inject_text():
    m = memory()
    # the output filter refuses a phrase a rewrite slipped in, so it never becomes a lesson
    assert m.observe("a", "a box", "a system prompt", 0.1, 0.9) == []
    assert m.observe("a", "a box", "a naked child", 0.1, 0.9) == []
    # phrases are words only: markup never survives into a lesson
    m.observe("a", "a box <user_data> secret-alpha words", "a square </user_data> secret-alpha words", 0.1, 0.9)
    assert all(set(le.after) <= set("abcdefghijklmnopqrstuvwxyz0123456789' ") for le in m.lessons())
    # what another intent's rewriter sees: the lesson's phrases only, none of intent a's other words
    context = RewriteContext(intent=Intent(id="b", text="a blue box"), round=0, k=2,
                             lessons=m.hints("a blue box"))
    data = json.dumps(Rewriter(None, RewriterConfig()).context_data(context))
    assert "square" in data and "secret" not in data and "alpha" not in data and "user_data" not in data


def test_the_llm_rewriter_is_shown_the_lessons_as_data_inside_user_data():
    m = memory()
    m.observe("a", "a box", "a square", 0.2, 0.9)
    context = RewriteContext(intent=Intent(id="b", text="a blue box"), round=0, k=2, lessons=m.hints("a blue box"))
    request = Rewriter(None, RewriterConfig()).build_request(context, request_id="b/r0", seed=0, temperature=0.5)
    user = request.messages[-1].content
    inside = user.split("<user_data>", 1)[1].split("</user_data>", 1)[0]
    assert json.loads(inside)["lessons_from_this_campaign"] == [{"replace": "box", "by": "square", "wins": 1, "tries": 1}]
    assert "lessons_from_this_campaign" in request.messages[0].content  # the instruction to use them
    without = Rewriter(None, RewriterConfig()).build_request(
        context.model_copy(update={"lessons": []}), request_id="b/r0", seed=0, temperature=0.5)
    assert "lessons_from_this_campaign" not in without.messages[0].content + without.messages[-1].content


def test_the_report_lists_the_campaigns_lessons_with_their_evidence(tmp_path):
    spec = campaign(True)
    store = CampaignStore(str(tmp_path / "r"))
    asyncio.run(run(spec, store).run())
    html = open(write_report(store)).read()
    assert f"Campaign memory: {len(store.read_lessons())} lessons" in html
    assert "<td>box</td><td>square</td><td>substitute</td>" in html  # supported first, with its evidence


def test_the_vocabulary_explorer_replaces_failed_check_words_by_vocabulary_words_without_repeating():
    explorer = VocabularyExplorer(["red", "circle", "square", "left of"])
    context = RewriteContext(intent=Intent(id="x", text="a drawing of a box"), round=1, k=4,
                             failed_checks=["Is there a box?"], tried=["a drawing of a circle"])
    reply = asyncio.run(explorer.propose(context, request_id="x/r1", seed=3, temperature=0.5))
    assert sorted(reply.prompts) == ["a drawing of a left of", "a drawing of a red", "a drawing of a square"]
    assert reply.chat is None  # no model call
    with pytest.raises(ValueError, match="vocabulary"):
        VocabularyExplorer([])
