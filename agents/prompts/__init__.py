"""Prompt templates as data (YAML + Jinja with StrictUndefined).

User-derived text is never spliced into instructions: templates pass it through the ``user_json`` filter, which
JSON-encodes it (so quotes and newlines cannot break out) and escapes ``<``, ``>`` and ``&`` (so it cannot close the
``<user_data>`` block or open a fake one).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

_DIR = Path(__file__).parent


def user_json(value: Any) -> str:
    """JSON for embedding user data inside ``<user_data>...</user_data>``."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


_env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
_env.filters["user_json"] = user_json


@lru_cache(maxsize=None)
def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((_DIR / f"{name}.yaml").read_text())


@lru_cache(maxsize=None)
def load_templates(name: str) -> dict[str, jinja2.Template]:
    """Templates of ``agents/prompts/<name>.yaml`` (its string entries), compiled once."""
    return {key: _env.from_string(text) for key, text in _load(name).items() if isinstance(text, str)}


def data(name: str, key: str) -> Any:
    """A non-template entry of ``agents/prompts/<name>.yaml`` (e.g. worked examples), as plain data."""
    return _load(name)[key]


def render(name: str, key: str, **variables: Any) -> str:
    return load_templates(name)[key].render(**variables).strip()
