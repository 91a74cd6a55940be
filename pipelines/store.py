"""Campaign records on fsspec: a local directory by default, ``s3://``-style URLs on a cluster.

Layout of one campaign::

    manifest.json           Manifest: resolved configs, models, package versions, seeds, the resume fingerprint
    images/<candidate>.png  every rendered image (search and baseline)
    parts/<intent>.json     IntentPart, one per finished intent: its outcome and its lineage
    checkpoints/<intent>.json  SearchCheckpoint after an unfinished intent's last finished round (deleted once done)
    results.jsonl           one IntentOutcome per line   } compiled from parts/ in campaign order when a run ends,
    lineage.jsonl           one LineageRecord per line   } so they never hold duplicates or half-written lines
    status.json             CampaignStatus of the last run that ended (counts and statistics, constant size)
    lessons.json            campaign memory (agents.memory.Lesson list), rewritten after every committed intent
                            when memory is on; a resumed run continues with it

Why parts: object stores have no append, and a crash mid-append leaves half a line. A part is written once, atomically
(temp file + rename locally; a single PUT on object stores), and its presence is what "this intent is done" means —
so resuming skips exactly the finished intents and never duplicates a line.

Constructing a store touches nothing; reads never create anything; :meth:`create` makes the folders before a run.

Writes survive a flaky object store: every write is retried with exponential backoff (:class:`StoreRetryPolicy`) while
the error looks transient (a 5xx, a refused or reset connection, a timeout), and each retry is reported through
``on_retry`` so a campaign's status says ``store_retrying``. An error that another try cannot fix (permission denied, a
full or read-only disk) or a store that stays down past the policy raises :class:`StoreWriteError` naming the path.
A write is whole or absent: a temp file renamed into place locally, one PUT on an object store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Iterator

import fsspec
import tenacity
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.memory import LESSONS, Lesson
from agents.messages import SAFE_NAME, SearchCheckpoint, StoredImage
from pipelines.records import (
    MAX_NAME_CHARS,
    STORE_FORMAT,
    CampaignStatus,
    IntentOutcome,
    IntentPart,
    LineageRecord,
    Manifest,
)
from serving.storage import open_atomic, write_atomic

logger = logging.getLogger(__name__)

IMAGE_NAME = SAFE_NAME[:-1] + r"\.png$"
"""Image files: a safe name ending in ``.png`` (what :meth:`CampaignStore.image_name` makes of a candidate id)."""


class StoreFormatError(ValueError):
    """The folder holds records this version cannot read (another layout, or not a campaign)."""


class ImageMismatch(ValueError):
    """An image read back is not the one its reference recorded (another size or sha256): overwritten or damaged."""


class StoreWriteError(OSError):
    """A write to the store failed for good: the message names the path and why (permission, full disk, the object
    store down past the retry policy). Nothing half-written is left at that path; a later resume retries it."""


class StoreRetryPolicy(BaseModel):
    """How a store write is retried: ``backoff_s * 2**retry`` capped at ``max_backoff_s``, at most ``attempts`` tries.
    The defaults wait ~75 s in all: an object store that restarts or throttles for a minute costs no intent.
    (A small tenacity policy of its own; the Serve clients' policy lives in serving/.)"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=8, ge=1, le=50, description="Tries per write, the first included.")
    backoff_s: float = Field(default=0.5, ge=0.0, le=60.0, description="Wait before the first retry; doubles.")
    max_backoff_s: float = Field(default=20.0, ge=0.0, le=600.0, description="Longest wait between two tries.")


PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG}


def is_transient_store_error(exc: BaseException) -> bool:
    """Worth another try: the object store or the network failed, not the request. Permission, a full or read-only
    disk, a missing bucket and bad input are not (another try fails the same way)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError,
                        TypeError)):
        return False
    if isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS:
        return False
    return isinstance(exc, Exception)


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
    """One campaign's folder on fsspec. ``on_retry(message)`` hears about every retried write (the runner puts it in
    the campaign's status); ``retry`` sets how writes are retried."""

    def __init__(self, uri: str, retry: StoreRetryPolicy | None = None,
                 on_retry: Callable[[str], None] | None = None):
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        self.retry = retry or StoreRetryPolicy()
        self.on_retry = on_retry
        self.retries = 0

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def path(self, name: str) -> str:
        return self._p(name)

    def create(self) -> None:
        """Make the campaign's folders (a run calls this once, before writing)."""
        for sub in ("images", "parts", "checkpoints"):
            self._retrying(self._where(self._p(sub)), lambda sub=sub: self.fs.makedirs(self._p(sub), exist_ok=True))

    def _retrying(self, what: str, call: Callable[[], object], verb: str = "write"):
        """``call()`` retried per :attr:`retry` while the error is transient; a failure for good becomes
        :class:`StoreWriteError` naming ``what`` (the path). FileNotFoundError passes through unchanged (reads and
        deletes of what is not there are answers, not failures)."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception()
            self.retries += 1
            message = (f"store_retrying: {what}: {type(exc).__name__}: {str(exc)[:160]}; retry "
                       f"{state.attempt_number} of {self.retry.attempts - 1} in {state.next_action.sleep:.1f}s")
            logger.warning(message)
            if self.on_retry is not None:
                self.on_retry(message)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            wait=tenacity.wait_exponential(multiplier=self.retry.backoff_s, max=self.retry.max_backoff_s),
            retry=tenacity.retry_if_exception(is_transient_store_error),
            before_sleep=before_sleep, reraise=True,
        )
        try:
            return retrying(call)
        except (StoreWriteError, FileNotFoundError):
            raise
        except Exception as exc:
            raise StoreWriteError(f"cannot {verb} {what}: {type(exc).__name__}: {exc}") from exc

    def _where(self, path: str) -> str:
        """``path`` as a user would name it (with its ``s3://`` scheme on an object store)."""
        return path if isinstance(self.fs, LocalFileSystem) else f"{self.fs.protocol[0]}://{path}"

    def _write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` whole or not at all, retrying transient errors."""
        where = self._where(path)
        if isinstance(self.fs, LocalFileSystem):
            def put() -> None:
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                try:
                    self.fs.pipe_file(tmp, data)
                    self.fs.mv(tmp, path)
                finally:  # a failed write leaves no temp file behind
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        else:  # object stores: one PUT is atomic
            def put() -> None:
                self.fs.pipe_file(path, data)
        self._retrying(where, put)

    def _read_json(self, name: str) -> bytes | None:
        path = self._p(name)
        try:
            return self._retrying(self._where(path), lambda: self.fs.cat_file(path), verb="read")
        except FileNotFoundError:
            return None

    def _remove(self, path: str) -> None:
        try:
            self._retrying(self._where(path), lambda: self.fs.rm_file(path), verb="delete")
        except FileNotFoundError:
            pass

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
        return self.fs.cat_file(self._p("images", name))

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
        folder = self._p("checkpoints")
        try:
            names = self._retrying(self._where(folder), lambda: self.fs.ls(folder, detail=False, refresh=True),
                                   verb="list")
        except FileNotFoundError:
            return
        for name in names:
            intent_id = posixpath.basename(name)[: -len(".json")]
            if name.endswith(".json") and intent_id in done:
                self.clear_checkpoint(intent_id)

    # -- per-intent parts -----------------------------------------------------------------------------------------

    def write_part(self, part: IntentPart) -> None:
        """Commit one finished intent (its images must already be written)."""
        self._write_atomic(self._p("parts", f"{part.outcome.intent_id}.json"), part.model_dump_json().encode())

    def done_intents(self) -> set[str]:
        parts = self._p("parts")
        try:
            names = self._retrying(self._where(parts), lambda: self.fs.ls(parts, detail=False, refresh=True),
                                   verb="list")
        except FileNotFoundError:
            return set()
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
        """(Re)write results.jsonl and lineage.jsonl from the parts, streaming one intent at a time (retried whole
        while the store fails)."""
        order = list(intent_order)
        return self._retrying(self._where(self._p("results.jsonl")), lambda: self._compile(order))

    def _compile(self, intent_order: list[str]) -> tuple[int, int]:
        n_results = n_lineage = 0
        with open_atomic(self.fs, self._p("results.jsonl")) as fr, open_atomic(self.fs, self._p("lineage.jsonl")) as fl:
            for part in self.iter_parts(intent_order):
                fr.write(part.outcome.model_dump_json().encode() + b"\n")
                n_results += 1
                for record in part.lineage:
                    fl.write(record.model_dump_json().encode() + b"\n")
                    n_lineage += 1
        return n_results, n_lineage

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
