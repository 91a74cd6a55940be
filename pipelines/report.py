"""The HTML report of a campaign: summary statistics, every intent's best image beside the baseline's (each with the
checks its image failed), score per round, the chain of prompts that led to the best image, the lineage tree.

Small campaigns (up to ``EMBED_UP_TO`` intents) get one self-contained ``report.html`` with the images inside, so it
opens anywhere. Larger ones get ``report.html`` (the summary and one table row per intent, no images) and pages of
``PAGE_SIZE`` intents under ``report/`` that link the images beside them: thumbnails in ``thumbs/`` when the images are
larger than ``THUMB_PX``, lazy loading, lineage images only inside closed ``<details>`` (not fetched until opened). The
size of every file is bounded whatever the campaign's size, so a 10k-intent report opens in a browser.
"""

from __future__ import annotations

import base64
import html
import io
import posixpath
from collections import defaultdict

from agents.stats import PairedSummary
from pipelines.records import CampaignSummary, CampaignTally, IntentPart, LineageRecord, Manifest
from pipelines.store import CampaignStore

EMBED_UP_TO = 50
PAGE_SIZE = 100
THUMB_PX = 256

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{margin:0 0 4px} .muted{color:#6e6e73} table{border-collapse:collapse;margin:12px 0;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:left} th{background:#f0f0f3}
.intent{background:#fff;border:1px solid #ddd;border-radius:8px;padding:16px;margin:18px 0}
.pair{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap} .pair figure{margin:0}
.pair img{width:256px;height:256px;image-rendering:pixelated;border:1px solid #ccc;background:#eee}
figcaption{font-size:13px;max-width:256px} .pos{color:#0a7d32} .neg{color:#b3261e}
ul.tree{list-style:none;padding-left:18px;margin:4px 0;border-left:2px solid #e0e0e0}
ul.tree li{margin:4px 0;font-size:13px} ul.tree img{width:40px;height:40px;vertical-align:middle;
image-rendering:pixelated;border:1px solid #ccc;margin-right:6px} .failed{color:#b3261e} .best{font-weight:600}
nav a{margin-right:12px} .path ol{margin:6px 0;padding-left:22px;font-size:13px}
"""


def _score(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _delta(x: float | None) -> str:
    return "–" if x is None else f'<span class="{"pos" if x >= 0 else "neg"}">{x:+.3f}</span>'


def _paired(s: PairedSummary) -> str:
    if s.mean is None:
        return "no compared intents yet"
    return (f"mean {_delta(s.mean)} (95% CI {s.ci_low:+.3f} … {s.ci_high:+.3f}) over {s.n} intents · "
            f"{s.wins} better, {s.ties} tied, {s.losses} worse")


class _Images:
    """How an image reference (``images/x.png``) appears in a page: embedded, or linked relative to the page (through
    a thumbnail when the images are large)."""

    def __init__(self, store: CampaignStore, embed: bool, prefix: str, thumbnails: bool):
        self.store, self.embed, self.prefix, self.thumbnails = store, embed, prefix, thumbnails

    def src(self, ref: str | None, thumb: bool = False) -> str:
        if not ref or not ref.startswith("images/"):
            return ""
        name = ref.split("/", 1)[1]
        if self.embed:
            try:
                return "data:image/png;base64," + base64.b64encode(self.store.read_image(name)).decode()
            except FileNotFoundError:
                return ""
        if thumb and self.thumbnails:
            return html.escape(self.prefix + self._thumbnail(name))
        return html.escape(self.prefix + ref)

    def _thumbnail(self, name: str) -> str:
        """``thumbs/<name>.jpg``, made once (re-running the report reuses it)."""
        rel = f"thumbs/{name[:-4]}.jpg"
        path = self.store.path(rel)
        if not self.store.fs.exists(path):
            from PIL import Image

            try:
                image = Image.open(io.BytesIO(self.store.read_image(name))).convert("RGB")
            except FileNotFoundError:
                return f"images/{name}"
            image.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=85)
            self.store.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self.store.fs.pipe_file(path, buf.getvalue())
        return rel

    def img(self, ref: str | None, alt: str, thumb: bool = False) -> str:
        src = self.src(ref, thumb)
        lazy = "" if self.embed else ' loading="lazy"'
        tag = f'<img src="{src}" alt="{html.escape(alt)}"{lazy}>'
        if not self.embed and ref:
            return f'<a href="{html.escape(self.prefix + ref)}">{tag}</a>'
        return tag


def _chart(values: list[float | None], baseline: float | None) -> str:
    """Inline SVG: best score per round (line) and the baseline's best (dashed)."""
    w, h, pad = 260, 120, 24
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if not pts:
        return ""
    n = max(len(values) - 1, 1)

    def xy(i, v):
        return pad + i * (w - 2 * pad) / n, h - pad - v * (h - 2 * pad)

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in pts))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#0b57d0"/>' for x, y in (xy(i, v) for i, v in pts))
    base = ""
    if baseline is not None:
        y = xy(0, baseline)[1]
        base = (f'<line x1="{pad}" x2="{w - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999" stroke-dasharray="4 3"/>'
                f'<text x="{w - pad}" y="{y - 4:.1f}" font-size="10" text-anchor="end" fill="#777">baseline</text>')
    labels = "".join(f'<text x="{xy(i, 0)[0]:.1f}" y="{h - 8}" font-size="10" text-anchor="middle">r{i}</text>'
                     for i in range(len(values)))
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="best score per round">'
            f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>'
            f'<line x1="{pad}" x2="{pad}" y1="{pad}" y2="{h - pad}" stroke="#ccc"/>'
            f'<line x1="{pad}" x2="{w - pad}" y1="{h - pad}" y2="{h - pad}" stroke="#ccc"/>'
            f'<text x="4" y="{pad + 4}" font-size="10">1</text><text x="4" y="{h - pad}" font-size="10">0</text>'
            f'{base}<polyline fill="none" stroke="#0b57d0" stroke-width="2" points="{line}"/>{dots}{labels}</svg>')


def _tree(images: _Images, lineage: list[LineageRecord], best_id: str | None) -> str:
    children: dict[str | None, list[LineageRecord]] = defaultdict(list)
    for c in lineage:
        if c.mode == "beam":
            children[c.parent_id].append(c)

    def render(parent: str | None) -> str:
        items = []
        for c in children.get(parent, []):
            cls = "failed" if c.status.value != "scored" else ("best" if c.id == best_id else "")
            img = images.img(c.image, "", thumb=True) if c.image else ""
            err = f' <span class="failed">({html.escape(c.error[:80])})</span>' if c.error else ""
            items.append(f'<li class="{cls}">{img}r{c.round} · {_score(c.score)} · seed {c.seed} · '
                         f'{html.escape(c.prompt[:160])}{err}{render(c.id)}</li>')
        return f'<ul class="tree">{"".join(items)}</ul>' if items else ""

    return render(None)


def _failed_checks(record: LineageRecord | None, questions: list[str]) -> str:
    """The checks the critic answered "no" for this image, as a caption line."""
    if record is None or record.critique is None:
        return ""
    by_id = {f"q{i + 1}": q for i, q in enumerate(questions)}  # the critics number checks q1, q2, ... in this order
    failed = [by_id.get(a.check_id, a.check_id) for a in record.critique.answers if not a.answer]
    if not failed:
        return '<br><span class="pos">all checks pass</span>' if record.critique.answers else ""
    return '<br><span class="neg">failed: ' + html.escape("; ".join(failed)) + "</span>"


def _path(lineage: list[LineageRecord], best_id: str | None, questions: list[str]) -> str:
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
        return ""
    if chain[0].source != "original":
        chain.insert(0, original)
    steps = "".join(f"<li>r{c.round} · {_score(c.score)} · {html.escape(c.prompt[:160])}"
                    f"{_failed_checks(c, questions)}</li>" for c in chain)
    return f'<div class="path"><b>how the best prompt was found</b><ol>{steps}</ol></div>'


def _section(part: IntentPart, images: _Images) -> str:
    o = part.outcome
    anchor = html.escape(o.intent_id)
    if o.status != "done" or o.search is None:
        return (f'<div class="intent" id="{anchor}"><h3>{anchor}</h3>'
                f'<p class="failed">{html.escape(o.error or o.status)}</p></div>')
    s, b = o.search, o.baseline
    by_id = {c.id: c for c in part.lineage}
    baseline_fig = (
        f'<figure>{images.img(b.best_image, "baseline best image", thumb=True)}'
        f'<figcaption><b>best-of-{b.counts.images} baseline {_score(b.best_score)}</b><br>{html.escape(o.intent)}'
        f'{_failed_checks(by_id.get(b.best_id or ""), o.checks)}</figcaption></figure>'
        if b is not None else '<figure><figcaption class="muted">no baseline for this intent</figcaption></figure>'
    )
    held = "".join(f" · held-out {html.escape(k)} {_delta(v)}" for k, v in o.held_out_improvement.items())
    return (
        f'<div class="intent" id="{anchor}"><h3>{anchor}: {html.escape(o.intent)}</h3>'
        f'<p class="muted">improvement {_delta(o.improvement)}{held}</p><div class="pair">'
        f'<figure>{images.img(s.best_image, "best image", thumb=True)}'
        f'<figcaption><b>search best {_score(s.best_score)}</b><br>{html.escape(s.best_prompt or "")}'
        f'{_failed_checks(by_id.get(s.best_id or ""), o.checks)}</figcaption></figure>{baseline_fig}'
        f'<figure>{_chart(s.best_score_per_round, b.best_score if b else None)}'
        f'<figcaption>best score per round</figcaption></figure></div>{_path(part.lineage, s.best_id, o.checks)}'
        f'<details><summary>lineage ({s.counts.images} images; checks: {html.escape("; ".join(o.checks)[:300])})'
        f'</summary>{_tree(images, part.lineage, s.best_id)}</details></div>'
    )


def _row(part: IntentPart, href: str) -> str:
    o = part.outcome
    s, b = o.search, o.baseline
    stop = s.stop_reason if s else (o.error or o.status)
    return (f'<tr><td><a href="{html.escape(href)}#{html.escape(o.intent_id)}">{html.escape(o.intent_id)}</a></td>'
            f'<td>{html.escape(o.intent[:80])}</td><td>{o.status}</td><td>{_score(s.best_score if s else None)}</td>'
            f'<td>{_score(b.best_score if b else None)}</td><td>{_delta(o.improvement)}</td><td>{o.images}</td>'
            f'<td>{s.rounds if s else "–"}</td><td>{html.escape(stop[:60])}</td></tr>')


def _summary(summary: CampaignSummary, manifest: Manifest) -> str:
    held = "".join(f"<li>held-out <b>{html.escape(k)}</b>: {_paired(v)}</li>" for k, v in summary.held_out.items())
    flags = (f'<li class="neg">reward hacking suspected on: {html.escape(", ".join(summary.reward_hacking_suspected))}'
             "</li>" if summary.reward_hacking_suspected else "")
    costs = "".join(
        f"<li>{name}: {c.images} images, {c.llm_calls} LLM calls, {c.prompt_tokens + c.completion_tokens} tokens</li>"
        for name, c in (("search", summary.search_costs), ("baseline", summary.baseline_costs))
    )
    return (f'<p class="muted">{summary.intents_finished} of {summary.intents_total} intents finished '
            f'({summary.intents_rejected} rejected) · baseline: {html.escape(manifest.baseline)} · '
            f'models: {html.escape(manifest.models.describe())}</p>'
            f"<ul><li>improvement over the best-of-N baseline at equal budget: {_paired(summary.improvement)}</li>"
            f"{held}{flags}<li>mean best score {_score(summary.mean_best_score)}</li>{costs}</ul>")


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


_TABLE_HEAD = ("<table><tr><th>intent</th><th>text</th><th>status</th><th>best</th><th>baseline</th><th>Δ</th>"
               "<th>images</th><th>rounds</th><th>stop</th></tr>")


def write_report(store: CampaignStore, out_name: str = "report.html") -> str:
    """Render the campaign in ``store`` to ``<campaign>/report.html`` (and ``report/page-*.html`` for large
    campaigns); returns the path of ``report.html``. Reads each part once, in campaign order."""
    manifest = store.read_manifest()
    if manifest is None:
        raise FileNotFoundError(f"{store.uri} holds no campaign (no manifest.json)")
    embed = manifest.intents <= EMBED_UP_TO
    thumbnails = max(manifest.search.width, manifest.search.height) > THUMB_PX
    title = f"promptbeam · {manifest.id}"
    tally = CampaignTally(manifest.intents)
    rows: list[str] = []
    if embed:
        images = _Images(store, embed=True, prefix="", thumbnails=False)
        sections = []
        for part in store.iter_parts(manifest.intent_ids):
            tally.fold(part.outcome)
            rows.append(_row(part, ""))
            sections.append(_section(part, images))
        details = "".join(sections)
    else:
        images = _Images(store, embed=False, prefix="../", thumbnails=thumbnails)
        store.fs.makedirs(store.path("report"), exist_ok=True)
        page: list[str] = []
        n_pages = -(-manifest.intents // PAGE_SIZE)

        def flush(number: int) -> None:
            nav = (f'<nav><a href="../{out_name}">index</a>'
                   + (f'<a href="page-{number - 1:04d}.html">previous</a>' if number > 1 else "")
                   + (f'<a href="page-{number + 1:04d}.html">next</a>' if number < n_pages else "") + "</nav>")
            body = f"<h1>{html.escape(manifest.id)} · page {number}</h1>{nav}{''.join(page)}{nav}"
            with store.fs.open(store.path(f"report/page-{number:04d}.html"), "wb") as f:
                f.write(_page(f"{title} · page {number}", body).encode())
            page.clear()

        count = 0
        for part in store.iter_parts(manifest.intent_ids):
            number = count // PAGE_SIZE + 1
            tally.fold(part.outcome)
            rows.append(_row(part, f"report/page-{number:04d}.html"))
            page.append(_section(part, images))
            count += 1
            if count % PAGE_SIZE == 0:
                flush(number)
        if page:
            flush(count // PAGE_SIZE + 1)
        details = f'<p class="muted">images and lineage: {-(-count // PAGE_SIZE)} pages under report/</p>'
    body = (f"<h1>promptbeam campaign {html.escape(manifest.id)}</h1>{_summary(tally.summary(), manifest)}"
            f"{_TABLE_HEAD}{''.join(rows)}</table>{details}")
    path = store.path(out_name)
    with store.fs.open(path, "wb") as f:
        f.write(_page(title, body).encode())
    return path
