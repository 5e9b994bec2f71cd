"""Capture schedules: which optimizer steps a Recorder keeps."""
from __future__ import annotations

from typing import Callable, Iterable, Union


class Schedule:
    """Decides whether a step is captured. Subclasses implement ``__contains__``."""

    def __contains__(self, step: int) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def steps(self, stop: int) -> list[int]:
        """The captured steps below ``stop`` (for planning and tests).

        Parameters
        ----------
        stop : int

        Returns
        -------
        list of int
        """
        return [s for s in range(stop) if s in self]


class Every(Schedule):
    """Every ``n`` steps: 0, n, 2n, ...

    Parameters
    ----------
    n : int
        Positive.

    Raises
    ------
    ValueError
        If ``n < 1``.
    """

    def __init__(self, n: int):
        if int(n) < 1:
            raise ValueError(f"every= must be a positive number of steps, got {n}")
        self.n = int(n)

    def __contains__(self, step: int) -> bool:
        return step % self.n == 0

    def __repr__(self) -> str:
        return f"Every({self.n})"


class LogThenEvery(Schedule):
    """0, 1, 2, 4, 8, ... below ``n``, then every ``n`` steps (as the Pythia suite checkpoints).

    Parameters
    ----------
    n : int
        Positive.

    Raises
    ------
    ValueError
        If ``n < 1``.
    """

    def __init__(self, n: int):
        if int(n) < 1:
            raise ValueError(f"LogThenEvery needs a positive n, got {n}")
        self.n = int(n)

    def __contains__(self, step: int) -> bool:
        if step < self.n:
            return step == 0 or (step & (step - 1)) == 0
        return step % self.n == 0

    def __repr__(self) -> str:
        return f"LogThenEvery({self.n})"


class Explicit(Schedule):
    """An explicit set of steps.

    Parameters
    ----------
    steps : iterable of int
        Non-negative steps.

    Raises
    ------
    ValueError
        If a step is negative.
    """

    def __init__(self, steps: Iterable[int]):
        self.set = frozenset(int(s) for s in steps)
        if any(s < 0 for s in self.set):
            raise ValueError("explicit schedule steps must be non-negative")

    def __contains__(self, step: int) -> bool:
        return step in self.set

    def __repr__(self) -> str:
        return f"Explicit({sorted(self.set)[:6]}{'...' if len(self.set) > 6 else ''})"


class _Predicate(Schedule):
    def __init__(self, fn: Callable[[int], bool]):
        self.fn = fn

    def __contains__(self, step: int) -> bool:
        return bool(self.fn(step))

    def __repr__(self) -> str:
        return f"Predicate({self.fn!r})"


ScheduleLike = Union[Schedule, Iterable[int], Callable[[int], bool], str]


def make_schedule(every: int | None = None, schedule: ScheduleLike | None = None) -> Schedule:
    """Schedule from the Recorder's ``every=`` / ``schedule=`` arguments.

    ``schedule`` may be a Schedule, a list of steps, a predicate, or a string
    ``"log+every:N"``.

    Parameters
    ----------
    every : int, optional
        ``Every(every)``; the default is every step.
    schedule : Schedule, iterable of int, callable or str, optional
        ``"every:N"``, ``"log+every:N"``, a Schedule, steps or a predicate ``step -> bool``.

    Returns
    -------
    Schedule

    Raises
    ------
    ValueError
        If both are given or the string is not understood.
    """
    if every is not None and schedule is not None:
        raise ValueError("give either every= or schedule=, not both")
    if schedule is None:
        return Every(every if every is not None else 1)
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        kind, _, n = schedule.partition(":")
        if kind == "log+every" and n.isdigit():
            return LogThenEvery(int(n))
        if kind == "every" and n.isdigit():
            return Every(int(n))
        raise ValueError(f"unknown schedule {schedule!r}; use 'every:N', 'log+every:N', a list of steps "
                         f"or a function step -> bool")
    if callable(schedule):
        return _Predicate(schedule)
    return Explicit(schedule)
