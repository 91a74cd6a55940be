"""The benchmark scripts keep working: the GPU script at tiny size on CPU, the encoding and memory scripts small, the
busy-fraction script on the real Serve app and tiny vLLM (short)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks._util import RESULTS, add_record_options, report, sections

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 600) -> str:
    """Run a benchmark script; without ``--record`` it must leave benchmarks/RESULTS.md as it was."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = RESULTS.read_bytes()
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--record" in args or RESULTS.read_bytes() == before, f"{args} wrote RESULTS.md without --record"
    return proc.stdout


# ------------------------------------------------------------------------------------------------------------------
# RESULTS.md: one section per table, written only with --record (fast: no benchmark runs)
# ------------------------------------------------------------------------------------------------------------------


def test_the_record_flag_is_off_by_default_and_no_record_is_still_accepted():
    import argparse

    parser = argparse.ArgumentParser()
    add_record_options(parser)
    assert parser.parse_args([]).record is False
    assert parser.parse_args(["--record"]).record is True
    assert parser.parse_args(["--no-record"]).record is False


def test_a_recorded_table_replaces_the_section_with_its_heading(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nintro\n\n## Speed (CPU)\nold run\n\n| a |\n\n## Other\nkept\n\n"
                       "## Speed (CPU)\nan older duplicate\n")
    report("Speed (CPU)", ["path", "images/s"], [["engine", 1.5]], notes="the notes", record=True, results=results)
    report("New (CPU)", ["x"], [[1]], record=True, results=results)
    report("Not recorded", ["x"], [[1]], results=results)
    text = results.read_text()
    preamble, found = sections(text)
    assert preamble == "# Benchmark results\n\nintro\n\n"
    assert [h for h, _ in found] == ["Other", "Speed (CPU)", "New (CPU)"]
    speed = dict(found)["Speed (CPU)"]
    assert "old run" not in text and "older duplicate" not in text and "| engine | 1.500    |" in speed
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC · commit \S+ · .+ cores", speed.splitlines()[1])
    assert speed.rstrip().endswith("the notes") and dict(found)["Other"] == "## Other\nkept\n\n"
    assert "Not recorded" in capsys.readouterr().out  # printed, not written


def test_a_heading_inside_a_code_block_is_not_a_section():
    _, found = sections("## A\n```\n## not a heading\n```\n## B\n")
    assert [h for h, _ in found] == ["A", "B"]


def test_every_benchmark_script_records_only_with_the_record_flag():
    """Each script that reports through benchmarks/_util takes ``--record`` from add_record_options; none declares
    its own --no-record or appends to RESULTS.md itself."""
    offenders = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        if path.name == "_util.py":
            continue
        source = path.read_text()
        calls = {node.func.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name)}
        if calls & {"report", "record_section"} and "add_record_options" not in calls:
            offenders.append(f"{path.name}: reports without add_record_options")
        if '"--no-record"' in source or "RESULTS.open(" in source:
            offenders.append(f"{path.name}: its own --no-record or RESULTS.md write")
    assert offenders == []


def test_no_benchmark_imports_the_tests():
    """Benchmarks take their fakes, synthetic stores and safety data from :mod:`pipelines.testing`, never from
    ``tests/``: an ``import tests...`` anywhere in a script (also inside a function), or an import path string that
    names a module under tests (an engine or agent class handed to the Serve app)."""

    def names_tests(module: str | None) -> bool:
        return module is not None and (module == "tests" or module.startswith("tests."))

    offenders = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module] if node.level == 0 else []
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"\w+(\.\w+)+(:\w+)?", node.value):  # "package.module[:object]", not a path part
                modules = [node.value.split(":")[0]]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {m}" for m in modules if names_tests(m)]
    assert offenders == []


def test_results_md_has_one_stamped_section_per_heading():
    """The committed file: no heading twice, and every section says when, at which commit and on which machine."""
    _, found = sections(RESULTS.read_text())
    headings = [h for h, _ in found]
    assert len(found) >= 10 and sorted({h for h in headings if headings.count(h) > 1}) == []
    for heading, text in found:
        assert re.search(r"\d{4}-\d\d-\d\d", text) and re.search(r"commit [0-9a-f]{7}", text), heading
        assert "cores" in text, heading


@pytest.mark.slow
def test_gpu_script_runs_every_row_tiny_on_cpu(tmp_path):
    """benchmarks/gpu/run_all.py at test shapes: all three architectures through the same builders, every group;
    fp8 says why it cannot run on a CPU instead of failing."""
    out = _run("benchmarks.gpu.run_all", "--tiny", "--budget-s", "600", "--reps", "1", "--sdpa", "math",
               "--out", str(tmp_path / "table.md"))
    table = (tmp_path / "table.md").read_text()
    for arch in ("sd15", "sdxl", "flux"):
        assert f"| {arch} " in table
    assert "engine (defaults, encoder pool)" in table and "engine, encoding inside the call" in table
    assert "engine + compile='full'" in table and "engine + SDPA math" in table
    assert "not run: quantization='fp8' needs a CUDA GPU" in table
    assert "finished" in out and "SKIPPED" not in out


@pytest.mark.slow
def test_gpu_script_keeps_its_budget(tmp_path):
    """With too little time the script stops at the budget, says what it skipped or was running, and still writes
    the rows it measured."""
    t0 = time.monotonic()
    out = _run("benchmarks.gpu.run_all", "--tiny", "--budget-s", "12", "--reps", "1",
               "--out", str(tmp_path / "table.md"))
    assert time.monotonic() - t0 < 12 + 15  # the budget + interpreter start-up
    assert "BUDGET of 12 s reached" in out or "SKIPPED" in out
    assert (tmp_path / "table.md").read_text().startswith("\n## GPU renderer")


@pytest.mark.slow
def test_encode_benchmark_runs(tmp_path):
    out = _run("benchmarks.bench_encode", "--smoke")
    assert "webp lossless method 0" in out and "jpeg quality 90" in out
    assert "(c) engine, encoder pool of 4" in out and "hidden" in out


@pytest.mark.slow
def test_compile_cache_benchmark_runs():
    out = _run("benchmarks.bench_compile_cache", "--backend", "eager")
    assert "restart (same cache dir)" in out and "restart / first start" in out


@pytest.mark.slow
def test_memory_benchmark_runs(tmp_path):
    out = _run("benchmarks.bench_memory", "--n", "3")
    assert "growth 10x intents" in out


@pytest.mark.slow
def test_search_simulator_runs_and_the_paired_search_beats_best_of_n_where_prompts_differ():
    out = _run("benchmarks.bench_search_sim", "--intents", "40")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    table = {(r[0], r[1]): r for r in rows[1:]}
    worlds = {"prompts differ", "prompts differ a little", "seeds dominate", "prompts do not differ"}
    assert {w for w, _ in table} == worlds
    for world in worlds:  # every arm spent the same images
        assert {table[(world, arm)][2] for arm in ("best-of-N", "paired search (default)", "fresh-seed search")} \
            == {"22.000"}
    low = float(table[("prompts differ", "paired search (default)")][3].split("[")[1].split(",")[0])
    assert low > 0  # the interval of the improvement over best-of-N lies above 0


@pytest.mark.slow
@pytest.mark.serve
@pytest.mark.extended  # ~5 minutes; the served app's campaigns are covered by tests/test_serve*.py
def test_busy_benchmark_runs_campaigns_through_the_served_app():
    """bench_busy --smoke: the Serve app with the fixed-cost renderer and the real tiny vLLM starts once and runs a
    campaign at concurrency 1 and one at the concurrency derived from the renderer's capacity; every row rendered
    images and its busy fraction is a fraction."""
    out = _run("benchmarks.bench_busy", "--smoke", timeout=900)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.split("Renderer busy fraction")[1]
            .splitlines() if line.startswith("| ") and not line.startswith("| intent")]
    assert [r[0] for r in rows] == ["1", "8 (from capacity)"]  # 2 x 16 images per batch / 4 per round
    for concurrency, intents, images, wall, busy, fraction, per_call, rate in rows:
        assert int(images) > 0 and float(busy) > 0 and 0 < float(fraction) <= 1 and 1 <= float(per_call) <= 16
        assert float(rate) == pytest.approx(int(images) / float(wall), rel=0.01)


@pytest.mark.slow
@pytest.mark.serve
def test_planner_workers_benchmark_runs_every_arm_through_the_served_app():
    """bench_planner_workers --smoke (~1 minute, zero-cost engines): the app deployed in the ingress, with 1 and with 2
    planner workers, one campaign each over HTTP; every arm rendered the same images, its CPU split found the app's
    processes (the planners' only where there are workers, one share per worker), and status GETs were sampled."""
    out = _run("benchmarks.bench_planner_workers", "--smoke", timeout=600)
    rows = parse_table(out, "arm")
    assert list(rows) == ["in the ingress", "1 planner worker", "2 planner workers"], out[-3000:]
    images = {cells[2] for cells in rows.values()}
    assert len(images) == 1 and int(images.pop()) > 0
    for arm, (_, intents, n, wall, rate, gets, ingress, planners, diffusion, llm, *_rest, total, busy) in rows.items():
        assert int(intents) == 20 and abs(float(rate) * float(wall) - int(n)) <= 0.05 * float(rate) + 1  # wall: .1f
        p50, p95 = (float(x) for x in gets.split(" / "))
        assert 0 < p50 <= p95, gets
        assert float(ingress) > 0 and float(diffusion) > 0 and float(llm) > 0 and float(total) > 0 and float(busy) > 0
        assert (float(planners.split()[0]) > 0) == (arm != "in the ingress"), planners
    assert len(rows["2 planner workers"][7].split("+")) == 2  # one share per worker
    assert "2 planner workers / 1 worker" in out


def parse_table(out: str, first_header: str) -> dict[str, list[str]]:
    """The markdown table whose header starts with ``first_header``, as {first cell: cells}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} "))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


@pytest.mark.slow  # an end-to-end benchmark run (minutes): outside the quick tier
def test_world_benchmark_small_table():
    """benchmarks/bench_world.py --small --llm tiny: one held-out intent per tag through every arm (the LLM arms on
    the tiny random-weight model: plumbing, not quality). The table, not the goal line's text, is checked: every arm
    is there with values in range, the LLM arms called the LLM and the others did not, best-of-k spent k images."""
    out = _run("benchmarks.bench_world", "--small", "--llm", "tiny", "--max-equal-compute", "32",
               timeout=1200)
    rows = parse_table(out, "arm")
    labels = {
        "best-of-8, user's wording": "best_of", "beam + LLM (tiny random LLM), phrase edits, feedback": "llm",
        "beam + LLM (tiny random LLM), phrase edits, no feedback": "llm",
        "beam + LLM (tiny random LLM), phrase edits, feedback + memory": "llm",
        "beam + LLM (tiny random LLM), whole rewrites (before), paired seeds": "llm",
        "UPPER BOUND: oracle rewriter": "oracle", "UPPER BOUND: oracle phrasing (4 phrasings x 2 seeds)": "oracle",
        "best-of-16, user's wording (more images)": "best_of", "best-of-32, user's wording (more images)": "best_of",
    }
    assert set(labels) <= set(rows), (sorted(rows), out[-3000:])
    assert any(label.startswith("best-of-") and "at equal compute, this CPU (" in label for label in rows)
    assert any(label.startswith("best-of-") and "GPU cluster cost model" in label for label in rows)
    assert "Image efficiency: the smallest best-of-k" in out
    for label, cells in rows.items():
        _, knows, n, acc, delta, images, calls, tokens, seconds = cells
        assert int(n) == 6 and knows
        mean, low, high = (float(x) for x in acc.replace("[", "").replace("]", "").replace(",", "").split())
        assert 0 <= low <= mean <= high <= 1 and abs(6 * mean - round(6 * mean)) < 0.01, cells
        kind = labels.get(label, "best_of")
        if kind == "llm":
            assert float(calls) >= 1 and float(tokens) > 0 and float(seconds) > 0, cells
        else:
            assert float(calls) == 0 and float(seconds) == 0, cells
        if kind == "best_of":
            assert float(images) == int(label.split("best-of-")[1].split()[0].rstrip(","))
        else:
            assert 0 < float(images) <= 8, cells
        if label != "best-of-8, user's wording":
            d = delta.replace("[", "").replace("]", "").replace(",", "").split()
            assert -100 <= float(d[1]) <= float(d[0]) <= float(d[2]) <= 100, cells
    assert "Goal (beam + real LLM >= best-of-8 + 10 points" in out


@pytest.mark.slow  # an end-to-end benchmark run (minutes): outside the quick tier
def test_campaign_memory_benchmark_small_table():
    """benchmarks/bench_lessons.py --small: 12 held-out intents in two campaign orders, the explorer with and without
    memory beside best-of-8. Every arm has its four quarters and the total, intents add up, values are in range,
    best-of-8 spends 8 images and the searches at most 8, the memory arms carry a paired Δ, the goal line and the
    learned lessons are reported."""
    out = _run("benchmarks.bench_lessons", "--small", timeout=1200)
    arms: dict[str, list[list[str]]] = {}
    arm = None
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 8 or cells[0] == "arm" or set(cells[0]) <= {"-"} and cells[0]:
            continue
        arm = cells[0] or arm
        arms.setdefault(arm, []).append(cells)
    expected = {f"{a} ({o} order)" for o in ("fixed", "shuffled")
                for a in ("best-of-8", "explorer, no memory", "explorer + memory")}
    assert set(arms) == expected, (sorted(arms), out[-3000:])
    for label, rows in arms.items():
        assert [r[2] for r in rows] == ["Q1", "Q2", "Q3", "Q4", "all"]
        assert sum(int(r[3]) for r in rows[:4]) == int(rows[4][3]) == 12
        for r in rows:
            mean, low, high = (float(x) for x in r[4].replace("[", "").replace("]", "").replace(",", "").split())
            assert 0 <= low <= mean <= high <= 1, r
            assert (float(r[6]) == 8) if label.startswith("best-of-8") else (0 < float(r[6]) <= 8), r
            if "+ memory" in label:
                d = [float(x) for x in r[5].replace("[", "").replace("]", "").replace(",", "").split()]
                assert -100 <= d[1] <= d[0] <= d[2] <= 100, r
            else:
                assert r[5] == "–", r
    assert "Goal (last quarter with memory >= +10 points" in out and "supported of" in out


@pytest.mark.slow  # an end-to-end benchmark run (about a minute): outside the quick tier
def test_campaign_budget_benchmark_small_table():
    """benchmarks/bench_budget.py --small: 12 held-out intents, the same budget shared evenly and adaptively. Neither
    arm spends more than the budget, even spends at most its share on any intent, and the paired row is there."""
    out = _run("benchmarks.bench_budget", "--small", timeout=900)
    rows = {cells[0]: cells for line in out.splitlines() if line.startswith("|")
            for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]}
    assert {"even", "adaptive", "adaptive - even (paired)"} <= set(rows), out[-3000:]
    for arm in ("even", "adaptive"):
        spent, budget = (int(x) for x in rows[arm][3].split(" / "))
        assert spent <= budget == 96
        assert 0.0 <= float(rows[arm][2].split()[0]) <= 1.0
    assert int(rows["even"][6]) <= 8
    assert rows["adaptive - even (paired)"][6].endswith("w/t/l")
