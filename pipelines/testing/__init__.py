"""Test doubles and data that the tests and the benchmarks share (as diffusers ships ``testing_utils``): shipped with
the package so a benchmark never imports ``tests/`` (``tests/test_benchmarks.py`` checks that none does).

    fakes.py        scripted fakes of the planner's ports: FakeRenderer (PNGs that say which prompt and seed drew
                    them), ScriptedLLM (decomposer, rewriter and critic by the request's JSON schema), ScriptedCritic,
                    CountingRewriter, DictSink, and the campaign-memory world (square_score, one_find_rewriter)
    synthetic.py    synthetic_store: a finished campaign of any size written directly as records
    safety_data.py  the moderation table, drawn test images, a C2PA test certificate chain

Nothing here is imported by the serving path; only tests, benchmarks and fake-engine presets name it.
"""
