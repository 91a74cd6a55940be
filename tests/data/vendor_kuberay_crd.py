"""Regenerate tests/data/kuberay_rayservice_crd_v1.7.0.json from KubeRay's CRD (used by tests/test_kuberay.py).

Source: github.com/ray-project/kuberay, tag v1.7.0, ray-operator/config/crd/bases/ray.io_rayservices.yaml (1 MB of
YAML). Kept: the v1 version's openAPIV3Schema without ``status`` and without descriptions; every subschema of 2 KB
or more that occurs twice (the pod template under the head and each worker group, containers and init containers) is
stored once under ``$defs`` and referenced, so the file is a small fraction of the CRD with the same constraints.

    python tests/data/vendor_kuberay_crd.py path/to/ray.io_rayservices.yaml
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import yaml

SOURCE = "github.com/ray-project/kuberay@v1.7.0 ray-operator/config/crd/bases/ray.io_rayservices.yaml"
OUT = Path(__file__).with_name("kuberay_rayservice_crd_v1.7.0.json")
MIN_SHARED = 2048


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


MAPS = ("properties", "patternProperties")  # keyword -> {name: schema}
SINGLE = ("items", "additionalProperties", "not")  # keyword -> schema
LISTS = ("allOf", "anyOf", "oneOf")  # keyword -> [schema]


def subschemas(node: dict):
    """Every schema inside ``node`` (itself included), following only the keywords that hold schemas."""
    yield node
    for k, v in node.items():
        if k in MAPS:
            for sub in v.values():
                yield from subschemas(sub)
        elif k in SINGLE and isinstance(v, dict):
            yield from subschemas(v)
        elif k in LISTS:
            for sub in v:
                yield from subschemas(sub)


def key(node) -> str:
    return hashlib.sha256(json.dumps(node, sort_keys=True).encode()).hexdigest()[:12]


def main(crd_path: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strip(v1["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)
    counts: Counter[str] = Counter()
    for node in subschemas(schema):
        if len(json.dumps(node)) >= MIN_SHARED:
            counts[key(node)] += 1
    defs: dict[str, dict] = {}

    def share(node: dict) -> dict:
        """``node`` with each shared subschema replaced by a reference (only schemas, never a ``properties`` map)."""
        if len(json.dumps(node)) >= MIN_SHARED and counts[key(node)] > 1:
            k = key(node)
            if k not in defs:
                defs[k] = {}  # reserved first: the definition's own shared parts are referenced, not inlined
                defs[k] = rebuild(node)
            return {"$ref": f"#/$defs/{k}"}
        return rebuild(node)

    def rebuild(node: dict) -> dict:
        out = {}
        for k, v in node.items():
            if k in MAPS:
                out[k] = {name: share(sub) for name, sub in v.items()}
            elif k in SINGLE and isinstance(v, dict):
                out[k] = share(v)
            elif k in LISTS:
                out[k] = [share(sub) for sub in v]
            else:
                out[k] = v
        return out

    out = share(schema)
    out = {"$comment": f"{SOURCE}; v1 openAPIV3Schema without status and descriptions, shared parts in $defs "
                       f"(tests/data/vendor_kuberay_crd.py)", **out, "$defs": defs}
    OUT.write_text(json.dumps(out, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{OUT}: {OUT.stat().st_size} bytes, {len(defs)} shared definitions")


if __name__ == "__main__":
    main(sys.argv[1])
