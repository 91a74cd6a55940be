"""Every promptbeam metric, in one module: fixed ``promptbeam_`` prefix, fixed label sets, explicit buckets.

Metrics are recorded with ``ray.serve.metrics`` inside Serve replicas (the campaign ingress and the two model
deployments). Ray's metrics agent exports them on each node's metrics port with its own namespace in front:
``promptbeam_images_rendered`` is scraped as ``ray_promptbeam_images_rendered_total`` (``_total``/``_bucket``/... per
Prometheus type). :func:`exported` gives that name; the Grafana dashboard queries exactly these names and
``tests/test_metrics.py`` proves it. Ray Serve's own ``ray_serve_*`` series (replicas, queue, latency) and vLLM's engine
series (``ray_vllm_*``, through vLLM's Ray stat logger) are used as they are, not duplicated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

EXPORT_NAMESPACE = "ray_"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | gauge | histogram
    description: str
    tag_keys: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# -- campaign level (ingress / runner) ---------------------------------------------------------------------------------
INTENTS_SUBMITTED = MetricSpec("promptbeam_intents_submitted", "counter", "Intents submitted", ("campaign",))
INTENTS_FINISHED = MetricSpec(
    "promptbeam_intents_finished", "counter", "Intents finished, by status (done, rejected, failed)",
    ("campaign", "status"),
)
CANDIDATES = MetricSpec(
    "promptbeam_candidates", "counter", "Search candidates, by status (scored, failed, withheld)", ("campaign", "status")
)
IMAGES_RENDERED = MetricSpec(
    "promptbeam_images_rendered", "counter", "Images rendered, by mode (beam, best_of_n)", ("campaign", "mode")
)
ROUNDS = MetricSpec("promptbeam_rounds", "counter", "Search rounds run", ("campaign",))
BEST_SCORE_BY_ROUND = MetricSpec(
    "promptbeam_best_score_by_round", "histogram", "Best score reached in each round of each intent",
    ("campaign", "round"), SCORE_BUCKETS,
)
IMPROVEMENT = MetricSpec(
    "promptbeam_campaign_mean_improvement", "gauge",
    "Mean over finished intents of (best search score - best-of-N baseline score at equal budget)", ("campaign",),
)
IMPROVEMENT_CI = MetricSpec(
    "promptbeam_campaign_improvement_ci", "gauge",
    "95% bootstrap interval of the mean improvement over the baseline, by bound (low, high)", ("campaign", "bound"),
)
COMPARED = MetricSpec(
    "promptbeam_intents_compared", "counter", "Intents whose search beat, tied or lost to the baseline",
    ("campaign", "outcome"),
)
IMAGES_PER_INTENT = MetricSpec(
    "promptbeam_images_per_intent", "histogram", "Images one intent used (search + baseline)", ("campaign",),
    COUNT_BUCKETS,
)
RENDER_SECONDS_PER_INTENT = MetricSpec(
    "promptbeam_render_seconds_per_intent", "histogram",
    "Accelerator-seconds one intent used: each image's share of its pipeline call", ("campaign",), SECONDS_BUCKETS,
)
# Gauges are re-published every few seconds while a campaign runs (CampaignRunner._publish_gauges): Ray exports a
# gauge's value only after it was set.
BACKLOG = MetricSpec("promptbeam_campaign_backlog", "gauge", "Intents not finished yet", ("campaign",))
INTENTS_TOTAL = MetricSpec("promptbeam_campaign_intents", "gauge", "Intents in the campaign", ("campaign",))

# -- deployment level (model replicas; Serve adds deployment/replica/application tags) -----------------------------------
RENDER_BATCH_SIZE = MetricSpec(
    "promptbeam_render_batch_size", "histogram", "Images per pipeline call", (), COUNT_BUCKETS
)
RENDER_LATENCY = MetricSpec(
    "promptbeam_render_batch_seconds", "histogram", "Wall time of one pipeline call", (), SECONDS_BUCKETS
)
LLM_LATENCY = MetricSpec(
    "promptbeam_llm_request_seconds", "histogram", "Wall time of one chat request, by kind", ("kind",),
    SECONDS_BUCKETS,
)
LLM_TOKENS = MetricSpec(
    "promptbeam_llm_tokens", "counter", "Tokens processed, by kind and type (prompt, completion)", ("kind", "type")
)

ALL = [v for v in list(globals().values()) if isinstance(v, MetricSpec)]


def exported(spec: MetricSpec, suffix: str = "") -> str:
    """The series name Prometheus scrapes. ``suffix``: '' for gauges, '_total' for counters, '_bucket'/'_sum'/'_count'
    for histograms."""
    if spec.kind == "counter" and not suffix:
        suffix = "_total"
    return f"{EXPORT_NAMESPACE}{spec.name}{suffix}"


class _Noop:
    def inc(self, *a, **k): ...
    def set(self, *a, **k): ...
    def observe(self, *a, **k): ...


_NOOP = _Noop()


class Metrics:
    """Creates each metric once per process. Outside a Ray worker every metric is a no-op, so engines and the
    runner can record unconditionally (tests, in-process runs). Only real metrics are cached: a process that records
    before ``ray.init`` still gets real metrics afterwards."""

    _cache: dict[str, Any] = {}

    @classmethod
    def get(cls, spec: MetricSpec):
        if spec.name in cls._cache:
            return cls._cache[spec.name]
        try:
            import ray

            if not ray.is_initialized():
                return _NOOP
            from ray.serve import metrics as sm

            if spec.kind == "counter":
                metric = sm.Counter(spec.name, description=spec.description, tag_keys=spec.tag_keys)
            elif spec.kind == "gauge":
                metric = sm.Gauge(spec.name, description=spec.description, tag_keys=spec.tag_keys)
            else:
                metric = sm.Histogram(spec.name, description=spec.description, boundaries=list(spec.buckets),
                                      tag_keys=spec.tag_keys)
        except Exception:  # never fail the request path over a metric (and say so once)
            logger.exception("metric %s unavailable", spec.name)
            metric = _NOOP
        cls._cache[spec.name] = metric
        return metric


def inc(spec: MetricSpec, value: float = 1.0, **tags: str) -> None:
    if value <= 0:  # nothing to count, and Ray's counters raise on 0 (e.g. a resumed campaign with nothing left to do)
        return
    Metrics.get(spec).inc(value, tags=tags or None)


def set_gauge(spec: MetricSpec, value: float, **tags: str) -> None:
    Metrics.get(spec).set(value, tags=tags or None)


def observe(spec: MetricSpec, value: float, **tags: str) -> None:
    Metrics.get(spec).observe(value, tags=tags or None)

# -- appended: renderer utilisation (issue 13) -----------------------------------------------------------------------
# A counter, not a gauge: Prometheus computes the busy fraction per replica as
#   rate(ray_promptbeam_renderer_busy_seconds_total[1m])
# (seconds inside pipeline calls per second of wall time), which stays right across scrapes and replica restarts.
RENDERER_BUSY_SECONDS = MetricSpec(
    "promptbeam_renderer_busy_seconds", "counter",
    "Seconds a diffusion replica spent inside pipeline calls; its rate is the replica's busy fraction",
)
# -- appended: recovery (issue 14) -----------------------------------------------------------------------------------
RETRIES = MetricSpec(
    "promptbeam_retries", "counter",
    "Render or chat calls retried after an infrastructure error (replica died, back-pressure, timeout), by kind "
    "(render, chat) and error class", ("kind", "error"),
)

# -- appended: output safety (issue 14); deployment level, recorded by the diffusion engine's encoder threads ----------
IMAGES_WITHHELD = MetricSpec("promptbeam_images_withheld", "counter", "Rendered images the output check withheld")
IMAGES_STAMPED = MetricSpec(
    "promptbeam_images_stamped", "counter", "Rendered images stamped with provenance (metadata and watermark)"
)
NSFW_SCORE = MetricSpec(
    "promptbeam_nsfw_score", "histogram", "The output check's NSFW score of each rendered image", (), SCORE_BUCKETS
)
OUTPUT_GUARD_SECONDS = MetricSpec(
    "promptbeam_output_guard_seconds", "histogram", "Wall time of the output check and stamp of one image", (),
    SECONDS_BUCKETS,
)
MODERATION_BLOCKED = MetricSpec(
    "promptbeam_moderation_blocked", "counter", "Intents the input moderation refused, by campaign", ("campaign",)
)

# -- appended: images as their render calls return (issue 15) -------------------------------------------------------
# IMAGES_RENDERED is counted when an intent commits (minutes after its images); this one as each render call returns,
# so the dashboard's images/s per campaign moves with the renderer.
IMAGES_FINISHED = MetricSpec(
    "promptbeam_images_finished", "counter", "Images back from the renderer, counted as each render call returns",
    ("campaign",),
)

ALL += [RENDERER_BUSY_SECONDS, IMAGES_FINISHED, RETRIES, IMAGES_WITHHELD, IMAGES_STAMPED, NSFW_SCORE,
        OUTPUT_GUARD_SECONDS, MODERATION_BLOCKED]

# -- appended: recovery and distinct refusals (issues 20, 21) --------------------------------------------------------
# Recovery on the dashboard: retries are RETRIES (the one retry policy counts each one); replica restarts are Ray
# Serve's own series, used as they are (not duplicated): the controller's ray_serve_replica_startup_latency_ms
# histogram counts every replica start per deployment, so its _count rises on each restart (and scale-up).
REWRITES_BLOCKED = MetricSpec(
    "promptbeam_rewrites_blocked", "counter",
    "Rewrites the output filter dropped before rendering (moderation or injection markers), by campaign",
    ("campaign",),
)
CAMPAIGN_RESUMES = MetricSpec(
    "promptbeam_campaign_resumes", "counter",
    "Campaign runs that continued an earlier run of the same campaign (resubmitted, or resumed by a new ingress from "
    "the durable registry); intents finished before are kept, not redone", ("campaign",),
)
ALL += [REWRITES_BLOCKED, CAMPAIGN_RESUMES]

# -- appended: campaign memory (issue 22) ----------------------------------------------------------------------------
LESSONS_LEARNED = MetricSpec(
    "promptbeam_lessons_learned", "counter",
    "Campaign-memory lessons that became supported (an edit that raised an intent's score more often than it lowered "
    "it), by campaign", ("campaign",),
)
LESSONS_APPLIED = MetricSpec(
    "promptbeam_lessons_applied", "counter",
    "Prompts campaign memory made by applying its lessons to another intent's prompt (rendered in the beam if they "
    "fit the budget), by campaign", ("campaign",),
)
LESSONS_SUPPORTED = MetricSpec(
    "promptbeam_lessons_supported", "gauge", "Supported lessons in the campaign's memory now", ("campaign",),
)
ALL += [LESSONS_LEARNED, LESSONS_APPLIED, LESSONS_SUPPORTED]

# -- appended: campaign image budget (issue 30) ----------------------------------------------------------------------
BUDGET_IMAGES = MetricSpec(
    "promptbeam_campaign_budget_images", "gauge",
    "The campaign's image budget for its search arm (CampaignSpec.budget_images); absent without one", ("campaign",),
)
BUDGET_SPENT = MetricSpec(
    "promptbeam_campaign_budget_spent_images", "gauge",
    "Search-arm images the campaign's allocator granted so far, earlier runs included (never above the budget)",
    ("campaign",),
)
PROJECTED_FINISH = MetricSpec(
    "promptbeam_campaign_projected_finish_seconds", "gauge",
    "Seconds until a budgeted campaign ends at this run's rates (the status's projected_finish_s); 0 once every "
    "intent has finished", ("campaign",),
)
BUDGET_DEVICE_SECONDS = MetricSpec(
    "promptbeam_campaign_budget_device_seconds", "gauge",
    "The campaign's device-seconds budget for its search arm (CampaignSpec.budget_device_seconds)", ("campaign",),
)
BUDGET_SPENT_DEVICE_SECONDS = MetricSpec(
    "promptbeam_campaign_budget_spent_device_seconds", "gauge",
    "Device seconds a budgeted campaign has charged so far (rendered rounds, reservations in flight, probes)",
    ("campaign",),
)
ALL += [BUDGET_IMAGES, BUDGET_SPENT, PROJECTED_FINISH, BUDGET_DEVICE_SECONDS, BUDGET_SPENT_DEVICE_SECONDS]
