"""JSON-schema builders for guided decoding. Every string and list is bounded, so even a weak model's output is
finite and parseable by construction."""

from __future__ import annotations


def string_list_schema(key: str, min_items: int, max_items: int, max_chars: int) -> dict:
    """``{key: [str, ...]}`` with ``min_items``..``max_items`` non-empty strings of at most ``max_chars``."""
    return {
        "type": "object",
        "properties": {
            key: {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": max_chars},
                "minItems": min_items,
                "maxItems": max_items,
            }
        },
        "required": [key],
        "additionalProperties": False,
    }
