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


def zero_filled(numerator: str, denominator: str) -> str:
    """numerator / denominator where a missing numerator counts as 0 for every series of the denominator. Prometheus
    exports a labelled counter only after its first increment, so "no failures yet" is an absent series, not 0."""
    return f"({numerator} or 0 * {denominator}) / {denominator}"


FAILED = f'{{campaign=~"$campaign",status="failed"}}'
ETA_WINDOW = "30m"
"""The finish rate behind the ETA: long enough that a quiet spell (a slow round, a retried batch) keeps the estimate
instead of dividing by ~0; when nothing finished in this window the panel shows no value rather than a spike."""

# (title, unit, [(expr, legend)], description)
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Images/s per campaign (as render calls return)", "short", [
        (f"sum by (campaign) (rate({e(m.IMAGES_FINISHED)}{C}[{RI}]))", "{{campaign}}"),
        (f"sum(rate({e(m.RENDER_BATCH_SIZE, '_sum')}[{RI}]))", "all campaigns (pipeline calls)"),
    ], "Counted as each render call returns (promptbeam_images_finished) and as each pipeline call finishes (the "
       "batch-size histogram's sum); promptbeam_images_rendered, counted at intent commit, is in 'Images by mode'."),
    ("Progress (1 - backlog / intents)", "percentunit", [
        (f"1 - max by (campaign) ({e(m.BACKLOG)}{C}) / max by (campaign) ({e(m.INTENTS_TOTAL)}{C})", "{{campaign}}"),
    ], "Resumed intents count as finished; failed ones too (see 'Error rates')."),
    ("ETA (backlog / finish rate over 30m)", "s", [
        (f"max by (campaign) ({e(m.BACKLOG)}{C}) / (sum by (campaign) "
         f"(rate({e(m.INTENTS_FINISHED)}{C}[{ETA_WINDOW}])) > 0)", "{{campaign}}"),
    ], "Backlog over the intents finished per second in the last 30 minutes; no value when none finished in 30m."),
    ("Campaign budget: images spent / budget", "short", [
        (f"max by (campaign) ({e(m.BUDGET_SPENT)}{C})", "spent {{campaign}}"),
        (f"max by (campaign) ({e(m.BUDGET_IMAGES)}{C})", "budget {{campaign}}"),
    ], "Campaigns with budget_images: search-arm images granted so far (earlier runs included) against the budget; "
       "never above it. Remaining = budget - spent."),
    ("Campaign budget: device seconds spent / budget", "s", [
        (f"max by (campaign) ({e(m.BUDGET_SPENT_DEVICE_SECONDS)}{C})", "spent {{campaign}}"),
        (f"max by (campaign) ({e(m.BUDGET_DEVICE_SECONDS)}{C})", "budget {{campaign}}"),
    ], "Campaigns with budget_device_seconds: renderer seconds charged so far (rounds rendered at what they took, "
       "rounds in flight at their reservation, the probes) against the budget."),
    ("Campaign budget: projected finish", "s", [
        (f"max by (campaign) ({e(m.PROJECTED_FINISH)}{C})", "{{campaign}}"),
    ], "Seconds until a budgeted campaign ends at this run's rates: the sooner of the remaining budget at its spend "
       "rate and the unfinished intents at their finish rate (the status's projected_finish_s); 0 when finished."),
    ("Images by mode (at intent commit)", "short", [
        (f"sum by (campaign, mode) (rate({e(m.IMAGES_RENDERED)}{C}[{RI}]))", "{{mode}} {{campaign}}"),
    ], "Search (beam) versus baseline (best_of_n) images, counted when each intent commits."),
    ("Best score per round (mean over intents)", "percentunit", [
        (f"sum by (round) ({e(m.BEST_SCORE_BY_ROUND, '_sum')}{C}) / "
         f"sum by (round) ({e(m.BEST_SCORE_BY_ROUND, '_count')}{C})", "round {{round}}"),
    ], ""),
    ("Improvement over best-of-N baseline (equal budget)", "short", [
        (f"max by (campaign) ({e(m.IMPROVEMENT)}{C})", "mean Δ {{campaign}}"),
        (f"max by (campaign, bound) ({e(m.IMPROVEMENT_CI)}{C})", "95% CI {{bound}} {{campaign}}"),
        (f"sum by (outcome) ({e(m.COMPARED)}{C})", "{{outcome}}"),
    ], ""),
    ("Candidates, intents and rounds per second", "short", [
        (f"sum by (status) (rate({e(m.CANDIDATES)}{C}[{RI}]))", "{{status}}"),
        (f"sum by (status) (rate({e(m.INTENTS_FINISHED)}{C}[{RI}]))", "intents {{status}}"),
        (f"sum(rate({e(m.ROUNDS)}{C}[{RI}]))", "rounds/s"),
        (f"sum(rate({e(m.INTENTS_SUBMITTED)}{C}[{RI}]))", "submitted/s"),
    ], ""),
    ("Error rates", "percentunit", [
        (zero_filled(f"sum by (campaign) (rate({e(m.INTENTS_FINISHED)}{FAILED}[{RI}]))",
                     f"sum by (campaign) (rate({e(m.INTENTS_FINISHED)}{C}[{RI}]))"), "intents failed {{campaign}}"),
        (zero_filled(f"sum by (campaign) (rate({e(m.CANDIDATES)}{FAILED}[{RI}]))",
                     f"sum by (campaign) (rate({e(m.CANDIDATES)}{C}[{RI}]))"), "candidates failed {{campaign}}"),
        (zero_filled(f"sum by (deployment) (rate(ray_serve_deployment_error_counter_total[{RI}]))",
                     f"sum by (deployment) (rate(ray_serve_deployment_request_counter_total[{RI}]))"),
         "requests failed {{deployment}}"),
        (f"sum by (error_code) (rate(ray_serve_num_http_error_requests_total[{RI}]))", "HTTP {{error_code}} /s"),
    ], "Fractions of intents, candidates and deployment requests that failed (0 until the first failure); HTTP "
       "errors (4xx refusals included) per second at Serve's proxy."),
    ("Images and render-seconds per finished intent", "short", [
        (f"sum(rate({e(m.IMAGES_PER_INTENT, '_sum')}{C}[{RI}])) / sum(rate({e(m.IMAGES_PER_INTENT, '_count')}{C}[{RI}]))",
         "images/intent"),
        (f"sum(rate({e(m.RENDER_SECONDS_PER_INTENT, '_sum')}{C}[{RI}])) / "
         f"sum(rate({e(m.RENDER_SECONDS_PER_INTENT, '_count')}{C}[{RI}]))", "accelerator-s/intent"),
    ], ""),
    ("Renderer busy fraction per replica", "percentunit", [
        (f"sum by (replica) (rate({e(m.RENDERER_BUSY_SECONDS)}[{RI}]))", "{{replica}}"),
    ], "Seconds inside pipeline calls per second of wall time: below 1 the renderer waits for work."),
    ("Render batch size", "short", [
        (f"sum(rate({e(m.RENDER_BATCH_SIZE, '_sum')}[{RI}])) / sum(rate({e(m.RENDER_BATCH_SIZE, '_count')}[{RI}]))",
         "mean"),
        (f"histogram_quantile(0.9, sum by (le) (rate({e(m.RENDER_BATCH_SIZE, '_bucket')}[{RI}])))", "p90"),
    ], ""),
    ("Serve batch queue and utilisation (@serve.batch)", "short", [
        # Ray sets this gauge only while a batch is being formed; 0 where no replica has exported it yet
        ("max by (deployment, function_name) (ray_serve_batch_queue_length) or on() vector(0)", "queued {{deployment}}"),
        (f"sum by (deployment) (rate(ray_serve_batch_utilization_percent_sum[{RI}])) / "
         f"sum by (deployment) (rate(ray_serve_batch_utilization_percent_count[{RI}]))", "utilisation % {{deployment}}"),
    ], "Ray Serve's own batcher metrics: requests waiting for a batch, and batch size as % of max_batch_size."),
    ("Render and LLM latency p50 / p99", "s", [
        (f"histogram_quantile(0.5, sum by (le) (rate({e(m.RENDER_LATENCY, '_bucket')}[{RI}])))", "render p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate({e(m.RENDER_LATENCY, '_bucket')}[{RI}])))", "render p99"),
        (f"histogram_quantile(0.5, sum by (kind, le) (rate({e(m.LLM_LATENCY, '_bucket')}[{RI}])))", "{{kind}} p50"),
        (f"histogram_quantile(0.99, sum by (kind, le) (rate({e(m.LLM_LATENCY, '_bucket')}[{RI}])))", "{{kind}} p99"),
    ], ""),
    ("Queue depth per deployment", "short", [
        ("sum by (deployment) (ray_serve_deployment_queued_queries)", "queued {{deployment}}"),
        ("sum by (deployment) (ray_serve_num_ongoing_requests_at_replicas)", "ongoing {{deployment}}"),
    ], ""),
    ("Replicas: target vs running", "short", [
        ("max by (deployment) (ray_serve_autoscaling_target_replicas)", "target {{deployment}}"),
        ("sum by (deployment) (ray_serve_deployment_replica_healthy)", "running {{deployment}}"),
    ], ""),
    ("Latency p50 / p99 per deployment (Serve)", "ms", [
        (f"histogram_quantile(0.5, sum by (deployment, le) (rate(ray_serve_deployment_processing_latency_ms_bucket[{RI}])))",
         "p50 {{deployment}}"),
        (f"histogram_quantile(0.99, sum by (deployment, le) (rate(ray_serve_deployment_processing_latency_ms_bucket[{RI}])))",
         "p99 {{deployment}}"),
    ], ""),
    ("LLM tokens/s", "short", [
        (f"sum by (type) (rate({e(m.LLM_TOKENS)}[{RI}]))", "{{type}} (promptbeam)"),
        (f"sum(rate(ray_vllm_generation_tokens_total[{RI}]))", "generated (vLLM)"),
        (f"sum(rate(ray_vllm_prompt_tokens_total[{RI}]))", "prompt (vLLM)"),
    ], ""),
    ("vLLM requests waiting / running", "short", [
        ("sum by (model_name) (ray_vllm_num_requests_waiting)", "waiting {{model_name}}"),
        ("sum by (model_name) (ray_vllm_num_requests_running)", "running {{model_name}}"),
    ], "vLLM's scheduler queue (the project's LLM deployment; external endpoints report on their own servers)."),
    ("vLLM KV-cache use", "percentunit", [
        ("max by (model_name, instance) (ray_vllm_kv_cache_usage_perc)", "{{model_name}} {{instance}}"),
    ], "Fraction of KV-cache blocks in use (1 = full; requests then wait or are preempted)."),
    ("vLLM time to first token p50 / p99", "s", [
        (f"histogram_quantile(0.5, sum by (le) (rate(ray_vllm_time_to_first_token_seconds_bucket[{RI}])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(ray_vllm_time_to_first_token_seconds_bucket[{RI}])))", "p99"),
    ], ""),
    # Event counters below exist only after their first event (a withheld image, a retry). The queries are the raw
    # series (tests/test_metrics.py runs each against Prometheus, so a metric nobody records any more fails there);
    # the panels draw 0 where a query has no data yet (EVENT_PANELS: Grafana's noValue), not "No data".
    # Output safety runs where the preset enables it (gpu, sdxl, flux-schnell).
    ("Output safety: images stamped / withheld per second", "short", [
        (f"sum(rate({e(m.IMAGES_STAMPED)}[{RI}]))", "stamped"),
        (f"sum(rate({e(m.IMAGES_WITHHELD)}[{RI}]))", "images withheld"),
        (f"sum by (campaign) (rate({e(m.REWRITES_BLOCKED)}{C}[{RI}]))", "rewrites blocked {{campaign}}"),
        (f"sum by (campaign) (rate({e(m.MODERATION_BLOCKED)}{C}[{RI}]))", "intents refused by moderation {{campaign}}"),
    ], "Images checked by the NSFW classifier and stamped with provenance; images the output check withheld (kept out "
       "of results and the beam); rewrites the output filter dropped before rendering; intents the input moderation "
       "refused."),
    ("Output check: NSFW score p90 and seconds per image", "short", [
        (f"histogram_quantile(0.9, sum by (le) (rate({e(m.NSFW_SCORE, '_bucket')}[{RI}])))", "NSFW score p90"),
        (f"histogram_quantile(0.5, sum by (le) (rate({e(m.OUTPUT_GUARD_SECONDS, '_bucket')}[{RI}])))",
         "check + stamp seconds p50"),
    ], "Runs in the diffusion replica's encoder threads, off the accelerator's path."),
    ("Recovery: retries, replica starts, campaign resumes", "short", [
        (f"sum by (kind, error) (increase({e(m.RETRIES)}[{RI}]))", "retries {{kind}} {{error}}"),
        (f"sum by (deployment) (increase(ray_serve_replica_startup_latency_ms_count[{RI}]))",
         "replica starts {{deployment}}"),
        (f"sum by (campaign) (increase({e(m.CAMPAIGN_RESUMES)}{C}[{RI}]))", "resumes {{campaign}}"),
    ], "Render and chat calls retried with backoff (replica died, back-pressure, timeout; an intent fails only after "
       "its retries); replicas started per deployment after the first scrape (restarts after a crash, and scale-ups; "
       "Ray Serve's controller counts them); campaign runs that continued an earlier run (resubmitted, or resumed by "
       "a new ingress)."),
    ("Campaign memory: lessons learned / applied", "short", [
        (f"sum by (campaign) (increase({e(m.LESSONS_LEARNED)}{C}[{RI}]))", "learned {{campaign}}"),
        (f"sum by (campaign) (increase({e(m.LESSONS_APPLIED)}{C}[{RI}]))", "applied {{campaign}}"),
        (f"sum by (campaign) ({e(m.LESSONS_SUPPORTED)}{C})", "supported now {{campaign}}"),
    ], "Campaigns with memory on (search.memory.enabled): edits that raised one intent's score and became "
       "supported lessons; prompts made by applying them to later intents; lessons supported now. The campaign's "
       "lessons with their evidence: GET /v1/campaigns/<name>/lessons and the report."),
    # On CPU-only nodes Ray exports no GPU series: the `or on() vector(0)` fallback draws 0 instead of "No data"
    # (tests/test_metrics.py checks that the raw series is absent there and the fallback answers).
    ("GPU utilisation per instance and GPU", "percent", [
        ("max by (instance, GpuIndex) (ray_node_gpus_utilization) or on() vector(0)", "{{instance}} gpu {{GpuIndex}}"),
    ], "Ray's node metrics, one series per node and GPU index (0 on clusters without GPUs)."),
    ("GPU memory used per instance and GPU", "bytes", [
        ("max by (instance, GpuIndex) (ray_node_gram_used) * 1024 * 1024 or on() vector(0)",
         "{{instance}} gpu {{GpuIndex}}"),
    ], "Ray reports GPU memory in MiB; shown in bytes (0 on clusters without GPUs)."),
]


EVENT_PANELS = ("Output safety", "Output check", "Recovery", "Campaign memory")
"""Panels of event counters: Grafana draws 0 where their queries have no data yet (fieldConfig noValue)."""


def dashboard() -> dict:
    panels = []
    for i, (title, unit, targets, description) in enumerate(PANELS):
        defaults = {"unit": unit, **({"noValue": "0"} if title.startswith(EVENT_PANELS) else {})}
        panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": defaults, "overrides": []},
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
