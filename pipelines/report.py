"""The HTML report of a campaign: summary statistics, every intent's best image beside the baseline's (each with the
checks its image failed), score per round, the chain of prompts that led to the best image, the lineage tree.

Small campaigns (up to ``EMBED_UP_TO`` intents) get one self-contained ``report.html`` with the images inside, so it
opens anywhere. Larger ones get ``report.html`` (the summary and one table row per intent, no images) and pages of
``PAGE_SIZE`` intents under ``report/`` that link the images beside them: thumbnails in ``thumbs/`` when the images are
larger than ``THUMB_PX``, lazy loading, lineage images only inside closed ``<details>`` (not fetched until opened). The
size of every file is bounded whatever the campaign's size, so a 10k-intent report opens in a browser.

The markup lives in Jinja2 templates (``pipelines/templates/report/``) rendered with autoescape: intents, prompts and
errors are user or model text, and appear as text, never as markup. This module prepares what they show.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import posixpath
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import jinja2

from agents.messages import StoredImage
from pipelines.records import IntentPart, LineageRecord
from pipelines.store import CampaignStore, ImageMismatch
from pipelines.tally import CampaignTally
from serving.files import write_atomic

logger = logging.getLogger(__name__)

EMBED_UP_TO = 50
PAGE_SIZE = 100
THUMB_PX = 256


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines", "templates/report"),
        autoescape=True,  # every value is escaped unless a template marks it safe (none does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class _Images:
    """How an image reference (``images/x.png``) appears in a page: embedded, or linked relative to the page (through
    a thumbnail when the images are large). URLs are returned raw; the templates escape them."""

    def __init__(self, store: CampaignStore, embed: bool, prefix: str, thumbnails: bool):
        self.store, self.embed, self.prefix, self.thumbnails = store, embed, prefix, thumbnails
        self.recorded: dict[str, StoredImage] = {}  # the lineage's size and sha256 of the images about to be shown

    def know(self, lineage: list[LineageRecord]) -> None:
        """Remember the size and sha256 the lineage records for each image (checked when the image is read)."""
        for c in lineage:
            if c.image and c.image_size is not None and c.image_sha256 is not None:
                self.recorded[c.image] = StoredImage(uri=c.image, size=c.image_size, sha256=c.image_sha256)

    def _read(self, name: str) -> bytes:
        """images/<name>, checked against its recorded size and sha256 where the lineage has them (the bytes are read
        anyway: the hash is cheap beside them); FileNotFoundError or ImageMismatch otherwise."""
        recorded = self.recorded.get(f"images/{name}")
        return self.store.read_image(name) if recorded is None else self.store.read_stored_image(recorded)

    def src(self, ref: str | None, thumb: bool = False) -> str:
        if not ref or not ref.startswith("images/"):
            return ""
        name = ref.split("/", 1)[1]
        if self.embed:
            try:
                return "data:image/png;base64," + base64.b64encode(self._read(name)).decode()
            except FileNotFoundError:
                return ""
            except ImageMismatch as exc:  # shown as missing, never as another image
                logger.warning("report: %s", exc)
                return ""
        if thumb and self.thumbnails:
            return self.prefix + self._thumbnail(name)
        return self.prefix + ref

    def _thumbnail(self, name: str) -> str:
        """``thumbs/<name>.jpg``, made once (re-running the report reuses it)."""
        rel = f"thumbs/{name[:-4]}.jpg"
        path = self.store.path(rel)
        if not self.store.fs.exists(path):
            from PIL import Image

            try:
                image = Image.open(io.BytesIO(self._read(name))).convert("RGB")
            except FileNotFoundError:
                return f"images/{name}"
            except ImageMismatch as exc:  # no thumbnail of another image; the link still names the file
                logger.warning("report: %s", exc)
                return f"images/{name}"
            image.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=85)
            self.store.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            write_atomic(self.store.fs, path, buf.getvalue())
        return rel


def _chart(values: list[float | None], baseline: float | None) -> dict[str, Any] | None:
    """Where the inline SVG draws the best score per round (a line) and the baseline's best (dashed)."""
    w, h, pad = 260, 120, 24
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if not pts:
        return None
    n = max(len(values) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + i * (w - 2 * pad) / n, h - pad - v * (h - 2 * pad)

    return {"w": w, "h": h, "pad": pad, "points": [xy(i, v) for i, v in pts],
            "baseline_y": None if baseline is None else xy(0, baseline)[1],
            "label_xs": [xy(i, 0)[0] for i in range(len(values))]}


def _failed_checks(record: LineageRecord | None, questions: list[str]) -> list[str] | None:
    """The checks the critic answered "no" for this image (empty: all pass); None when it was not critiqued."""
    if record is None or record.critique is None or not record.critique.answers:
        return None
    by_id = {f"q{i + 1}": q for i, q in enumerate(questions)}  # the critics number checks q1, q2, ... in this order
    return [by_id.get(a.check_id, a.check_id) for a in record.critique.answers if not a.answer]


def _path(lineage: list[LineageRecord], best_id: str | None, questions: list[str]
          ) -> list[tuple[LineageRecord, list[str] | None]]:
    """The chain of prompts from the intent's wording to the best image (round-0 rewrites hang off the wording), each
    with the checks its image failed; empty when the best image is of the wording itself."""
    by_id = {c.id: c for c in lineage if c.mode == "beam"}
    chain, node = [], by_id.get(best_id or "")
    while node is not None:
        chain.insert(0, node)
        node = by_id.get(node.parent_id or "")
    originals = [c for c in by_id.values() if c.source == "original" and c.score is not None]
    original = max(originals, key=lambda c: c.score, default=None)  # the wording's best seed
    if not chain or original is None or chain[-1].prompt == original.prompt:
        return []
    if chain[0].source != "original":
        chain.insert(0, original)
    return [(c, _failed_checks(c, questions)) for c in chain]


@dataclass
class _Section:
    """What one intent's section shows."""

    outcome: Any
    images: _Images
    failed: bool
    search_failed: list[str] | None = None
    baseline_failed: list[str] | None = None
    chart: dict[str, Any] | None = None
    path: list | None = None
    children: dict | None = None


def _section(part: IntentPart, images: _Images) -> _Section:
    images.know(part.lineage)
    o = part.outcome
    if o.status != "done" or o.search is None:
        return _Section(o, images, failed=True)
    s, b = o.search, o.baseline
    by_id = {c.id: c for c in part.lineage}
    children: dict[str | None, list[LineageRecord]] = defaultdict(list)
    for c in part.lineage:
        if c.mode == "beam":
            children[c.parent_id].append(c)
    return _Section(
        o, images, failed=False,
        search_failed=_failed_checks(by_id.get(s.best_id or ""), o.checks),
        baseline_failed=_failed_checks(by_id.get(b.best_id or ""), o.checks) if b is not None else None,
        chart=_chart(s.best_score_per_round, b.best_score if b else None),
        path=_path(part.lineage, s.best_id, o.checks),
        children=dict(children),
    )


LESSONS_SHOWN = 50
"""Campaign-memory lessons listed in the report (supported first); all of them: GET .../lessons or lessons.json."""


def write_report(store: CampaignStore, out_name: str = "report.html") -> str:
    """Render the campaign in ``store`` to ``<campaign>/report.html`` (and ``report/page-*.html`` for large
    campaigns); returns the path of ``report.html``. Reads each part once, in campaign order."""
    manifest = store.read_manifest()
    if manifest is None:
        raise FileNotFoundError(f"{store.uri} holds no campaign (no manifest.json)")
    env = _templates()
    embed = manifest.intents <= EMBED_UP_TO
    thumbnails = max(manifest.search.width, manifest.search.height) > THUMB_PX
    title = f"promptbeam · {manifest.id}"
    tally = CampaignTally(manifest.intents)
    rows: list[tuple[Any, str]] = []
    sections: list[_Section] | None = None
    count = 0
    if embed:
        images = _Images(store, embed=True, prefix="", thumbnails=False)
        sections = []
        for part in store.iter_parts(manifest.intent_ids):
            tally.fold(part.outcome)
            rows.append((part.outcome, ""))
            sections.append(_section(part, images))
    else:
        images = _Images(store, embed=False, prefix="../", thumbnails=thumbnails)
        store.fs.makedirs(store.path("report"), exist_ok=True)
        page: list[_Section] = []
        n_pages = -(-manifest.intents // PAGE_SIZE)
        page_template = env.get_template("page.html")

        def flush(number: int) -> None:
            html = page_template.render(title=f"{title} · page {number}", manifest=manifest, number=number,
                                        pages=n_pages, index_name=out_name, sections=page)
            write_atomic(store.fs, store.path(f"report/page-{number:04d}.html"), html.encode())
            page.clear()
            images.recorded.clear()  # this page's images are shown: memory stays bounded by a page

        for part in store.iter_parts(manifest.intent_ids):
            number = count // PAGE_SIZE + 1
            tally.fold(part.outcome)
            rows.append((part.outcome, f"report/page-{number:04d}.html"))
            page.append(_section(part, images))
            count += 1
            if count % PAGE_SIZE == 0:
                flush(number)
        if page:
            flush(count // PAGE_SIZE + 1)
    lessons = store.read_lessons() if manifest.search.memory.enabled else None
    html = env.get_template("index.html").render(title=title, manifest=manifest, summary=tally.summary(), rows=rows,
                                                 sections=sections, pages=-(-count // PAGE_SIZE), lessons=lessons,
                                                 lessons_shown=LESSONS_SHOWN)
    path = store.path(out_name)
    write_atomic(store.fs, path, html.encode())
    return path


AB_ROWS = 1000
"""Intents an A/B report shows (every intent: GET /v1/campaigns/{id}/ab/results)."""


@dataclass
class _ABCell:
    src: str
    score: float | None
    solved: bool
    images: int
    prompt: str | None
    status: str


def write_ab_report(root: str, campaign_id: str, out_name: str = "report.html") -> str:
    """A model A/B's side-by-side page, ``<root>/<campaign_id>/report.html``: both variants' accuracy, cost per solved
    intent and the paired difference (pipelines/ab.py), then each intent's best image on each variant. Images are
    embedded for small campaigns, else linked into the variants' folders. Returns the page's path."""
    from pipelines.ab import read_comparison, solved, stored_state
    from pipelines.store import campaign_store

    parent = campaign_store(root, campaign_id)
    ab = parent.read_ab()
    if ab is None:
        raise FileNotFoundError(f"{parent.uri} is not a model A/B (no ab.json)")
    comparison = read_comparison(root, ab, {n: stored_state(root, cid) for n, cid in ab.campaigns.items()})
    stores = {n: campaign_store(root, cid) for n, cid in ab.campaigns.items()}
    embed = max(s.intents_total for s in comparison.variants) <= EMBED_UP_TO
    got: dict[str, dict] = {}
    ids: list[str] = []
    for name, store in stores.items():
        manifest = store.read_manifest()
        if manifest is None:
            got[name] = {}
            continue
        ids = ids or manifest.intent_ids
        images = _Images(store, embed=embed, prefix=f"../{ab.campaigns[name]}/", thumbnails=False)
        got[name] = {}
        for part in store.iter_parts(manifest.intent_ids[:AB_ROWS]):
            o = part.outcome
            images.know(part.lineage)
            best = o.search.best_image if o.search else None
            got[name][o.intent_id] = (o.intent, _ABCell(
                src=images.src(best), score=o.search.best_score if o.search else None,
                solved=bool(solved(o, ab.solved_at)), images=o.search.counts.images if o.search else 0,
                prompt=o.search.best_prompt if o.search else None, status=o.status))
    rows = []
    for iid in ids[:AB_ROWS]:
        cells = [got[n].get(iid) for n in ab.campaigns]
        text = next((c[0] for c in cells if c is not None), "")
        rows.append({"intent_id": iid, "text": text, "cells": [c[1] if c is not None else None for c in cells]})
    html = _templates().get_template("ab.html").render(
        title=f"promptbeam · A/B {ab.id}", ab=ab, c=comparison, names=list(ab.campaigns), rows=rows,
        links={n: f"../{cid}/report.html" for n, cid in ab.campaigns.items()}, truncated=len(ids) > AB_ROWS)
    path = parent.path(out_name)
    write_atomic(parent.fs, path, html.encode())
    return path
