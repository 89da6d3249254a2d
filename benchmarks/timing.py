"""Interleaved timing: every candidate of every operation is timed in each
round, in a rotating order, in the same process; the figures are medians
over the rounds. Python candidates run in the same loop shape, so the
loop's own cost (tens of ns) is in each of them and cancels in the ratios;
the floor runs its loop in C."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from time import perf_counter_ns
from typing import Any

#: A batch runner: makes `count` calls, returns the elapsed nanoseconds.
Runner = Callable[[int], int]

FLOOR = "floor (C loop)"
REFERENCE = "C-API reference"
LIBRARY = "wfpredirect"


@dataclass
class Candidate:
    name: str
    runner: Runner
    outcome: str = "ok"  # or the error each call ends in (the Windows error paths)
    samples: list[float] = field(default_factory=list)  # ns per call, one per round


def python_runner(function: Callable[..., Any], args: Sequence[Any]) -> Runner:
    """A loop calling function(*args) that expects success."""
    if len(args) == 1:
        (first,) = args

        def run_one(count: int) -> int:
            start = perf_counter_ns()
            for _ in repeat(None, count):
                function(first)
            return perf_counter_ns() - start

        return run_one
    first, second = args

    def run_two(count: int) -> int:
        start = perf_counter_ns()
        for _ in repeat(None, count):
            function(first, second)
        return perf_counter_ns() - start

    return run_two


def error_path_runner(function: Callable[..., Any], args: Sequence[Any]) -> Runner:
    """A loop calling function(*args) where each call may raise an OSError
    (or a ValueError: the library refusing the arguments)."""

    def run(count: int) -> int:
        start = perf_counter_ns()
        for _ in repeat(None, count):
            # Not contextlib.suppress: its enter and exit would be timed too.
            try:  # noqa: SIM105
                function(*args)
            except (OSError, ValueError):
                pass
        return perf_counter_ns() - start

    return run


def native_loop_runner(loop: Callable[..., int], *args: Any) -> Runner:
    """A C loop called once per batch: loop(fd, count, *rest) -> successes."""
    fd, *rest = args

    def run(count: int) -> int:
        start = perf_counter_ns()
        succeeded = loop(fd, count, *rest)
        elapsed = perf_counter_ns() - start
        if succeeded != count:
            raise RuntimeError(f"the floor loop failed {count - succeeded} of {count} calls")
        return elapsed

    return run


def measure(
    operations: dict[str, list[Candidate]], *, rounds: int, batch: int, warmup: int = 2
) -> None:
    """Fills each candidate's samples: `rounds` medians-to-be, each the mean
    ns per call of one batch. Candidates are rotated each round so that none
    always runs first."""
    for round_number in range(warmup + rounds):
        for candidates in operations.values():
            shift = round_number % len(candidates)
            for candidate in candidates[shift:] + candidates[:shift]:
                per_call = candidate.runner(batch) / batch
                if round_number >= warmup:
                    candidate.samples.append(per_call)


def paired_median(samples: list[float], baseline: list[float], how: str) -> float:
    """The median over rounds of (sample - baseline) or (sample / baseline),
    pairing the samples taken in the same round: robust to a machine whose
    speed changes between rounds."""
    if how == "difference":
        return statistics.median(a - b for a, b in zip(samples, baseline, strict=True))
    return statistics.median(a / b for a, b in zip(samples, baseline, strict=True))


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    first, median, third = statistics.quantiles(samples, n=4, method="inclusive")
    return first, median, third
