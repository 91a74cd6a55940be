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
