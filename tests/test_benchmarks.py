"""The benchmark scripts keep working: the GPU renderer script at tiny size on CPU, the memory script at small n."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux"])
def test_gpu_renderer_script_runs_tiny_on_cpu(tmp_path, arch):
    out = _run("benchmarks.gpu.bench_renderer", "--arch", arch, "--tiny", "--no-record", "--reps", "1", "--batch", "2",
               "--workdir", str(tmp_path))
    assert "plain diffusers loop" in out and "engine (same settings)" in out and "+ fused QKV" in out
    assert "FLOPs per call" in out


@pytest.mark.slow
def test_memory_benchmark_runs(tmp_path):
    out = _run("benchmarks.bench_memory", "--n", "3", "--no-record")
    assert "growth 10x intents" in out


@pytest.mark.slow
def test_search_simulator_runs_and_the_paired_search_beats_best_of_n_where_prompts_differ():
    out = _run("benchmarks.bench_search_sim", "--intents", "40", "--no-record")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    table = {(r[0], r[1]): r for r in rows[1:]}
    worlds = {"prompts differ", "prompts differ a little", "seeds dominate", "prompts do not differ"}
    assert {w for w, _ in table} == worlds
    for world in worlds:  # every arm spent the same images
        assert {table[(world, arm)][2] for arm in ("best-of-N", "paired search (default)", "fresh-seed search")} \
            == {"22.000"}
    low = float(table[("prompts differ", "paired search (default)")][3].split("[")[1].split(",")[0])
    assert low > 0  # the interval of the improvement over best-of-N lies above 0
