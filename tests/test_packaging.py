"""The package as a user installs it: a wheel built from this checkout, installed into a fresh venv outside the source
tree, run from a directory that is not the source tree.

The fast tests read the committed files. The slow one builds the wheel (setuptools from this venv, offline), installs
it ``--no-deps`` into a new venv and makes the dependencies importable through a ``.pth`` file naming this venv's
site-packages (a ``.pth`` inside a directory added by another ``.pth`` is not processed, so this venv's editable
install of promptbeam is not seen: ``promptbeam`` comes from the wheel, which the test checks).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("agents", "serving", "pipelines")


def tracked_files() -> list[str]:
    """Files of this checkout that git tracks or would track (untracked but not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return sorted(p for p in out.split("\0") if p and (ROOT / p).is_file())


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_the_apache_2_text_pyproject_names_in_the_current_form():
    """PEP 639: an SPDX expression and the license files (the TOML-table form is deprecated by setuptools 77, which
    the build requires)."""
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "setuptools>=77" in pyproject()["build-system"]["requires"]


def test_nothing_shipped_imports_benchmarks_or_tests():
    """Installed, ``benchmarks`` and ``tests`` do not exist: an import of either fails only there."""
    offenders = []
    for rel in tracked_files():
        if not (rel.startswith(tuple(p + "/" for p in SHIPPED)) and rel.endswith(".py")):
            continue
        for node in ast.walk(ast.parse((ROOT / rel).read_text(), rel)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{rel}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in ("benchmarks", "tests")]
    assert offenders == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the checkout's files (building in place would leave build/ behind)."""
    src = tmp_path_factory.mktemp("src")
    for rel in tracked_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes((ROOT / rel).read_bytes())
    dist = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")
    built = subprocess.run([str(uv), "build", "--wheel", "--no-build-isolation", "--offline", "--python",
                            sys.executable, "-o", str(dist), str(src)], check=True, capture_output=True, text=True,
                           timeout=300)
    # setuptools' deprecations (the old license form was one) are a build that stops working later
    assert "SetuptoolsDeprecationWarning" not in built.stdout + built.stderr, built.stderr[-3000:]
    (whl,) = dist.glob("promptbeam-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_holds_every_runtime_file(wheel):
    """Every tracked file under the shipped packages is in the wheel (presets, prompts, the world's data and weights,
    the torchvision shim's site directory...), and so is the LICENSE."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [rel for rel in tracked_files() if rel.startswith(tuple(p + "/" for p in SHIPPED))]
    assert [rel for rel in expected if rel not in names] == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()


OLDEST_PIP = "23.0.1"
"""The oldest pip docs/install.md supports: pip 23.0 (a venv of this Python 3.11.7 brings pip 23.2.1)."""


@pytest.mark.slow
def test_the_oldest_supported_pip_installs_the_wheel_and_reads_its_requirements(wheel, tmp_path):
    """pip 23 vendors packaging 21.3, which cannot parse some requirement forms newer tools write (``torch===2.13.0;
    extra == "gpu"`` crashed its resolver and ``pip check``). A fresh venv gets that pip from the package index,
    installs the wheel, and every Requires-Dist of it must parse with that pip's own parser."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")

    def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([py, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                              text=True, timeout=600)
        assert not check or done.returncode == 0, f"pip {args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    pip("install", "-q", f"pip=={OLDEST_PIP}")
    assert pip("--version").stdout.startswith(f"pip {OLDEST_PIP} ")
    pip("install", "--no-deps", str(wheel))
    parsed = subprocess.run([py, "-c", (
        "from importlib.metadata import requires\n"
        "from pip._vendor.packaging.requirements import Requirement\n"
        "reqs = [Requirement(r) for r in requires('promptbeam')]\n"
        "(torch,) = [r for r in reqs if r.name == 'torch' and r.marker and 'gpu' in str(r.marker)]\n"
        "print(len(reqs), torch.specifier.contains('2.13.0'), torch.specifier.contains('2.13.0+cpu'))\n"
    )], capture_output=True, text=True, timeout=120)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    count, accepts_cuda_build, accepts_cpu_build = parsed.stdout.split()
    assert int(count) > 20 and accepts_cuda_build == "True" and accepts_cpu_build == "False"
    # pip check reads every installed distribution's requirements: it names the missing ones, no parse error
    checked = pip("check", check=False)
    assert "Error parsing requirements" not in checked.stdout + checked.stderr, checked.stdout[-2000:]
    assert f"promptbeam {pyproject()['project']['version']} requires ray" in checked.stdout, checked.stdout[-2000:]


@pytest.mark.slow
def test_installed_wheel_works_outside_the_source_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv), "pip", "install", "--no-config", "--offline", "--no-deps", "--python", str(py),
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PROMPTBEAM_TINY_DIR"] = str(tmp_path / "tiny")  # nothing below builds tiny models; presets only name it
    env["COLUMNS"] = "300"  # rich fits tables to the terminal: without a wide one, names are cut ("flux-sch…")

    def run(*args: str, timeout: int = 300) -> str:
        done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    promptbeam = str(venv / "bin" / "promptbeam")
    import importlib.metadata

    assert run(promptbeam, "--version").strip() == f"promptbeam {importlib.metadata.version('promptbeam')}"
    presets = run(promptbeam, "models", "presets")
    shipped = sorted(p.stem for p in (ROOT / "serving" / "presets").glob("*.yaml"))
    assert shipped and all(name in presets for name in shipped)
    loaded = run(str(py), "-c", (
        "import agents, pipelines, serving, serving.presets as p\n"
        "print(agents.__file__, pipelines.__file__, serving.__file__)\n"
        "print(sorted(p.load_preset(n).name for n in p.available()))\n"
        "print(p.load_preset('world').diffusion.model)\n"
    )).splitlines()
    assert all(Path(f).is_relative_to(site) for f in loaded[0].split()), loaded[0]  # the wheel, not the source tree
    assert loaded[1] == str(shipped)
    assert Path(loaded[2]).is_relative_to(site) and (Path(loaded[2]) / "model_index.json").is_file()
    assert "--headroom" in run(promptbeam, "world", "eval", "--help")
    table = run(promptbeam, "world", "eval", loaded[2], "--per-tag", "1", "--no-record", timeout=600)
    assert "overall" in table and "judge accuracy" in table
    assert not (cwd / "benchmarks").exists() and list(cwd.iterdir()) == []  # wrote nothing where it ran
