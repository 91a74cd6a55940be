"""Campaign results on fsspec: a local directory by default, ``s3://``-style URLs on a cluster.

Layout of one campaign::

    manifest.json           spec (config, intents' count), models, package versions, seeds, spec hash
    images/<candidate>.png  every rendered image (search and baseline)
    parts/<intent>.json     one object per finished intent: its result line and its lineage lines
    results.jsonl           one line per intent   } compiled from parts/ in campaign order when a run ends,
    lineage.jsonl           one line per candidate } so they never hold duplicates or half-written lines

Why parts: object stores have no append, and a crash mid-append leaves half a line. A part is written once, atomically
(temp file + rename locally; a single PUT on object stores), and its presence is what "this intent is done" means —
so resuming skips exactly the finished intents and never duplicates a line.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


class CampaignStore:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        self.fs.makedirs(self._p("images"), exist_ok=True)
        self.fs.makedirs(self._p("parts"), exist_ok=True)

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def _write_atomic(self, path: str, data: bytes) -> None:
        if isinstance(self.fs, LocalFileSystem):
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        else:  # object stores: one PUT is atomic
            self.fs.pipe_file(path, data)

    # -- manifest -------------------------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        path = self._p("manifest.json")
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self._write_atomic(self._p("manifest.json"), json.dumps(manifest, indent=2, sort_keys=True).encode())

    # -- images ---------------------------------------------------------------------------------------------------

    @staticmethod
    def image_name(candidate_id: str) -> str:
        """Candidate ids look like 'intent/r1/p0/s0'; their images are flat files 'intent__r1__p0__s0.png'."""
        return candidate_id.replace("/", "__") + ".png"

    def write_image(self, candidate_id: str, png: bytes) -> str:
        """Store a PNG; returns its path relative to the campaign (what lineage records)."""
        name = self.image_name(candidate_id)
        self._write_atomic(self._p("images", name), png)
        return f"images/{name}"

    def read_image(self, name: str) -> bytes:
        if "/" in name or name.startswith(".") or not name.endswith(".png"):
            raise FileNotFoundError(name)
        return self.fs.cat_file(self._p("images", name))

    # -- per-intent parts -----------------------------------------------------------------------------------------

    def write_part(self, intent_id: str, result: dict[str, Any], lineage: list[dict[str, Any]]) -> None:
        """Commit one finished intent (images must already be written)."""
        data = json.dumps({"result": result, "lineage": lineage}, separators=(",", ":")).encode()
        self._write_atomic(self._p("parts", f"{intent_id}.json"), data)

    def done_intents(self) -> set[str]:
        names = self.fs.ls(self._p("parts"), detail=False) if self.fs.exists(self._p("parts")) else []
        return {posixpath.basename(n)[: -len(".json")] for n in names if n.endswith(".json")}

    def read_part(self, intent_id: str) -> dict[str, Any] | None:
        path = self._p("parts", f"{intent_id}.json")
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def iter_results(self, intent_order: Iterable[str]) -> Iterator[dict[str, Any]]:
        """Result lines of finished intents, in campaign order (usable while a run is going)."""
        done = self.done_intents()
        for intent_id in intent_order:
            if intent_id in done:
                part = self.read_part(intent_id)
                if part is not None:
                    yield part["result"]

    def compile(self, intent_order: Iterable[str]) -> tuple[int, int]:
        """(Re)write results.jsonl and lineage.jsonl from the parts, streaming one intent at a time."""
        order = list(intent_order)
        done = self.done_intents()
        n_results = n_lineage = 0
        tmp_r, tmp_l = self._p(f".results.{uuid.uuid4().hex[:8]}"), self._p(f".lineage.{uuid.uuid4().hex[:8]}")
        with self.fs.open(tmp_r, "wb") as fr, self.fs.open(tmp_l, "wb") as fl:
            for intent_id in order:
                if intent_id not in done:
                    continue
                part = self.read_part(intent_id)
                fr.write((json.dumps(part["result"]) + "\n").encode())
                n_results += 1
                for line in part["lineage"]:
                    fl.write((json.dumps(line) + "\n").encode())
                    n_lineage += 1
        self.fs.mv(tmp_r, self._p("results.jsonl"))
        self.fs.mv(tmp_l, self._p("lineage.jsonl"))
        return n_results, n_lineage

    def path(self, name: str) -> str:
        return self._p(name)
