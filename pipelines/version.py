"""promptbeam's version, from one source: the installed package's metadata (``pyproject.toml``'s ``version``).

``promptbeam --version``, the HTTP API's OpenAPI ``info.version`` and the Python API all read :data:`__version__`.
A source checkout that was never installed reads ``pyproject.toml`` beside the packages instead.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path


def _version() -> str:
    try:
        return importlib.metadata.version("promptbeam")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _version()
