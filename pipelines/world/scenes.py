"""Scenes of the measuring world: GenEval-style specs, scene sampling per tag, and one batched torch rasterizer.

A *spec* is a GenEval metadata record (``tag``, ``include: [{class, count, color?, position?}]``, ``exclude?``,
``prompt``); the same records are what ``../shared/data/geneval_evaluation_metadata.jsonl`` holds, except that the
world's classes are flat shapes and its colours a fixed palette. A *scene* is one concrete drawing of a spec: every
object's shape, colour, centre and size. Scenes travel as tensors (:class:`SceneBatch`) so that the trainer can sample
and draw them on the GPU, and the tests draw the same scenes on the CPU with the same code as ground truth.

Geometry (the judge relies on it): a 64x64 canvas, a dark background, objects 14-20 px wide with at least
``MIN_GAP`` px between their bounding boxes, drawn 2x supersampled (anti-aliased edges). Positions follow GenEval's
rule (see :func:`relative_position`): "A left of B" holds when A's box centre is left of B's by more than 10% of their
summed widths and the horizontal offset dominates; the sampler draws position scenes with a wide margin.

Imports only torch and pydantic (it runs on the training machine).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import numpy as np

CANVAS = 64
"""Image side in pixels (the model renders this size; the judge reads it)."""

BACKGROUND: tuple[int, int, int] = (24, 24, 32)
"""Dark slate: far from every palette colour, so foreground is easy to separate."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 180, 70),
    "blue": (50, 100, 245),
    "purple": (150, 60, 210),
    "pink": (250, 140, 200),
    "white": (240, 240, 240),
}
"""Object colours, named as GenEval names them. Every pair is >= 88 apart in RGB, every colour >= 200 from the
background."""

COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""The world's object classes (a triangle points up; a cross is a plus sign with arms a third of its width)."""

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

MAX_OBJECTS = 4
SIZE_MIN, SIZE_MAX = 14.0, 20.0
"""Object bounding-box side in pixels (4-5 latent pixels: large enough for the model to form shapes quickly)."""
MIN_GAP = 3.0
"""Pixels between any two objects' bounding boxes (so that blurry outputs still separate)."""
EDGE_MARGIN = 1.0
SUPERSAMPLE = 2
POSITION_THRESHOLD = 0.1
"""GenEval's margin: offsets shrink by this fraction of the two objects' summed sizes before the direction test."""

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


# --------------------------------------------------------------------------------------------------------------------
# Specs: GenEval metadata records
# --------------------------------------------------------------------------------------------------------------------


class Requirement(BaseModel):
    """One ``include`` / ``exclude`` entry. ``position = [relation, i]``: this object is ``relation`` include[i]."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    cls: str = Field(alias="class", min_length=1, max_length=100, description="Object class, e.g. 'circle'.")
    count: int = Field(default=1, ge=1, le=20, description="include: at least this many; exclude: fewer than this.")
    color: str | None = Field(default=None, max_length=40)
    position: tuple[str, int] | None = Field(default=None, description="[relation, index of the reference entry].")


class SceneSpec(BaseModel):
    """A GenEval metadata record (the world's or GenEval's own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str = Field(min_length=1, max_length=40)
    include: list[Requirement] = Field(min_length=1, max_length=8)
    exclude: list[Requirement] = Field(default_factory=list, max_length=8)
    prompt: str = Field(min_length=1, max_length=1000)

    @field_validator("include")
    @classmethod
    def _positions_point_back(cls, v: list[Requirement]) -> list[Requirement]:
        for i, req in enumerate(v):
            if req.position is not None and not 0 <= req.position[1] < i:
                raise ValueError(f"include[{i}].position refers to entry {req.position[1]}; it must be an earlier one")
        return v

    def record(self) -> dict:
        """The JSON-ready GenEval record."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(req: Requirement) -> str:
    words = f"{req.color} {req.cls}" if req.color else req.cls
    return f"{_article(words)} {words}"


def canonical_prompt(spec: SceneSpec) -> str:
    """GenEval's wording of a spec ("a photo of a red circle and a blue square"): the frequent training form."""
    inc = spec.include
    if spec.tag == "counting":
        req = inc[0]
        noun = req.cls if req.count == 1 else plural(req.cls)
        color = f"{req.color} " if req.color else ""
        return f"a photo of {NUMBER_WORDS[req.count]} {color}{noun}"
    if spec.tag == "position":
        rel, _ = inc[1].position  # type: ignore[misc]
        return f"a photo of {_phrase(inc[1])} {rel} {_phrase(inc[0])}"
    if len(inc) == 2:
        return f"a photo of {_phrase(inc[0])} and {_phrase(inc[1])}"
    return f"a photo of {_phrase(inc[0])}"


def plural(noun: str) -> str:
    return noun + "es" if noun.endswith(("s", "x", "sh", "ch")) else noun + "s"


def make_spec(tag: str, shapes: list[str], colors: list[str | None], count: int = 1,
              relation: str | None = None) -> SceneSpec:
    """Build a world spec of ``tag``. Two-object tags take two shapes; ``relation`` (position) reads
    "shapes[1] relation shapes[0]", GenEval's convention (the second entry points back at the first)."""
    if tag not in TAGS:
        raise ValueError(f"tag must be one of {TAGS}, got {tag!r}")
    if tag == "counting":
        include = [Requirement(cls=shapes[0], count=count, color=colors[0])]
        spec = SceneSpec(tag=tag, include=include, exclude=[Requirement(cls=shapes[0], count=count + 1)], prompt="-")
    elif tag in ("two_object", "color_attr", "position"):
        if len(shapes) != 2 or shapes[0] == shapes[1]:
            raise ValueError(f"{tag} needs two different shapes, got {shapes}")
        pos = (relation, 0) if tag == "position" else None
        if tag == "position" and relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
        include = [Requirement(cls=shapes[0], color=colors[0]), Requirement(cls=shapes[1], color=colors[1], position=pos)]
        spec = SceneSpec(tag=tag, include=include, prompt="-")
    else:
        spec = SceneSpec(tag=tag, include=[Requirement(cls=shapes[0], color=colors[0])], prompt="-")
    return spec.model_copy(update={"prompt": canonical_prompt(spec)})


def sample_spec(tag: str, rng: random.Random, *, extra_colors: float = 0.0) -> SceneSpec:
    """A random world spec of ``tag`` as GenEval would ask it. ``extra_colors``: probability that a tag that does not
    ask for colours (single/two objects, counting, position) names them anyway (training captions vary this way)."""
    def maybe_color() -> str | None:
        return rng.choice(COLORS) if rng.random() < extra_colors else None

    if tag in ("single_object", "colors"):
        color = rng.choice(COLORS) if tag == "colors" else maybe_color()
        return make_spec(tag, [rng.choice(SHAPES)], [color])
    if tag == "counting":
        return make_spec(tag, [rng.choice(SHAPES)], [maybe_color()], count=rng.randint(1, MAX_OBJECTS))
    shapes = rng.sample(SHAPES, 2)
    if tag == "color_attr":
        return make_spec(tag, shapes, rng.sample(COLORS, 2))
    colors = [maybe_color(), maybe_color()] if rng.random() < extra_colors else [None, None]
    return make_spec(tag, shapes, colors, relation=rng.choice(RELATIONS) if tag == "position" else None)


# --------------------------------------------------------------------------------------------------------------------
# Scenes as tensors
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SceneBatch:
    """B scenes of up to ``MAX_OBJECTS`` objects. ``relation[b]`` is the relation of object 1 to object 0
    (an index into RELATIONS, -1 for none). Geometry (cx, cy, size) is in pixels, y pointing down."""

    shape: torch.Tensor  # (B, K) long, index into SHAPES
    color: torch.Tensor  # (B, K) long, index into COLORS
    present: torch.Tensor  # (B, K) bool
    relation: torch.Tensor  # (B,) long
    cx: torch.Tensor | None = None  # (B, K) float
    cy: torch.Tensor | None = None
    size: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.shape.shape[0]

    def to(self, device) -> SceneBatch:
        return SceneBatch(**{k: (v.to(device) if v is not None else None) for k, v in self.__dict__.items()})

    def index(self, idx: torch.Tensor) -> SceneBatch:
        return SceneBatch(**{k: (v[idx] if v is not None else None) for k, v in self.__dict__.items()})


def scene_attributes(spec: SceneSpec, rng: random.Random) -> tuple[list[int], list[int], int]:
    """Shapes and colours (indices) of every object a world spec draws, and the relation code: colours the spec
    leaves open are drawn at random; counted objects share one shape and one colour."""
    inc = spec.include
    if spec.tag == "counting":
        color = COLORS.index(inc[0].color) if inc[0].color else rng.randrange(len(COLORS))
        return [SHAPES.index(inc[0].cls)] * inc[0].count, [color] * inc[0].count, -1
    shapes = [SHAPES.index(r.cls) for r in inc]
    colors = [COLORS.index(r.color) if r.color else rng.randrange(len(COLORS)) for r in inc]
    relation = RELATIONS.index(inc[1].position[0]) if len(inc) > 1 and inc[1].position else -1
    return shapes, colors, relation


def attributes_to_batch(attrs: list[tuple[list[int], list[int], int]]) -> SceneBatch:
    """Stack per-scene (shapes, colours, relation) into a SceneBatch without geometry."""
    b = len(attrs)
    shape = torch.zeros(b, MAX_OBJECTS, dtype=torch.long)
    color = torch.zeros(b, MAX_OBJECTS, dtype=torch.long)
    present = torch.zeros(b, MAX_OBJECTS, dtype=torch.bool)
    relation = torch.full((b,), -1, dtype=torch.long)
    for i, (shapes, colors, rel) in enumerate(attrs):
        n = len(shapes)
        shape[i, :n] = torch.tensor(shapes)
        color[i, :n] = torch.tensor(colors)
        present[i, :n] = True
        relation[i] = rel
    return SceneBatch(shape=shape, color=color, present=present, relation=relation)


def _fallback_layout(relation: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A layout that is always valid for sizes <= 20: the four cells of a 2x2 grid in random order, jittered by up to
    4 px; for a relation, a pair 24-32 px apart on the relation's axis. Only ``torch.where``: no host sync on a GPU."""
    device = relation.device
    b = relation.shape[0]
    cells = torch.tensor([[16.0, 16.0], [48.0, 16.0], [16.0, 48.0], [48.0, 48.0]], device=device)
    order = torch.argsort(torch.rand(b, MAX_OBJECTS, generator=generator, device=device), dim=1)
    jitter = (torch.rand(b, MAX_OBJECTS, 2, generator=generator, device=device) * 2 - 1) * 4.0
    xy = cells[order] + jitter  # (B, K, 2)
    cx, cy = xy[..., 0], xy[..., 1]
    # relation pairs: rows = relation code; columns x0, y0, x1, y1 (object 1 relative to object 0)
    pairs = torch.tensor([[46, 32, 18, 32], [18, 32, 46, 32], [32, 46, 32, 18], [32, 18, 32, 46]],
                         dtype=torch.float32, device=device)[relation.clamp(min=0)]
    pairs = pairs + (torch.rand(b, 4, generator=generator, device=device) * 2 - 1) * 3.0
    has = (relation >= 0).view(b, 1)
    first_two_x = torch.where(has, pairs[:, [0, 2]], cx[:, :2])
    first_two_y = torch.where(has, pairs[:, [1, 3]], cy[:, :2])
    return torch.cat([first_two_x, cx[:, 2:]], dim=1), torch.cat([first_two_y, cy[:, 2:]], dim=1)


def sample_layouts(batch: SceneBatch, generator: torch.Generator, tries: int = 32) -> SceneBatch:
    """Sizes and non-overlapping positions for every scene, on ``batch``'s device, fully vectorised: ``tries``
    candidate layouts per scene, the first valid one is kept (a jittered 2x2 grid where none is)."""
    device = batch.shape.device
    b, k = batch.shape.shape

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=device)

    size = SIZE_MIN + (SIZE_MAX - SIZE_MIN) * rand(b, 1, k)
    half = size / 2
    lo, hi = half + EDGE_MARGIN, CANVAS - half - EDGE_MARGIN
    cx = lo + (hi - lo) * rand(b, tries, k)
    cy = lo + (hi - lo) * rand(b, tries, k)
    # Relations: object 1 is placed from object 0 along the relation's axis, far enough that GenEval's rule is clear.
    rel = batch.relation.view(b, 1).expand(b, tries)
    has_rel = rel >= 0
    dmin = (size[:, :, 0] + size[:, :, 1]) / 2 + MIN_GAP + 4.0
    dist = dmin + (40.0 - dmin) * rand(b, tries)
    jitter = (rand(b, tries) * 2 - 1) * 0.3 * dist
    sign = torch.where((rel == 0) | (rel == 2), -1.0, 1.0)
    horizontal = rel <= 1
    x1 = torch.where(horizontal, cx[:, :, 0] + sign * dist, cx[:, :, 0] + jitter)
    y1 = torch.where(horizontal, cy[:, :, 0] + jitter, cy[:, :, 0] + sign * dist)
    cx[:, :, 1] = torch.where(has_rel, x1, cx[:, :, 1])
    cy[:, :, 1] = torch.where(has_rel, y1, cy[:, :, 1])
    # Validity: inside the canvas, and every pair of present objects MIN_GAP apart (box to box).
    present = batch.present.view(b, 1, k)
    inside = (cx >= lo) & (cx <= hi) & (cy >= lo) & (cy <= hi)
    ok = (inside | ~present).all(dim=2)
    sep_x = (cx.unsqueeze(3) - cx.unsqueeze(2)).abs() - (half.unsqueeze(3) + half.unsqueeze(2))
    sep_y = (cy.unsqueeze(3) - cy.unsqueeze(2)).abs() - (half.unsqueeze(3) + half.unsqueeze(2))
    apart = torch.maximum(sep_x, sep_y) >= MIN_GAP
    both = present.unsqueeze(3) & present.unsqueeze(2)
    eye = torch.eye(k, dtype=torch.bool, device=device).view(1, 1, k, k)
    ok &= (apart | ~both | eye).all(dim=3).all(dim=2)
    first = torch.argmax(ok.int(), dim=1)  # index of the first valid try (0 when none is valid)
    any_ok = ok.any(dim=1)
    rows = torch.arange(b, device=device)
    out_x, out_y = cx[rows, first], cy[rows, first]
    fx, fy = _fallback_layout(batch.relation, generator)
    out_x = torch.where(any_ok.view(b, 1), out_x, fx)
    out_y = torch.where(any_ok.view(b, 1), out_y, fy)
    size = size.view(b, k)
    return SceneBatch(shape=batch.shape, color=batch.color, present=batch.present, relation=batch.relation,
                      cx=out_x, cy=out_y, size=size)


def _palette_tensor(device) -> torch.Tensor:
    return torch.tensor(list(PALETTE.values()), dtype=torch.float32, device=device) / 255.0


def rasterize(batch: SceneBatch, supersample: int = SUPERSAMPLE) -> torch.Tensor:
    """Draw scenes with geometry: (B, 3, CANVAS, CANVAS) floats in [0, 1] on the batch's device. Later objects paint
    over earlier ones (they never overlap in sampled layouts). ``supersample`` > 1 anti-aliases the edges."""
    if batch.cx is None or batch.cy is None or batch.size is None:
        raise ValueError("rasterize needs a SceneBatch with geometry; call sample_layouts first")
    device = batch.shape.device
    b, k = batch.shape.shape
    n = CANVAS * supersample
    coords = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / supersample
    dx = coords.view(1, 1, 1, n) - batch.cx.view(b, k, 1, 1)  # (B, K, 1, n)
    dy = coords.view(1, 1, n, 1) - batch.cy.view(b, k, 1, 1)  # (B, K, n, 1)
    h = (batch.size / 2).view(b, k, 1, 1)
    adx, ady = dx.abs(), dy.abs()
    circle = dx * dx + dy * dy <= h * h
    square = (adx <= h) & (ady <= h)
    triangle = (dy >= -h) & (dy <= h) & (adx <= (dy + h) / 2)
    arm = h / 3
    cross = ((adx <= arm) & (ady <= h)) | ((ady <= arm) & (adx <= h))
    shape = batch.shape.view(b, k, 1, 1)
    inside = torch.where(shape == 0, circle, torch.where(shape == 1, square, torch.where(shape == 2, triangle, cross)))
    inside &= batch.present.view(b, k, 1, 1)
    rgb = _palette_tensor(device)[batch.color]  # (B, K, 3)
    bg = torch.tensor(BACKGROUND, dtype=torch.float32, device=device) / 255.0
    img = bg.view(1, 3, 1, 1).expand(b, 3, n, n).clone()
    for j in range(k):
        img = torch.where(inside[:, j].unsqueeze(1), rgb[:, j].view(b, 3, 1, 1), img)
    if supersample > 1:
        img = torch.nn.functional.avg_pool2d(img, supersample)
    return img


def draw_specs(specs: list[SceneSpec], seed: int = 0, device: str = "cpu") -> tuple["np.ndarray", SceneBatch]:
    """Ground truth: one random scene per world spec, drawn. Returns uint8 images (B, H, W, 3) and the scenes."""
    rng = random.Random(seed)
    batch = attributes_to_batch([scene_attributes(s, rng) for s in specs]).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    scenes = sample_layouts(batch, gen)
    img = rasterize(scenes)
    return (img * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy(), scenes


def relative_position(box_a: tuple[float, float, float, float], box_b: tuple[float, float, float, float]) -> set[str]:
    """GenEval's relation test between boxes (x0, y0, x1, y1): the relations A has to B."""
    ca = ((box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2)
    cb = ((box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2)
    dim = (box_a[2] - box_a[0] + box_b[2] - box_b[0], box_a[3] - box_a[1] + box_b[3] - box_b[1])
    offset = (ca[0] - cb[0], ca[1] - cb[1])
    revised = [max(abs(o) - POSITION_THRESHOLD * d, 0.0) * (1 if o > 0 else -1) for o, d in zip(offset, dim)]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = (offset[0] ** 2 + offset[1] ** 2) ** 0.5
    dx, dy = revised[0] / norm, revised[1] / norm
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels
