"""Where each step stands in a run's schedules, and the learning rate there.

Two positions, both functions of the step alone (so a resumed run replays them exactly):
`progress`, 0 at step 0 to 1 at `total_steps` (the consistency step and the gain annealing
follow it), and the learning rate's cosine `phase`, 0 at `warmup_steps` to 1 at `total_steps`.
Between knots both are affine in the step. A run whose `train.total_steps` is changed at step s
(on resume) gets a knot at s holding both positions as they were, so that every schedule goes on
from where it stood and reaches its end at the new total instead of jumping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

from lincae_cli.errors import LincaeError


@dataclass(frozen=True)
class Knot:
    """The positions at `step`, where `train.total_steps` was changed."""

    step: int
    progress: float
    phase: float  # 0.0 while still warming up


@dataclass(frozen=True)
class Schedule:
    warmup_steps: int
    total_steps: int
    knots: tuple[Knot, ...] = ()

    def progress(self, step: int) -> float:
        """0 at step 0, 1 at `total_steps` (beyond it: extrapolated, as step / total_steps)."""
        anchors = [(0, 0.0), *((k.step, k.progress) for k in self.knots), (self.total_steps, 1.0)]
        return _affine(anchors, step)

    def phase(self, step: int) -> float:
        """The cosine's phase for `step` ≥ `warmup_steps`: 0 there, 1 at `total_steps` and after."""
        later = [(k.step, k.phase) for k in self.knots if k.step > self.warmup_steps]
        anchors = [(self.warmup_steps, 0.0), *later, (self.total_steps, 1.0)]
        return min(1.0, _affine(anchors, step))

    def extended(self, step: int, total_steps: int) -> Schedule:
        """The schedule of a run at `step` whose total becomes `total_steps` (> `step`)."""
        if total_steps <= step:
            raise LincaeError(
                f"train.total_steps = {total_steps} is not above the run's step {step}"
            )
        if total_steps == self.total_steps:
            return self
        kept = tuple(k for k in self.knots if k.step < step)
        if step == 0:
            return Schedule(self.warmup_steps, total_steps, kept)
        phase = self.phase(step) if step > self.warmup_steps else 0.0
        knot = Knot(step, self.progress(step), phase)
        return Schedule(self.warmup_steps, total_steps, (*kept, knot))

    def to_json(self) -> list[list[float]]:
        """The knots as `[[step, progress, phase], ...]` (what a checkpoint records)."""
        return [[k.step, k.progress, k.phase] for k in self.knots]

    @classmethod
    def from_json(cls, warmup_steps: int, total_steps: int, knots: list | None) -> Schedule:
        return cls(warmup_steps, total_steps, tuple(Knot(int(s), p, f) for s, p, f in knots or []))


def cosine_learning_rate(step: int, lr: float, lr_min: float, schedule: Schedule) -> float:
    """Linear warm-up from 0 to `lr`, then cosine decay to `lr_min` at the schedule's end."""
    if step < schedule.warmup_steps:
        return lr * step / max(1, schedule.warmup_steps)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * schedule.phase(step)))


def _affine(anchors: list[tuple[int, float]], step: int) -> float:
    """The piecewise-affine function through `anchors` (sorted by step) at `step`; the first
    and last pieces extend beyond the ends. Written so that a single piece from (0, 0) gives
    exactly step / end, the formula of runs before knots existed."""
    pieces = [(a, b) for a, b in pairwise(anchors) if b[0] > a[0]]
    if not pieces:  # e.g. warm-up as long as the run: the cosine never starts
        return 1.0
    (s0, v0), (s1, v1) = next(((a, b) for a, b in pieces if step < b[0]), pieces[-1])
    return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
