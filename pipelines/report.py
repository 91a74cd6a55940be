"""A self-contained HTML report of a campaign: best image next to the baseline's, lineage tree, score per round."""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from typing import Any

from pipelines.store import CampaignStore

EMBED_LINEAGE_IMAGES_UP_TO = 50
"""Campaigns with more intents link lineage images (images/...) instead of embedding them, to keep the file small."""

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
"""


def _img_src(store: CampaignStore, ref: str | None, embed: bool) -> str:
    if not ref:
        return ""
    if not embed:
        return html.escape(ref)
    try:
        png = store.read_image(ref.split("/", 1)[1])
    except (FileNotFoundError, IndexError):
        return ""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _score(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


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


def _tree(store, lineage: list[dict[str, Any]], best_id: str | None, embed: bool) -> str:
    children: dict[str | None, list[dict]] = defaultdict(list)
    for c in lineage:
        if c["mode"] == "beam":
            children[c["parent_id"]].append(c)

    def render(parent: str | None) -> str:
        items = []
        for c in children.get(parent, []):
            cls = "failed" if c["status"] != "scored" else ("best" if c["id"] == best_id else "")
            img = f'<img src="{_img_src(store, c.get("image"), embed)}" alt="">' if c.get("image") else ""
            err = f' <span class="failed">({html.escape(c["error"][:80])})</span>' if c.get("error") else ""
            items.append(f'<li class="{cls}">{img}r{c["round"]} · {_score(c.get("score"))} · seed {c["seed"]} · '
                         f'{html.escape(c["prompt"][:160])}{err}{render(c["id"])}</li>')
        return f'<ul class="tree">{"".join(items)}</ul>' if items else ""

    return render(None)


def write_report(store: CampaignStore, out_name: str = "report.html") -> str:
    """Render the campaign in ``store`` to ``<campaign>/report.html``; returns its path."""
    manifest = store.read_manifest() or {}
    done = store.done_intents()  # one listing, not one per intent
    order = manifest.get("intent_ids") or sorted(done)
    parts = [(i, store.read_part(i)) for i in order if i in done]
    embed_lineage = len(parts) <= EMBED_LINEAGE_IMAGES_UP_TO
    rows, sections = [], []
    improvements = [p["result"]["improvement"] for _, p in parts if p["result"].get("improvement") is not None]
    for intent_id, part in parts:
        r = part["result"]
        imp = r.get("improvement")
        imp_html = "–" if imp is None else f'<span class="{"pos" if imp >= 0 else "neg"}">{imp:+.3f}</span>'
        rows.append(f'<tr><td><a href="#{html.escape(intent_id)}">{html.escape(intent_id)}</a></td>'
                    f'<td>{html.escape(r["intent"][:80])}</td><td>{r["status"]}</td><td>{_score(r.get("best_score"))}</td>'
                    f'<td>{_score(r.get("baseline_best_score"))}</td><td>{imp_html}</td><td>{r.get("images", 0)}</td>'
                    f'<td>{r.get("rounds", "–")}</td><td>{r.get("stop_reason", r.get("error", ""))}</td></tr>')
        if r["status"] != "done":
            sections.append(f'<div class="intent" id="{html.escape(intent_id)}"><h3>{html.escape(intent_id)}</h3>'
                            f'<p class="failed">{html.escape(r.get("error", r["status"]))}</p></div>')
            continue
        best_id = next((c["id"] for c in part["lineage"] if c["mode"] == "beam" and c.get("image") == r["best_image"]),
                       None)
        sections.append(
            f'<div class="intent" id="{html.escape(intent_id)}"><h3>{html.escape(intent_id)}: '
            f'{html.escape(r["intent"])}</h3><div class="pair">'
            f'<figure><img src="{_img_src(store, r.get("best_image"), True)}" alt="best image">'
            f'<figcaption><b>search best {_score(r.get("best_score"))}</b><br>{html.escape(r.get("best_prompt") or "")}'
            f'</figcaption></figure>'
            f'<figure><img src="{_img_src(store, r.get("baseline_image"), True)}" alt="baseline best image">'
            f'<figcaption><b>best-of-{r.get("baseline_images", 0)} baseline {_score(r.get("baseline_best_score"))}'
            f'</b><br>{html.escape(r["intent"])}</figcaption></figure>'
            f'<figure>{_chart(r.get("best_score_per_round") or [], r.get("baseline_best_score"))}'
            f'<figcaption>best score per round</figcaption></figure></div>'
            f'<details><summary>lineage ({r.get("images", 0)} images; checks: '
            f'{html.escape("; ".join(r.get("checks", []))[:300])})</summary>'
            f'{_tree(store, part["lineage"], best_id, embed_lineage)}</details></div>'
        )
    mean_imp = sum(improvements) / len(improvements) if improvements else None
    summary = (f'{len(parts)} of {manifest.get("intents", len(parts))} intents finished · '
               f'mean improvement over the baseline at equal budget: {_score(mean_imp)} · '
               f'models: {html.escape(json.dumps(manifest.get("models", {})))}')
    doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>promptbeam · '
           f'{html.escape(str(manifest.get("id", "campaign")))}</title><style>{_CSS}</style></head><body>'
           f'<h1>promptbeam campaign {html.escape(str(manifest.get("id", "")))}</h1><p class="muted">{summary}</p>'
           f'<table><tr><th>intent</th><th>text</th><th>status</th><th>best</th><th>baseline</th><th>Δ</th>'
           f'<th>images</th><th>rounds</th><th>stop</th></tr>{"".join(rows)}</table>{"".join(sections)}</body></html>')
    path = store.path(out_name)
    with store.fs.open(path, "wb") as f:
        f.write(doc.encode())
    return path
