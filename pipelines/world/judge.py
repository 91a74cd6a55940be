"""The world's judge: a programmatic detector that answers a spec's checks as GenEval answers them.

Detection (NumPy + SciPy, deterministic, CPU):

1. **Foreground**: pixels farther than ``FOREGROUND_DISTANCE`` from the background colour.
2. **Colour**: each foreground pixel takes the palette colour whose *mixing line* (background -> colour) passes
   closest to it, so anti-aliased and blurred edges (a mix of background and the object's colour) keep the object's
   colour instead of looking like a darker neighbour in the palette.
3. **Objects**: 8-connected components per colour, at least ``MIN_AREA`` pixels.
4. **Shape**: the component's mask, cropped to its bounding box and area-averaged onto a 16x16 grid, is compared
   with four ideal templates (circle, square, triangle, cross filling a unit box); the nearest names the shape.
   Components far from every template, or much wider than tall, stay unrecognised (counted as no class), as a
   detector's low-confidence boxes are.

Answers (GenEval's rules, see :func:`evaluate`): an ``include`` entry holds when at least ``count`` objects of the
class (with the colour, when one is asked) are found; an ``exclude`` entry holds when fewer than ``count`` are; a
position ``[relation, i]`` holds when every counted object of the entry stands in that relation to every counted object
of entry ``i`` by GenEval's box rule (:func:`pipelines.world.scenes.relative_position`, a margin of 10% of the two
boxes' summed sizes). Specs naming classes, colours or relations the world does not draw are answered
``unsupported`` rather than guessed.

Beside the all-pass verdict the judge answers one boolean per include entry (exactness folded in), then one per
relation: the order of the checks the world's critic asks (:mod:`pipelines.world.decompose` for an intent's text,
``agents.critic.checks_from_structure`` for structured checks from :func:`spec_to_checks`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipelines.world.scenes import BACKGROUND, PALETTE, RELATIONS, SHAPES, SceneSpec, relative_position

FOREGROUND_DISTANCE = 90.0
"""RGB distance from the background above which a pixel is foreground (every palette colour is >= 200 away)."""
MIN_AREA = 24
"""Smallest component counted as an object, in pixels (the smallest drawn object, a 14 px triangle, has ~98)."""
MAX_ASPECT = 1.6
"""Components whose box is more than this much wider than tall (or taller than wide) are not single objects."""
TEMPLATE_GRID = 16
"""Side of the grid a component's mask is resampled to before it is compared with the shape templates."""
MAX_SHAPE_DISTANCE = 0.2
"""Largest mismatch (mean absolute difference to the nearest template) that still names the shape. On the
rasterizer's drawings an object is at most ~0.13 from its own template and >= 0.16 from every other one (measured
over 4000 objects, 14-20 px; the closest pairs are circle/square and circle/cross)."""


def _templates(grid: int = TEMPLATE_GRID, oversample: int = 8) -> np.ndarray:
    """Ideal shapes filling a unit box, area-averaged onto a grid x grid raster: (len(SHAPES), grid, grid)."""
    n = grid * oversample
    c = (np.arange(n) + 0.5) / n - 0.5
    x, y = c[None, :], c[:, None]
    ax, ay = np.abs(x), np.abs(y)
    masks = {
        "circle": x * x + y * y <= 0.25,
        "square": np.ones((n, n), dtype=bool),
        "triangle": ax <= (y + 0.5) / 2,  # apex up
        "cross": (ax <= 1 / 6) | (ay <= 1 / 6),
    }
    return np.stack([masks[s].reshape(grid, oversample, grid, oversample).mean(axis=(1, 3)) for s in SHAPES])


_BG = np.array(BACKGROUND, dtype=np.float32)
_COLOR_NAMES = list(PALETTE)
_DIRS = np.array(list(PALETTE.values()), dtype=np.float32) - _BG  # (C, 3) background -> colour
_DIR_NORM2 = (_DIRS**2).sum(axis=1)
_TEMPLATES = _templates()
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Detection:
    """One object found in an image. ``shape`` is None when the component matches no shape well."""

    shape: str | None
    color: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends), pixels
    area: int
    distances: tuple[float, ...]
    """Mismatch with each shape template (SHAPES order)."""


@dataclass(frozen=True)
class Verdict:
    """The judge's answer for one image and one spec."""

    supported: bool
    passed: bool = False
    answers: list[bool] = field(default_factory=list)
    """One per include entry (objects, exactness folded in), then one per relation: the order of the critic's checks."""
    reasons: list[str] = field(default_factory=list)
    """Why it failed (GenEval-style), or why it is unsupported."""


def to_array(image) -> np.ndarray:
    """PNG bytes, a PIL image or an (H, W, 3) uint8 array -> (H, W, 3) uint8 array."""
    if isinstance(image, (bytes, bytearray)):
        from PIL import Image

        image = Image.open(io.BytesIO(image))
    if not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image


def shape_distances(mask: np.ndarray) -> tuple[float, ...]:
    """Mismatch of a component's mask (cropped to its box) with each shape template, in SHAPES order."""
    h, w = mask.shape
    g = TEMPLATE_GRID
    # area-average resampling to g x g: repeat every pixel g times along each axis, then average g x g... blocks
    big = mask[np.repeat(np.arange(h), g)][:, np.repeat(np.arange(w), g)]
    norm = big.reshape(g, h, g, w).mean(axis=(1, 3))
    return tuple(float(d) for d in np.abs(_TEMPLATES - norm).mean(axis=(1, 2)))


def classify_shape(distances: tuple[float, ...], width: int, height: int) -> str | None:
    if max(width, height) > MAX_ASPECT * min(width, height):
        return None
    best = int(np.argmin(distances))
    return SHAPES[best] if distances[best] <= MAX_SHAPE_DISTANCE else None


def detect(image) -> list[Detection]:
    """Every object in the image, largest first."""
    img = to_array(image).astype(np.float32) - _BG
    fg = (img**2).sum(axis=2) > FOREGROUND_DISTANCE**2
    if not fg.any():
        return []
    px = img[fg]  # (N, 3)
    dots = px @ _DIRS.T  # (N, C)
    t = np.clip(dots / _DIR_NORM2, 0.0, 1.3)
    resid = (px**2).sum(axis=1, keepdims=True) - 2 * t * dots + t * t * _DIR_NORM2
    labels = np.full(fg.shape, -1, dtype=np.int16)
    labels[fg] = np.argmin(resid, axis=1)
    found: list[Detection] = []
    for c in np.unique(labels[fg]):
        comp, n = ndimage.label(labels == c, structure=_EIGHT)
        if n == 0:
            continue
        for sl_index, sl in enumerate(ndimage.find_objects(comp), start=1):
            mask = comp[sl] == sl_index
            area = int(mask.sum())
            if area < MIN_AREA:
                continue
            feats = shape_distances(mask)
            h, w = mask.shape
            box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
            found.append(Detection(classify_shape(feats, w, h), _COLOR_NAMES[int(c)], box, area, feats))
    found.sort(key=lambda d: (-d.area, d.box))
    return found


def unsupported_reason(spec: SceneSpec) -> str | None:
    """Why the world cannot judge this spec (a class, colour or relation it does not draw), or None."""
    for req in [*spec.include, *spec.exclude]:
        if req.cls not in SHAPES:
            return f"class {req.cls!r} is not drawn in the world (its classes: {', '.join(SHAPES)})"
        if req.color is not None and req.color not in PALETTE:
            return f"colour {req.color!r} is not in the world's palette ({', '.join(PALETTE)})"
        if req.position is not None and req.position[0] not in RELATIONS:
            return f"relation {req.position[0]!r} is not one of {RELATIONS}"
    return None


def _matches(dets: list[Detection], cls: str, color: str | None) -> list[Detection]:
    return [d for d in dets if d.shape == cls and (color is None or d.color == color)]


def _exact_exclude(spec: SceneSpec, i: int) -> int | None:
    """Index of the exclude entry that turns include[i]'s "at least N" into "exactly N" (GenEval's counting form)."""
    req = spec.include[i]
    for j, ex in enumerate(spec.exclude):
        if ex.cls == req.cls and ex.color in (None, req.color) and ex.count == req.count + 1:
            return j
    return None


def evaluate(spec: SceneSpec, dets: list[Detection]) -> Verdict:
    """Answer ``spec`` for one image's detections (GenEval's rules; see the module docstring)."""
    reason = unsupported_reason(spec)
    if reason is not None:
        return Verdict(supported=False, reasons=[reason])
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    include_ok: list[bool] = []
    for req in spec.include:
        found = _matches(dets, req.cls, req.color)
        ok = len(found) >= req.count
        if not ok:
            color = f"{req.color} " if req.color else ""
            reasons.append(f"expected {color}{req.cls}>={req.count}, found {len(found)}")
        include_ok.append(ok)
        groups.append(found[: req.count] if ok else None)
    exclude_ok: list[bool] = []
    for ex in spec.exclude:
        n = len(_matches(dets, ex.cls, ex.color))
        exclude_ok.append(n < ex.count)
        if n >= ex.count:
            reasons.append(f"expected {ex.cls}<{ex.count}, found {n}")
    relation_ok: list[bool] = []
    for i, req in enumerate(spec.include):
        if req.position is None:
            continue
        rel, target = req.position
        a, b = groups[i], groups[target]
        ok = a is not None and b is not None and all(
            rel in relative_position(x.box, y.box) for x in a for y in b  # type: ignore[arg-type]
        )
        if not ok and a is not None and b is not None:
            reasons.append(f"expected {req.cls} {rel} {spec.include[target].cls}")
        elif not ok:
            reasons.append(f"cannot check {req.cls} {rel} {spec.include[target].cls}: an object is missing")
        relation_ok.append(ok)
    answers = []
    for i, ok in enumerate(include_ok):
        j = _exact_exclude(spec, i)
        answers.append(ok and (j is None or exclude_ok[j]))
    answers += relation_ok
    passed = all(include_ok) and all(exclude_ok) and all(relation_ok)
    return Verdict(supported=True, passed=passed, answers=answers, reasons=reasons)


def judge(image, spec: SceneSpec | dict) -> Verdict:
    """Detect objects in ``image`` (PNG bytes, PIL image or uint8 array) and answer ``spec`` (a SceneSpec or a
    GenEval record dict)."""
    if isinstance(spec, dict):
        spec = SceneSpec.model_validate(spec)
    if unsupported_reason(spec) is not None:
        return evaluate(spec, [])
    return evaluate(spec, detect(image))


def spec_to_intent(spec: SceneSpec | dict, text: str, id: str):
    """The ``agents.messages.Intent`` a user of the world submits: its text, nothing else (no tag either: tag names
    hold count words, "two_object"). The world's critic reads the text (:mod:`pipelines.world.decompose`); the spec
    stays with the judge. ``spec`` is accepted for symmetry with :func:`spec_to_checks` and checked."""
    from agents.messages import Intent

    if isinstance(spec, dict):
        spec = SceneSpec.model_validate(spec)
    return Intent(id=id, text=text)


def spec_to_checks(spec: SceneSpec | dict):
    """Structured ``agents.messages.IntentChecks`` for a spec, in the spec's own (training) names, as a user of a
    general campaign could write them: one object per include entry (``count`` set where the spec asks for an exact
    number, i.e. an exclude of count + 1 follows it, as GenEval's counting records do), one relation per position.
    :func:`judge` answers them in that order (``Verdict.answers``). The world's benchmark does not use them: they
    would tell a rewriter the model's vocabulary."""
    from agents.messages import IntentChecks, ObjectSpec, RelationSpec

    if isinstance(spec, dict):
        spec = SceneSpec.model_validate(spec)
    objects = []
    for i, req in enumerate(spec.include):
        exact = _exact_exclude(spec, i) is not None
        count = req.count if (exact or req.count > 1) else None
        objects.append(ObjectSpec(name=req.cls, count=count, color=req.color))
    relations = []
    for req in spec.include:
        if req.position is not None:
            target = spec.include[req.position[1]]
            relations.append(RelationSpec(subject=_named(req.cls, req.color), relation=req.position[0],
                                          object=_named(target.cls, target.color)))
    return IntentChecks(objects=objects, relations=relations)


def _named(cls: str, color: str | None) -> str:
    return f"{color} {cls}" if color else cls
