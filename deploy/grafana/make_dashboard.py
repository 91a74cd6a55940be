"""Writes deploy/grafana/dashboards/promptbeam.json (Grafana dashboard schema 39).

Kept as code so every panel uses the names in serving/metrics.py; tests/test_metrics.py checks the JSON against them
and runs every expression against a real Prometheus. Run: .venv/bin/python deploy/grafana/make_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path

from serving import metrics as m

C = '{campaign=~"$campaign"}'
RI = "$__rate_interval"


def e(spec, suffix: str = "") -> str:
    return m.exported(spec, suffix)


PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    # (title, unit, [(expr, legend)])
    ("Images/s per campaign", "short", [
        (f"sum by (campaign) (rate({e(m.IMAGES_RENDERED)}{C}[{RI}]))", "{{campaign}}"),
    ]),
    ("Progress (intents finished / total)", "percentunit", [
        (f"sum by (campaign) ({e(m.INTENTS_FINISHED)}{C}) / max by (campaign) ({e(m.INTENTS_TOTAL)}{C})",
         "{{campaign}}"),
    ]),
    ("ETA (backlog / finish rate)", "s", [
        (f"max by (campaign) ({e(m.BACKLOG)}{C}) / clamp_min(sum by (campaign) "
         f"(rate({e(m.INTENTS_FINISHED)}{C}[{RI}])), 1e-6)", "{{campaign}}"),
    ]),
    ("Best score per round (mean over intents)", "percentunit", [
        (f"sum by (round) ({e(m.BEST_SCORE_BY_ROUND, '_sum')}{C}) / "
         f"sum by (round) ({e(m.BEST_SCORE_BY_ROUND, '_count')}{C})", "round {{round}}"),
    ]),
    ("Improvement over best-of-N baseline (equal budget)", "short", [
        (f"max by (campaign) ({e(m.IMPROVEMENT)}{C})", "mean Δ {{campaign}}"),
        (f"max by (campaign, bound) ({e(m.IMPROVEMENT_CI)}{C})", "95% CI {{bound}} {{campaign}}"),
        (f"sum by (outcome) ({e(m.COMPARED)}{C})", "{{outcome}}"),
    ]),
    ("Candidates by status", "short", [
        (f"sum by (status) (rate({e(m.CANDIDATES)}{C}[{RI}]))", "{{status}}"),
        (f"sum by (status) (rate({e(m.INTENTS_FINISHED)}{C}[{RI}]))", "intents {{status}}"),
        (f"sum(rate({e(m.ROUNDS)}{C}[{RI}]))", "rounds/s"),
        (f"sum(rate({e(m.INTENTS_SUBMITTED)}{C}[{RI}]))", "submitted/s"),
    ]),
    ("Images and render-seconds per finished intent", "short", [
        (f"sum(rate({e(m.IMAGES_PER_INTENT, '_sum')}{C}[{RI}])) / sum(rate({e(m.IMAGES_PER_INTENT, '_count')}{C}[{RI}]))",
         "images/intent"),
        (f"sum(rate({e(m.RENDER_SECONDS_PER_INTENT, '_sum')}{C}[{RI}])) / "
         f"sum(rate({e(m.RENDER_SECONDS_PER_INTENT, '_count')}{C}[{RI}]))", "accelerator-s/intent"),
    ]),
    ("Render batch size", "short", [
        (f"sum(rate({e(m.RENDER_BATCH_SIZE, '_sum')}[{RI}])) / sum(rate({e(m.RENDER_BATCH_SIZE, '_count')}[{RI}]))",
         "mean"),
        (f"histogram_quantile(0.9, sum by (le) (rate({e(m.RENDER_BATCH_SIZE, '_bucket')}[{RI}])))", "p90"),
    ]),
    ("Render and LLM latency p50 / p99", "s", [
        (f"histogram_quantile(0.5, sum by (le) (rate({e(m.RENDER_LATENCY, '_bucket')}[{RI}])))", "render p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate({e(m.RENDER_LATENCY, '_bucket')}[{RI}])))", "render p99"),
        (f"histogram_quantile(0.5, sum by (kind, le) (rate({e(m.LLM_LATENCY, '_bucket')}[{RI}])))", "{{kind}} p50"),
        (f"histogram_quantile(0.99, sum by (kind, le) (rate({e(m.LLM_LATENCY, '_bucket')}[{RI}])))", "{{kind}} p99"),
    ]),
    ("Queue depth per deployment", "short", [
        ("sum by (deployment) (ray_serve_deployment_queued_queries)", "queued {{deployment}}"),
        ("sum by (deployment) (ray_serve_num_ongoing_requests_at_replicas)", "ongoing {{deployment}}"),
    ]),
    ("Replicas: target vs running", "short", [
        ("max by (deployment) (ray_serve_autoscaling_target_replicas)", "target {{deployment}}"),
        ("sum by (deployment) (ray_serve_deployment_replica_healthy)", "running {{deployment}}"),
    ]),
    ("Latency p50 / p99 per deployment (Serve)", "ms", [
        (f"histogram_quantile(0.5, sum by (deployment, le) (rate(ray_serve_deployment_processing_latency_ms_bucket[{RI}])))",
         "p50 {{deployment}}"),
        (f"histogram_quantile(0.99, sum by (deployment, le) (rate(ray_serve_deployment_processing_latency_ms_bucket[{RI}])))",
         "p99 {{deployment}}"),
    ]),
    ("LLM tokens/s", "short", [
        (f"sum by (type) (rate({e(m.LLM_TOKENS)}[{RI}]))", "{{type}} (promptbeam)"),
        (f"sum(rate(ray_vllm_generation_tokens_total[{RI}]))", "generated (vLLM)"),
        (f"sum(rate(ray_vllm_prompt_tokens_total[{RI}]))", "prompt (vLLM)"),
    ]),
    ("GPU utilisation and memory", "short", [
        # On CPU-only nodes Ray exports no GPU series: the `or vector(0)` fallback draws 0 instead of "No data".
        ("avg(ray_node_gpus_utilization) or on() vector(0)", "GPU utilisation %"),
        ("sum(ray_node_gram_used) or on() vector(0)", "GPU memory used (MB)"),
    ]),
]


def dashboard() -> dict:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [
                {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                for j, (expr, legend) in enumerate(targets)
            ],
        })
    return {
        "uid": "promptbeam",
        "title": "promptbeam campaigns",
        "description": "Campaign throughput, search quality and Serve deployments. Metric names: serving/metrics.py.",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "tags": ["promptbeam", "ray-serve", "vllm"],
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "browser",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
             "current": {}, "hide": 0},
            {"name": "campaign", "type": "query", "label": "campaign",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": f"label_values({e(m.INTENTS_TOTAL)}, campaign)", "refId": "campaigns"},
             "definition": f"label_values({e(m.INTENTS_TOTAL)}, campaign)",
             "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).parent / "dashboards" / "promptbeam.json"
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
