"""Does a lock still cover pyproject.toml, and does this environment hold exactly what the lock pins?

    python scripts/check_lock.py            both checks for requirements/cpu.lock against this interpreter
                                            (scripts/setup runs it last; tests/test_install.py too)

Needs only the standard library and ``packaging`` (a dependency of the locked set). Package metadata is read from
the environment, never from a registry.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK_EXTRAS = {"cpu": ("cpu", "test"), "gpu": ("gpu", "cluster")}
"""Which extras each lock holds (the same as scripts/lock)."""


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of a ``uv pip compile`` output -> {canonical name: version}."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path}: {line!r} is not a 'name==version' pin")
        pins[canonicalize_name(name.split("[")[0])] = version.split(";")[0].strip()
    return pins


def project_requirements(extras: tuple[str, ...], pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def unmet_requirements(lock: dict[str, str], requirements: list[Requirement]) -> list[str]:
    """pyproject.toml's direct requirements that the lock leaves out or pins outside their range."""
    problems = []
    for req in requirements:
        pinned = lock.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(Version(pinned), prereleases=True):
            problems.append(f"{req} but the lock pins {req.name}=={pinned}")
    return problems


def environment_mismatches(lock: dict[str, str]) -> list[str]:
    """Pinned packages missing from this environment or installed at another version."""
    problems = []
    for name, version in sorted(lock.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} is not installed")
            continue
        if Version(installed) != Version(version):
            problems.append(f"{name} is {installed}, the lock pins {version}")
    return problems


def excluded_packages() -> list[str]:
    path = ROOT / "scripts" / "excluded-packages.txt"
    return [canonicalize_name(n) for n in path.read_text().split() if n]


def main() -> int:
    lock_path = ROOT / "requirements" / "cpu.lock"
    lock = read_lock(lock_path)
    stale = unmet_requirements(lock, project_requirements(LOCK_EXTRAS["cpu"]))
    drift = environment_mismatches(lock)
    present = [n for n in excluded_packages() if _installed(n)]
    for line in stale:
        print(f"{lock_path.name} is out of date with pyproject.toml: {line} (run scripts/lock)", file=sys.stderr)
    for line in drift:
        print(f"this environment differs from {lock_path.name}: {line} (run scripts/setup)", file=sys.stderr)
    for name in present:
        print(f"{name} is installed but breaks beside the CPU torch (run scripts/setup)", file=sys.stderr)
    return 1 if stale or drift or present else 0


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
