"""What both engines share: how a model reference is told apart from a path, and the load error."""

from __future__ import annotations

import os


class ModelLoadError(RuntimeError):
    """A model could not be loaded (unknown id, missing directory, incomplete files)."""


def looks_local(model: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else (a path) must exist on disk."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.path.exists(os.path.expanduser(model))
