"""Campaign records on fsspec: a local directory by default, ``s3://``-style URLs on a cluster.

Layout of one campaign::

    manifest.json           Manifest: resolved configs, models, package versions, seeds, the resume fingerprint
    images/<candidate>.png  every rendered image (search and baseline)
    parts/<intent>.json     IntentPart, one per finished intent: its outcome and its lineage
    checkpoints/<intent>.json  SearchCheckpoint after an unfinished intent's last finished round (deleted once done)
    results.jsonl           one IntentOutcome per line   } compiled from parts/ in campaign order when a run ends,
    lineage.jsonl           one LineageRecord per line   } so they never hold duplicates or half-written lines
    status.json             CampaignStatus of the last run that ended (counts and statistics, constant size)
    budget.json             images granted to each intent's search arm, written before each granted round renders
                            (CampaignSpec.budget_images; agents.allocation)
    lessons.json            campaign memory (agents.memory.Lesson list), rewritten after every committed intent
                            when memory is on; a resumed run continues with it
    actions/<intent>/<id>.json  HumanAction: a person's pin, veto, added prompt or accept (agents.steering), written
                            once when posted; the planner applies each at a round boundary, once

Why parts: object stores have no append, and a crash mid-append leaves half a line. A part is written once, atomically
(temp file + rename locally; a single PUT on object stores), and its presence is what "this intent is done" means —
so resuming skips exactly the finished intents and never duplicates a line.

Constructing a store touches nothing; reads never create anything; :meth:`create` makes the folders before a run.

Every write is whole or absent (serving/files.py's one writer: a temp file renamed into place locally, one PUT on
an object store). Each method is one try: a store failure raises :class:`serving.storage.StoreUnavailable` (another
try may succeed: a 5xx, a refused or reset connection, a timeout) or :class:`serving.storage.StoreWriteError` (it
cannot: permission denied, a full or read-only disk), both naming the path. The campaign runs them through
:meth:`CampaignStore.call`: in a worker thread, retried with the project's one policy (serving/retry.py) and the
backoff awaited on the event loop, each retry reported through ``on_retry`` so the status says ``store_retrying``;
a store that stays down past the policy raises :class:`StoreWriteError`, and the campaign stops (a resume continues).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import posixpath
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import ValidationError

from agents.memory import LESSONS, Lesson
from agents.messages import SAFE_NAME, HumanAction, SearchCheckpoint, StoredImage
from pipelines.records import (
    MAX_NAME_CHARS,
    STORE_FORMAT,
    ABManifest,
    IntentOutcome,
    IntentPart,
    LineageRecord,
    Manifest,
)
from pipelines.wire import CampaignStatus
from serving.retry import RetryPolicy
from serving.files import open_atomic, write_atomic
from serving.storage import STORE_RETRY, call_store_async, guarded, user_path

T = TypeVar("T")

IMAGE_NAME = SAFE_NAME[:-1] + r"\.png$"
"""Image files: a safe name ending in ``.png`` (what :meth:`CampaignStore.image_name` makes of a candidate id)."""


class StoreFormatError(ValueError):
    """The folder holds records this version cannot read (another layout, or not a campaign)."""


class ImageMismatch(ValueError):
    """An image read back is not the one its reference recorded (another size or sha256): overwritten or damaged."""


class UnsafeName(ValueError):
    """A campaign or image name that could leave its folder (``..``, a separator, a leading dot, a NUL, ...)."""


def is_safe_name(name: str, max_chars: int = MAX_NAME_CHARS) -> bool:
    """``name`` matches :data:`agents.messages.SAFE_NAME` whole (``fullmatch``: ``$`` alone would let a trailing
    newline through) and is at most ``max_chars`` long."""
    return len(name) <= max_chars and re.fullmatch(SAFE_NAME, name) is not None


def campaign_store(root: str, campaign_id: str) -> CampaignStore:
    """The store of campaign ``campaign_id`` under ``root``. The name is checked against the safe pattern and the joined
    path is checked to lie inside ``root`` (after resolving symlinks on a local disk) before anything can touch it;
    raises :class:`UnsafeName` otherwise. Constructing touches nothing."""
    if not is_safe_name(campaign_id):
        raise UnsafeName(f"campaign name {campaign_id[:120]!r} is not a safe name (letters, digits, '_.-', not "
                         f"starting with a dot, at most {MAX_NAME_CHARS} characters)")
    store = CampaignStore(f"{root.rstrip('/')}/{campaign_id}")
    base = fsspec.core.url_to_fs(root)[1].rstrip("/")
    if isinstance(store.fs, LocalFileSystem):
        inside = os.path.realpath(store.root).startswith(os.path.realpath(base) + os.sep)
    else:
        inside = posixpath.normpath(store.root).startswith(posixpath.normpath(base) + "/")
    if not inside:
        raise UnsafeName(f"campaign {campaign_id!r} would lie outside the store root {root!r}")
    return store


class CampaignStore:
    """One campaign's folder on fsspec. Each method is one try (see the module docstring); :meth:`call` runs one with
    the retry policy ``retry`` (default :data:`serving.storage.STORE_RETRY`), counting retries in ``retries`` and
    reporting each to ``on_retry(message)`` (the runner puts it in the campaign's status); ``sleep`` is the backoff's
    clock."""

    def __init__(self, uri: str, retry: RetryPolicy | None = None, on_retry: Callable[[str], None] | None = None):
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        self.retry = retry or STORE_RETRY
        self.on_retry = on_retry
        self.retries = 0
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def call(self, operation: Callable[..., T], *args) -> T:
        """``operation(*args)`` (a method of this store, or a function of several, each one try) in a worker thread,
        retried per :attr:`retry` while the store is unavailable; the waits are awaited here, never slept in the
        thread. Raises :class:`StoreWriteError` once the policy is spent; any other error at once."""
        return await call_store_async(lambda: asyncio.to_thread(operation, *args), self.retry, on_retry=self._retried,
                                      sleep=self.sleep, what=getattr(operation, "__name__", "store operation"))

    def _retried(self, exc: BaseException, attempt: int, delay: float) -> None:
        self.retries += 1
        if self.on_retry is not None:
            self.on_retry(f"store_retrying: {str(exc)[:300]}; retry {attempt} of {self.retry.attempts - 1} in "
                          f"{delay:.1f}s")

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def path(self, name: str) -> str:
        return self._p(name)

    def _io(self, verb: str, path: str, operation: Callable[[], T]) -> T:
        """One try of ``operation`` on ``path``, its failure judged by serving.storage.guarded."""
        return guarded(verb, user_path(self.fs, path), operation)

    def create(self) -> None:
        """Make the campaign's folders (a run calls this once, before writing)."""
        for sub in ("images", "parts", "checkpoints"):
            path = self._p(sub)
            self._io("create", path, lambda path=path: self.fs.makedirs(path, exist_ok=True))

    def _write_atomic(self, path: str, data: bytes) -> None:
        self._io("write", path, lambda: write_atomic(self.fs, path, data))

    def _read_json(self, name: str) -> bytes | None:
        path = self._p(name)
        try:
            return self._io("read", path, lambda: self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def _remove(self, path: str) -> None:
        try:
            self._io("delete", path, lambda: self.fs.rm_file(path))
        except FileNotFoundError:
            pass

    def _list(self, folder: str) -> list[str]:
        """The names in ``folder`` as the store has them now (no cached listing); [] when it does not exist."""
        try:
            return self._io("list", folder, lambda: self.fs.ls(folder, detail=False, refresh=True))
        except FileNotFoundError:
            return []

    # -- manifest and status -------------------------------------------------------------------------------------

    def read_manifest(self) -> Manifest | None:
        data = self._read_json("manifest.json")
        if data is None:
            return None
        raw = json.loads(data)
        if raw.get("format") != STORE_FORMAT:
            raise StoreFormatError(
                f"{self.uri} holds a campaign in store format {raw.get('format', 1)}; this version reads format "
                f"{STORE_FORMAT}: use another name or output location"
            )
        return Manifest.model_validate(raw)

    def write_manifest(self, manifest: Manifest) -> None:
        self._write_atomic(self._p("manifest.json"), manifest.model_dump_json(indent=2).encode())

    def read_status(self) -> CampaignStatus | None:
        """The status the last finished run compiled (None while a run is going or after a crash)."""
        data = self._read_json("status.json")
        return None if data is None else CampaignStatus.model_validate_json(data)

    def write_status(self, status: CampaignStatus) -> None:
        self._write_atomic(self._p("status.json"), status.model_dump_json(indent=2).encode())

    def clear_status(self) -> None:
        """A run starts: the previous run's compiled status no longer describes the store."""
        self._remove(self._p("status.json"))

    # -- campaign memory ------------------------------------------------------------------------------------------

    def read_lessons(self) -> list[Lesson]:
        """The campaign's lessons ([] when it has none: memory off, or nothing learned yet)."""
        data = self._read_json("lessons.json")
        return [] if data is None else LESSONS.validate_json(data)

    def write_lessons(self, lessons: list[Lesson]) -> None:
        self._write_atomic(self._p("lessons.json"), LESSONS.dump_json(lessons, indent=1))

    # -- the campaign's image budget ------------------------------------------------------------------------------

    def read_budget(self) -> dict[str, int]:
        """Images granted to each intent's search arm so far (agents.allocation; {} when none)."""
        data = self._read_json("budget.json")
        return {} if data is None else {str(k): int(v) for k, v in json.loads(data)["granted"].items()}

    def write_budget(self, granted: dict[str, int]) -> None:
        self._write_atomic(self._p("budget.json"), json.dumps({"granted": granted}, sort_keys=True).encode())

    # -- a model A/B's parent (pipelines/ab.py) ---------------------------------------------------------------------

    def read_ab(self) -> ABManifest | None:
        """``ab.json``: this campaign is a model A/B of two variant campaigns (None: it is not)."""
        data = self._read_json("ab.json")
        return None if data is None else ABManifest.model_validate_json(data)

    def write_ab(self, manifest: ABManifest) -> None:
        self._io("create", self.root, lambda: self.fs.makedirs(self.root, exist_ok=True))
        self._write_atomic(self._p("ab.json"), manifest.model_dump_json(indent=2).encode())

    # -- images ---------------------------------------------------------------------------------------------------

    @staticmethod
    def image_name(candidate_id: str) -> str:
        """Candidate ids look like 'intent/r1/p0/s0'; their images are flat files 'intent__r1__p0__s0.png'."""
        return candidate_id.replace("/", "__") + ".png"

    def image_uri(self, candidate_id: str) -> str:
        """Where a renderer writes the candidate's image itself (``RenderRequest.image_uri``): the file that
        :meth:`write_image` would write, as an fsspec URI; :meth:`image_ref` turns it back into the lineage's reference."""
        return f"{self.uri}/images/{self.image_name(candidate_id)}"

    def image_ref(self, uri: str) -> str:
        """The reference lineage records (``images/<name>``) for a URI made by :meth:`image_uri`; ValueError for any
        other (a renderer must not point the campaign elsewhere)."""
        name = uri.removeprefix(f"{self.uri}/images/")
        if name == uri or re.fullmatch(IMAGE_NAME, name) is None:
            raise ValueError(f"{uri[:200]!r} is not an image of this campaign's store {self.uri!r}")
        return f"images/{name}"

    def write_image(self, candidate_id: str, png: bytes) -> str:
        """Store a PNG; returns its path relative to the campaign (what lineage records)."""
        name = self.image_name(candidate_id)
        self._write_atomic(self._p("images", name), png)
        return f"images/{name}"

    def read_image(self, name: str) -> bytes:
        """The PNG called ``name`` in images/; FileNotFoundError for a missing or unsafe name (never a path)."""
        if len(name) > 400 or re.fullmatch(IMAGE_NAME, name) is None:
            raise FileNotFoundError(name[:120])
        path = self._p("images", name)
        return self._io("read", path, lambda: self.fs.cat_file(path))

    def read_stored_image(self, stored: StoredImage) -> bytes:
        """The image a lineage reference (``images/<name>``, size, sha256) names, checked against its size and hash
        (cheap beside the read); :class:`ImageMismatch` when it is not that image."""
        data = self.read_image(stored.uri.removeprefix("images/"))
        digest = hashlib.sha256(data).hexdigest()
        if (len(data), digest) != (stored.size, stored.sha256):
            raise ImageMismatch(f"{self.uri}/{stored.uri} holds {len(data)} bytes with sha256 {digest[:12]}…, not "
                                f"the {stored.size} bytes with sha256 {stored.sha256[:12]}… its lineage records")
        return data

    # -- per-round checkpoints -------------------------------------------------------------------------------------

    def write_checkpoint(self, checkpoint: SearchCheckpoint) -> None:
        """Replace the intent's checkpoint (atomically: a crash leaves the previous round's)."""
        path = self._p("checkpoints", f"{checkpoint.intent.id}.json")
        self._write_atomic(path, checkpoint.model_dump_json().encode())

    def read_checkpoint(self, intent_id: str) -> SearchCheckpoint | None:
        data = self._read_json(posixpath.join("checkpoints", f"{intent_id}.json"))
        return None if data is None else SearchCheckpoint.model_validate_json(data)

    def clear_checkpoint(self, intent_id: str) -> None:
        self._remove(self._p("checkpoints", f"{intent_id}.json"))

    def sweep_checkpoints(self, done: set[str]) -> None:
        """Delete the checkpoints of intents that are done: a run that failed between committing an intent's part and
        deleting its checkpoint leaves one (harmless, the part wins, but it should not linger)."""
        for name in self._list(self._p("checkpoints")):
            intent_id = posixpath.basename(name)[: -len(".json")]
            if name.endswith(".json") and intent_id in done:
                self.clear_checkpoint(intent_id)

    def waiting_checkpoints(self) -> list[SearchCheckpoint]:
        """The checkpoints of intents that wait for review now (agents.steering), in intent id order."""
        out = []
        for name in sorted(self._list(self._p("checkpoints"))):
            if not name.endswith(".json"):
                continue
            checkpoint = self.read_checkpoint(posixpath.basename(name)[: -len(".json")])
            if checkpoint is not None and checkpoint.review is not None and checkpoint.review.ended is None:
                out.append(checkpoint)
        return out

    # -- people's actions (agents.steering) -----------------------------------------------------------------------

    def write_action(self, action: HumanAction) -> None:
        """Store a person's action (whole or absent); the caller checked that its id is new or its body the same."""
        folder = self._p("actions", action.intent_id)
        self._io("create", folder, lambda: self.fs.makedirs(folder, exist_ok=True))
        self._write_atomic(posixpath.join(folder, f"{action.id}.json"), action.model_dump_json().encode())

    def read_action(self, intent_id: str, action_id: str) -> HumanAction | None:
        data = self._read_json(posixpath.join("actions", intent_id, f"{action_id}.json"))
        return None if data is None else HumanAction.model_validate_json(data)

    def read_actions(self, intent_id: str) -> list[HumanAction]:
        """The intent's actions in the order they were posted (server time, then id)."""
        actions = []
        for name in self._list(self._p("actions", intent_id)):
            base = posixpath.basename(name)
            if base.endswith(".json") and is_safe_name(base[: -len(".json")], 128):
                action = self.read_action(intent_id, base[: -len(".json")])
                if action is not None:
                    actions.append(action)
        return sorted(actions, key=lambda a: (a.at, a.id))

    def acted_intents(self) -> list[str]:
        """Intents with at least one action, in id order."""
        return sorted(n for n in (posixpath.basename(p.rstrip("/")) for p in self._list(self._p("actions")))
                      if is_safe_name(n, 128))

    # -- per-intent parts -----------------------------------------------------------------------------------------

    def write_part(self, part: IntentPart) -> None:
        """Commit one finished intent (its images must already be written)."""
        self._write_atomic(self._p("parts", f"{part.outcome.intent_id}.json"), part.model_dump_json().encode())

    def done_intents(self) -> set[str]:
        names = self._list(self._p("parts"))
        return {posixpath.basename(n)[: -len(".json")] for n in names if n.endswith(".json")}

    def read_part(self, intent_id: str) -> IntentPart | None:
        data = self._read_json(posixpath.join("parts", f"{intent_id}.json"))
        if data is None:
            return None
        try:
            return IntentPart.model_validate_json(data)
        except ValidationError as exc:
            raise StoreFormatError(f"{self.uri}/parts/{intent_id}.json is not a readable intent record: {exc}") from exc

    def iter_parts(self, intent_order: Iterable[str], offset: int = 0, limit: int | None = None
                   ) -> Iterator[IntentPart]:
        """Finished intents in campaign order (usable while a run is going), from the ``offset``-th finished one."""
        done = self.done_intents()
        finished = (i for i in intent_order if i in done)
        for n, intent_id in enumerate(finished):
            if n < offset:
                continue
            if limit is not None and n >= offset + limit:
                return
            part = self.read_part(intent_id)
            if part is not None:
                yield part

    def iter_outcomes(self, intent_order: Iterable[str], offset: int = 0, limit: int | None = None
                      ) -> Iterator[IntentOutcome]:
        """Outcomes in campaign order. After a run compiled ``results.jsonl`` they stream from it (one file, no part
        opened); while a run is going, from the parts."""
        if self.read_status() is not None and self.fs.exists(self._p("results.jsonl")):
            with self.fs.open(self._p("results.jsonl"), "rb") as f:
                for n, line in enumerate(f):
                    if n < offset:
                        continue
                    if limit is not None and n >= offset + limit:
                        return
                    yield IntentOutcome.model_validate_json(line)
            return
        for part in self.iter_parts(intent_order, offset, limit):
            yield part.outcome

    def compile(self, intent_order: Iterable[str]) -> tuple[int, int]:
        """(Re)write results.jsonl and lineage.jsonl from the parts, streaming one intent at a time (each file whole
        or as it was). One try made of many: :meth:`call` retries it as a whole; its reads do not retry themselves."""
        results, lineage = self._p("results.jsonl"), self._p("lineage.jsonl")
        intent_order = list(intent_order)  # a retry reads it again

        def write() -> tuple[int, int]:
            n_results = n_lineage = 0
            with open_atomic(self.fs, results) as fr, open_atomic(self.fs, lineage) as fl:
                for part in self.iter_parts(intent_order):
                    fr.write(part.outcome.model_dump_json().encode() + b"\n")
                    n_results += 1
                    for record in part.lineage:
                        fl.write(record.model_dump_json().encode() + b"\n")
                        n_lineage += 1
            return n_results, n_lineage

        return self._io("write", results, write)

    def iter_lineage(self) -> Iterator[LineageRecord]:
        """Every line of the compiled lineage.jsonl."""
        with self.fs.open(self._p("lineage.jsonl"), "rb") as f:
            for line in f:
                yield LineageRecord.model_validate_json(line)


class RunningRegistry:
    """The campaigns an ingress is running, durable in the store: ``<root>/.running/<campaign>.json`` holds each one's
    spec from admission until it ends (done or failed) or a user cancels it. An ingress that starts resumes every
    campaign listed there, so a killed ingress loses no campaign. (``.running`` cannot clash with a campaign: names
    never start with a dot.)"""

    def __init__(self, root: str):
        self.fs, base = fsspec.core.url_to_fs(root)
        self.dir = posixpath.join(base.rstrip("/"), ".running")

    def add(self, campaign_id: str, spec_json: bytes) -> None:
        self.fs.makedirs(self.dir, exist_ok=True)
        write_atomic(self.fs, posixpath.join(self.dir, f"{campaign_id}.json"), spec_json)

    def remove(self, campaign_id: str) -> None:
        try:
            self.fs.rm_file(posixpath.join(self.dir, f"{campaign_id}.json"))
        except FileNotFoundError:
            pass

    def contains(self, campaign_id: str) -> bool:
        return self.fs.exists(posixpath.join(self.dir, f"{campaign_id}.json"))

    def entries(self) -> dict[str, bytes]:
        """Campaign id -> its spec as submitted (JSON), for every registered campaign."""
        try:
            names = self.fs.ls(self.dir, detail=False)
        except FileNotFoundError:
            return {}
        out = {}
        for name in names:
            base = posixpath.basename(name)
            if base.endswith(".json") and is_safe_name(base[: -len(".json")]):
                out[base[: -len(".json")]] = self.fs.cat_file(name)
        return out
