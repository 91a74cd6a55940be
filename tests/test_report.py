"""The HTML report: self-contained for small campaigns, paged with linked images at scale; both open in a real headless
browser (a 10k-intent report included)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from agents.messages import Intent
from pipelines.campaign import CampaignRunner
from pipelines.records import STORE_FORMAT, CampaignSpec
from pipelines.report import EMBED_UP_TO, PAGE_SIZE, write_report
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from pipelines.testing.synthetic import synthetic_store


def run_campaign(d, n: int) -> CampaignStore:
    spec = CampaignSpec(name="r", intents=[Intent(id=f"i{k}", text=f"a red apple {k}") for k in range(n)],
                        search={"rounds": 2, "max_images": 10, "seeds_per_prompt": 1})
    renderer = FakeRenderer()
    store = CampaignStore(str(d))
    asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(renderer), store).run())
    return store


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    return d, write_report(run_campaign(d, 3))


def test_small_report_is_self_contained(report_path):
    d, path = report_path
    html = open(path).read()
    assert html.count('src="data:image/png;base64,') >= 3 * 2  # best and baseline of every intent, embedded
    assert 'src="images/' not in html  # small campaigns link nothing out: the file opens anywhere
    assert html.count('<div class="intent"') == 3 and "<svg" in html and "lineage" in html
    assert "95% CI" in html and "better" in html  # the campaign statistics
    assert not (d / "report").exists()


def test_larger_report_pages_link_images_lazily(tmp_path):
    n = EMBED_UP_TO + 5
    store = run_campaign(tmp_path, n)
    path = write_report(store)
    index = open(path).read()
    assert "data:image" not in index and "<img" not in index  # the index holds the table, no images
    assert len(re.findall(r"<tr><td><a href=\"report/page-000[12].html#i\d+\"", index)) == n
    pages = sorted((tmp_path / "report").glob("page-*.html"))
    assert [p.name for p in pages] == ["page-0001.html"]  # 55 intents < PAGE_SIZE
    page = pages[0].read_text()
    assert page.count('<div class="intent"') == n and "data:image" not in page
    srcs = re.findall(r'<img src="([^"]+)" alt="[^"]*" loading="lazy">', page)
    assert srcs and all(s.startswith("../images/") for s in srcs)  # 8x8 images: no thumbnails needed
    assert all((tmp_path / "report" / s).resolve().is_file() for s in srcs)


def test_thumbnails_for_large_images(tmp_path):
    store = synthetic_store(tmp_path, 3, size=512)
    assert store.read_manifest().format == STORE_FORMAT
    from pipelines import report

    report.EMBED_UP_TO, saved = 0, report.EMBED_UP_TO  # force the paged layout for 3 intents
    try:
        write_report(store)
    finally:
        report.EMBED_UP_TO = saved
    page = (tmp_path / "report" / "page-0001.html").read_text()
    thumbs = re.findall(r'<img src="\.\./(thumbs/[^"]+\.jpg)"', page)
    assert len(thumbs) >= 6  # best + baseline per intent (and the lineage trees)
    for t in set(thumbs):
        assert max(Image.open(tmp_path / t).size) <= 256
    assert '<a href="../images/' in page  # the full-size image one click away


def chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is missing: scripts/setup installs the Debian package 'chromium'"
    return browser


def headless(tmp_path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", *args],
        check=True, capture_output=True, timeout=timeout,
    )


def saturated_share(shot) -> float:
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 20  # not a blank page
    return float(((pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 60).mean())


@pytest.mark.slow
def test_report_renders_with_images_in_headless_chromium(report_path, tmp_path):
    _, path = report_path
    shot = tmp_path / "report.png"
    headless(tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", f"file://{path}")
    assert Image.open(shot).size == (1200, 1400)
    # the embedded images are drawn: the fake renderer's saturated colour blocks cover a large area
    assert saturated_share(shot) > 0.05


@pytest.mark.slow
def test_a_10k_intent_report_is_bounded_and_opens_in_headless_chromium(tmp_path):
    n = 10_000
    store = synthetic_store(tmp_path, n)
    t0 = time.perf_counter()
    path = write_report(store)
    write_s = time.perf_counter() - t0
    index_bytes = (tmp_path / "report.html").stat().st_size
    pages = sorted((tmp_path / "report").glob("page-*.html"))
    assert len(pages) == n // PAGE_SIZE
    assert index_bytes < 600 * n  # one table row per intent, no images
    assert max(p.stat().st_size for p in pages) < 5_000 * PAGE_SIZE  # a page: its intents' sections, images linked
    assert write_s < 120, write_s
    # the index opens: the browser parses the whole table (the last intent's row is in the DOM)
    t0 = time.perf_counter()
    dom = headless(tmp_path, "--virtual-time-budget=20000", "--dump-dom", f"file://{path}").stdout.decode()
    load_s = time.perf_counter() - t0
    assert dom.count("<tr>") == n + 1 and f"s{n - 1:05d}" in dom and "95% CI" in dom
    assert load_s < 120, load_s
    # a page opens with its linked images drawn
    shot = tmp_path / "page.png"
    headless(tmp_path, "--window-size=1200,1400", "--virtual-time-budget=10000", f"--screenshot={shot}",
             f"file://{pages[-1]}")
    assert saturated_share(shot) > 0.05


@pytest.mark.slow
def test_report_benchmark_runs(tmp_path):
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_report", "--n", "60"], cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio 10x intents" in out.stdout and "| 600 " in out.stdout


@pytest.mark.parametrize("embed", [True, False])
def test_user_text_is_escaped_in_every_layout(tmp_path, monkeypatch, embed):
    """The templates autoescape: an intent holding markup appears as text in the index, the sections and the pages."""
    from pipelines import report

    if not embed:
        monkeypatch.setattr(report, "EMBED_UP_TO", 0)  # the paged layout for a small campaign
    attack = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    spec = CampaignSpec(name="x", intents=[Intent(id="i0", text=f"a red apple {attack}")],
                        search={"rounds": 2, "max_images": 10, "seeds_per_prompt": 1})
    renderer = FakeRenderer()
    store = CampaignStore(str(tmp_path))
    asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(renderer), store).run())
    pages = [open(write_report(store)).read()] + [p.read_text() for p in (tmp_path / "report").glob("page-*.html")]
    assert len(pages) == (1 if embed else 2)
    for html in pages:
        assert "<script>" not in html and "onerror=alert(1)>" not in html
    assert all("&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html for html in pages)
