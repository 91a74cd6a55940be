"""Test tiers compose: ``-m`` narrows the default run instead of replacing it. The heavy tiers stay out unless the
expression names them, and the quick tier (``-m "not slow"``) holds no end-to-end benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import HEAVY_TIERS, deselect_heavy_tiers

ROOT = Path(__file__).resolve().parents[1]
BUSY = "tests/test_benchmarks.py::test_busy_benchmark_runs_campaigns_through_the_served_app"
"""Marked serve, slow and extended: before tiers composed, `-m serve` or `-m slow` ran it."""


class Item:
    """What deselect_heavy_tiers reads of a pytest item: its markers."""

    def __init__(self, name: str, *markers: str):
        self.name, self.markers = name, set(markers)

    def get_closest_marker(self, name: str):
        return name if name in self.markers else None


def select(expression: str, items: list[Item]) -> tuple[list[str], list[str]]:
    """(kept, deselected) names for ``-m expression``."""
    deselected: list[Item] = []
    config = SimpleNamespace(getoption=lambda name: expression if name == "markexpr" else None,
                             hook=SimpleNamespace(pytest_deselected=lambda items: deselected.extend(items)))
    deselect_heavy_tiers(config, items)
    return [i.name for i in items], [i.name for i in deselected]


ITEMS = [("unit",), ("serve", "serve"), ("busy", "serve", "slow", "extended"), ("soak", "serve", "soak"),
         ("llm", "realllm"), ("faults", "faults", "slow")]


@pytest.mark.parametrize("expression,kept", [
    ("", ["unit", "serve"]),
    ("serve", ["unit", "serve"]),  # pytest's own -m then keeps the serve tests of these
    ("extended", ["unit", "serve", "busy"]),
    ("serve and not extended", ["unit", "serve", "busy"]),  # named: the expression itself decides
    ("serve or soak", ["unit", "serve", "soak"]),
    ("faults or cluster or soak or realllm or extended", ["unit", "serve", "busy", "soak", "llm", "faults"]),
    ("not slow", ["unit", "serve"]),
    ("realllmx", ["unit", "serve"]),  # a marker name inside another word names nothing
])
def test_heavy_tiers_run_only_when_the_expression_names_them(expression, kept):
    items = [Item(*spec) for spec in ITEMS]
    got, deselected = select(expression, items)
    assert got == kept
    assert sorted(deselected) == sorted(name for name, *_ in ITEMS if name not in kept)


def collected(*args: str) -> set[str]:
    """The test ids of tests/test_benchmarks.py that ``scripts/test ARGS`` would run (collected: nothing runs)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                           "tests/test_benchmarks.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 5), proc.stdout[-3000:] + proc.stderr[-3000:]  # 5: nothing selected
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def test_scripts_test_tiers_compose_with_the_default_exclusions():
    """Through pytest itself (pyproject's addopts and this conftest): `-m slow` keeps the extended benchmark out, the
    default run too, naming `extended` brings it in, and the quick tier holds no end-to-end benchmark run."""
    assert HEAVY_TIERS == ("faults", "cluster", "soak", "realllm", "extended")
    default, slow, extended, quick = collected(), collected("-m", "slow"), collected("-m", "extended"), \
        collected("-m", "not slow")
    assert BUSY not in default and BUSY not in slow and extended == {BUSY}
    assert "tests/test_benchmarks.py::test_encode_benchmark_runs" in slow
    assert quick and not [i for i in quick if i.endswith("_small_table") or "benchmark_runs" in i]
    assert "tests/test_benchmarks.py::test_a_recorded_table_replaces_the_section_with_its_heading" in quick
    assert quick | slow == default
