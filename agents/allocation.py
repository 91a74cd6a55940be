"""ImageAllocator: a campaign-wide budget of images for the search arm, shared out among intents as they search.

A campaign with ``CampaignSpec.budget_images`` = B and N intents runs one allocator. The rule (``adaptive``, the
default):

1. **Even start.** Each intent's *share* is ``min(B // N, max_images)``; what that leaves of B (the remainder of the
   division, or all that the per-intent cap ``max_images`` keeps from the shares) starts in the *pool*.
2. **Per round.** Before each round the planner asks for the images the round needs (its whole prompts x
   ``seeds_per_prompt``). The grant comes first from the intent's own unspent share; an intent that is *improving*
   (its best branch score rose by more than ``min_improvement`` in its last round; round 0 never draws) may draw
   the rest from the pool. An intent never gets more than ``max_images`` in all. Grants are whole prompts: a
   multiple of ``seeds_per_prompt``; a round that gets less than one prompt is not run and the intent stops with
   ``stop_reason="budget"``.
3. **Early stop frees a share.** An intent that stops (threshold reached, plateau, rounds, budget) or is refused
   returns what it did not spend of its share to the pool, where intents still improving draw it.
4. **Never over.** A share is reserved until its intent finishes, so ``sum(granted) <= B`` always: the pool is B
   minus what every unfinished intent reserves (``max(share, granted)``) minus what every finished one spent.

``even`` is the same budget split evenly with no pool: an intent spends at most its share, and a share left unspent is
not used (the comparison arm of ``benchmarks/bench_budget.py``).

**A budget of device seconds** (``CampaignSpec.budget_device_seconds``, :class:`DeviceSecondsAllocator`): the same
rule on a ledger of milliseconds of renderer time (each image's share of its pipeline call, what the lineage's
``render_share_s`` records). A round's images cost what they will take, known only once they are rendered, so a grant
*reserves* images x the dearest seconds per image seen so far (first: a probe, one image alone at the campaign's
settings; a batch of one is the dearest per image), and once the round is rendered the reservation is *settled* to
what its images took; the difference goes back. The budget is never exceeded while no image costs more than the
dearest one seen before it; an image that does is charged in full and reported (``overshoot``), and the
reservations follow it from then on.

What counts is what was *granted*: images granted to a round whose render then failed count, so a resumed campaign
never renders past the budget (the runner persists the grants in the store's ``budget.json`` before it renders).
The baseline arm is not counted: it renders, round by round, as many images as the search does.

Single event loop, no awaits inside: every method runs to completion, so concurrent intents see a consistent ledger.
The pool is first come, first served (with concurrency > 1 which intent draws it depends on timing).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

BudgetRule = Literal["adaptive", "even"]


class ImageAllocator:
    """The campaign's ledger of images granted to each intent's search arm (see the module docstring for the rule).

    ``granted`` and ``finished`` restore a ledger (a resumed campaign: grants from ``budget.json``, finished =
    committed intents)."""

    def __init__(self, budget: int, intent_ids: Iterable[str], *, max_per_intent: int, unit: int = 1,
                 rule: BudgetRule = "adaptive", granted: dict[str, int] | None = None,
                 finished: Iterable[str] = ()):
        ids = list(dict.fromkeys(intent_ids))
        if not ids:
            raise ValueError("an image budget needs at least one intent")
        if budget < 1 or max_per_intent < 1 or unit < 1:
            raise ValueError(f"budget ({budget}), max_per_intent ({max_per_intent}) and unit ({unit}) must be positive")
        if rule not in ("adaptive", "even"):
            raise ValueError(f"budget rule must be 'adaptive' or 'even' but is {rule!r}")
        self.budget = budget
        self.max_per_intent = max_per_intent
        self.unit = unit
        self.rule: BudgetRule = rule
        self.share = min(budget // len(ids), max_per_intent)
        self.granted: dict[str, int] = {i: 0 for i in ids}
        self.finished: set[str] = set()
        self._reserved = self.share * len(ids)  # sum over intents of what each holds back from the pool
        self.spent = 0  # sum(granted)
        self.overshoot = 0  # charged beyond reservations (a device-seconds ledger only; an image is never dearer)
        for intent_id, n in (granted or {}).items():
            if intent_id in self.granted and n > 0:
                self._set(intent_id, n)
        for intent_id in finished:
            if intent_id in self.granted:
                self.release(intent_id)
        self.spent_at_start = self.spent
        if self._reserved > budget:
            raise ValueError(f"the stored grants ({self.spent}) exceed the campaign's budget ({budget})")

    # -- the ledger -----------------------------------------------------------------------------------------------

    def _hold(self, intent_id: str) -> int:
        g = self.granted[intent_id]
        return g if intent_id in self.finished else max(self.share, g)

    def _set(self, intent_id: str, granted: int) -> None:
        before = self._hold(intent_id)
        self.spent += granted - self.granted[intent_id]
        self.granted[intent_id] = granted
        self._reserved += self._hold(intent_id) - before

    @property
    def pool(self) -> int:
        """Images no intent holds: the remainder, and the unspent shares of finished intents."""
        return self.budget - self._reserved

    @property
    def remaining(self) -> int:
        """Images not granted yet (some may stay unused: reserved by intents that stop before spending them)."""
        return self.budget - self.spent

    def available(self, intent_id: str, improving: bool) -> int:
        """The most a round of this intent could be granted now (before rounding to whole prompts)."""
        if intent_id in self.finished:
            return 0
        g = self.granted[intent_id]
        own = max(0, self.share - g)
        extra = self.pool if self.rule == "adaptive" and improving else 0
        return max(0, min(self.max_per_intent - g, own + extra))

    def grant(self, intent_id: str, wanted: int, improving: bool) -> int:
        """Grant up to ``wanted`` images to this intent's next round (a multiple of ``unit``; 0: none left to it)."""
        n = min(wanted, self.available(intent_id, improving))
        n -= n % self.unit
        if n > 0:
            self._set(intent_id, self.granted[intent_id] + n)
        assert self.spent <= self.budget + self.overshoot and self._reserved <= self.budget + self.overshoot, \
            "budget overdrawn"
        return n

    def release(self, intent_id: str) -> None:
        """The intent has stopped (or was refused): what it did not spend of its share goes to the pool."""
        if intent_id in self.finished:
            return
        before = self._hold(intent_id)
        self.finished.add(intent_id)
        self._reserved += self._hold(intent_id) - before

    def snapshot(self) -> dict[str, int]:
        """The grants so far (what ``budget.json`` holds): only intents granted anything."""
        return {i: n for i, n in self.granted.items() if n}

    def for_intent(self, intent_id: str, save: Callable[[], Awaitable[None]] | None = None) -> IntentAllowance:
        return IntentAllowance(self, intent_id, save)


class IntentAllowance:
    """One intent's view of the allocator, what the planner holds (``BeamSearchPlanner(allowance=...)``), in images.
    ``save`` (the runner's: write the ledger to the store) is awaited after every grant, before the round renders."""

    def __init__(self, allocator: ImageAllocator, intent_id: str, save: Callable[[], Awaitable[None]] | None = None):
        self.allocator = allocator
        self.intent_id = intent_id
        self._save = save

    async def available(self, improving: bool) -> int:
        """The most the next round could be granted now, in images (async: a worker asks the runner's ledger)."""
        return self.allocator.available(self.intent_id, improving)

    async def grant(self, wanted: int, improving: bool) -> int:
        n = self.allocator.grant(self.intent_id, wanted, improving)
        if n and self._save is not None:
            await self._save()
        return n

    async def settle(self, images: int, seconds: float) -> None:
        """The granted round was rendered: ``images`` took ``seconds`` of device time (an image budget counts images
        at grant; nothing to settle)."""

    def release(self) -> None:
        self.allocator.release(self.intent_id)


PROBES = "@probes"
"""The key of ``budget.json`` that holds the probes' milliseconds (no intent id can be it: ids are safe names)."""


class DeviceSecondsAllocator(ImageAllocator):
    """The allocator's rule on a budget of device seconds, kept in whole milliseconds (see the module docstring):
    grants reserve images x :attr:`cost_ms` (the dearest milliseconds per image seen so far), :meth:`settle` charges
    what the round took. ``unit`` is in images here (whole prompts: ``seeds_per_prompt``)."""

    def __init__(self, budget_s: float, intent_ids: Iterable[str], *, seconds_per_image: float, unit: int = 1,
                 rule: BudgetRule = "adaptive", granted: dict[str, int] | None = None, finished: Iterable[str] = (),
                 probe_ms: int = 0):
        """``probe_ms``: this run's probe; the probes of earlier runs come back with ``granted``. The intents' shares
        are split from what every probe left of the budget."""
        if seconds_per_image < 0:
            raise ValueError(f"seconds_per_image must not be negative but is {seconds_per_image}")
        budget_ms = int(budget_s * 1000)
        granted = dict(granted or {})
        probes = granted.pop(PROBES, 0) + probe_ms
        super().__init__(max(1, budget_ms - probes), intent_ids, max_per_intent=budget_ms, unit=1, rule=rule,
                         granted=granted, finished=finished)
        self.budget = budget_ms
        self.probes = probes  # every run's probe, charged before the shares
        self.spent += probes
        self.spent_at_start = self.spent
        self._reserved += probes
        self.image_unit = unit
        self.cost_ms = max(1, math.ceil(seconds_per_image * 1000))  # 0: no estimate (nothing left to grant)

    def snapshot(self) -> dict[str, int]:
        return {**super().snapshot(), **({PROBES: self.probes} if self.probes else {})}

    def images_available(self, intent_id: str, improving: bool) -> int:
        return self.available(intent_id, improving) // self.cost_ms

    def grant_images(self, intent_id: str, wanted: int, improving: bool) -> tuple[int, int]:
        """(images granted, milliseconds reserved for them): whole multiples of ``unit`` images."""
        n = min(wanted, self.images_available(intent_id, improving))
        n -= n % self.image_unit
        if n <= 0:
            return 0, 0
        reserved = n * self.cost_ms
        self.grant(intent_id, reserved, improving)
        return n, reserved

    def settle(self, intent_id: str, images: int, reserved_ms: int, seconds: float) -> None:
        """Replace a round's reservation by what its ``images`` took (``seconds``); the dearest image seen raises
        what later grants reserve."""
        actual = math.ceil(seconds * 1000)
        self.overshoot += max(0, actual - reserved_ms)
        self._set(intent_id, self.granted[intent_id] - reserved_ms + actual)
        if images:
            self.cost_ms = max(self.cost_ms, math.ceil(actual / images))

    def for_intent(self, intent_id: str, save: Callable[[], Awaitable[None]] | None = None) -> DeviceSecondsAllowance:
        return DeviceSecondsAllowance(self, intent_id, save)


class DeviceSecondsAllowance(IntentAllowance):
    """One intent's view of a :class:`DeviceSecondsAllocator`, in images as the planner asks; each grant's
    reservation is settled when its round has rendered."""

    allocator: DeviceSecondsAllocator

    def __init__(self, allocator: DeviceSecondsAllocator, intent_id: str,
                 save: Callable[[], Awaitable[None]] | None = None):
        super().__init__(allocator, intent_id, save)
        self._reserved: list[tuple[int, int]] = []  # (images, ms) of grants not settled yet, oldest first

    async def available(self, improving: bool) -> int:
        return self.allocator.images_available(self.intent_id, improving)

    async def grant(self, wanted: int, improving: bool) -> int:
        n, reserved = self.allocator.grant_images(self.intent_id, wanted, improving)
        if n:
            self._reserved.append((n, reserved))
            if self._save is not None:
                await self._save()
        return n

    async def settle(self, images: int, seconds: float) -> None:
        """Charge the oldest unsettled grant what its round took, and save the ledger."""
        if self._reserved:
            _, reserved = self._reserved.pop(0)
            self.allocator.settle(self.intent_id, images, reserved, seconds)
            if self._save is not None:
                await self._save()


def projected_finish_s(elapsed_s: float, spent: int, remaining: int, finished: int, unfinished: int) -> float | None:
    """Seconds until a running campaign ends, from this run's rates so far (``spent`` images granted and ``finished``
    intents in ``elapsed_s``): the sooner of the ``remaining`` images at the spend rate (once the budget is granted
    every intent stops at its next round) and the ``unfinished`` intents at the finish rate. None without a rate."""
    if elapsed_s <= 0:
        return None
    if unfinished <= 0 or remaining <= 0:
        return 0.0
    projections = []
    if spent > 0:
        projections.append(remaining * elapsed_s / spent)
    if finished > 0:
        projections.append(unfinished * elapsed_s / finished)
    return min(projections) if projections else None
