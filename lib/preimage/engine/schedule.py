"""Piecewise-constant learning-rate schedules (the paper's §3: momentum restarts at each change)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingsError
from .transforms import Transforms


@dataclass(frozen=True)
class Schedule:
    """Piecewise-constant learning rate: ``steps`` is ((rate, iterations), ...). Momentum
    restarts from zero whenever the rate changes."""

    steps: tuple[tuple[float, int], ...]

    @property
    def iterations(self) -> int:
        return sum(n for _, n in self.steps)

    def rates(self) -> list[float]:
        return [rate for rate, n in self.steps for _ in range(n)]

    def times(self, factor: float) -> "Schedule":
        """Every rate multiplied by ``factor``."""
        return self if factor == 1.0 else Schedule(tuple((rate * factor, n) for rate, n in self.steps))

    def scaled(self, iterations: int) -> "Schedule":
        """The same rates over ``iterations`` in total, each phase kept in proportion."""
        _check_iterations(iterations, 1)
        total, done, steps = self.iterations, 0, []
        for i, (rate, n) in enumerate(self.steps):
            end = round(iterations * sum(m for _, m in self.steps[:i + 1]) / total)
            if end > done:
                steps.append((rate, end - done))
                done = end
        return Schedule(tuple(steps))

    def shortened(self, iterations: int) -> "Schedule":
        """The same rates over ``iterations``: half at the first rate, where most of the progress
        is made, the rest shared by the later rates (on AlexNet conv1, random weights, 100
        iterations this way reach the error of the full 400; ``scaled(100)`` does not:
        docs/benchmarks/)."""
        _check_iterations(iterations, len(self.steps))
        first = iterations - (iterations // 2) if len(self.steps) > 1 else iterations
        rest = self.steps[1:]
        steps = [(self.steps[0][0], first)]
        for i, (rate, _) in enumerate(rest):
            share = (iterations - first) * (i + 1) // len(rest) - (iterations - first) * i // len(rest)
            steps.append((rate, share))
        return Schedule(tuple((r, n) for r, n in steps if n > 0))

    def with_iterations(self, iterations: int | None) -> "Schedule":
        """What "N iterations" means everywhere (CLI, recipes, explorer, Table 3): this schedule
        when N is None or its own length; fewer, ``shortened`` (half at the first rate); more,
        ``scaled`` (every phase stretched in proportion)."""
        if iterations is None or iterations == self.iterations:
            return self
        _check_iterations(iterations, len(self.steps))
        return self.shortened(iterations) if iterations < self.iterations else self.scaled(iterations)

    def describe(self) -> list[list[float]]:
        return [[rate, n] for rate, n in self.steps]


def _check_iterations(iterations, least: int) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < least:
        raise SettingsError(f"iterations must be an integer >= {least}, not {iterations!r}")


@dataclass(frozen=True)
class Stage:
    """A schedule run under its random transformations. A run of several stages starts each
    from the previous one's result (the centred window) with the optimiser's state afresh, as
    the IJCV paper's inversion does (300 iterations jittered, then 50 without)."""

    schedule: Schedule
    transforms: Transforms = Transforms()

    def describe(self) -> dict:
        return {"schedule": self.schedule.describe(), "transforms": self.transforms.describe()}


def joined(stages) -> Schedule:
    """The stages' schedules one after the other."""
    return Schedule(tuple(step for stage in stages for step in stage.schedule.steps))
