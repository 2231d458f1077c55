"""Progress lines for long jobs, so `tail -f` on a running job's log shows where it is.

A job's log (the workflow redirects stdout and stderr to it) gets one plain line when the work starts,
then one at most every `XKDBENCH_PROGRESS_SECONDS` seconds (default 30; 0 turns the lines off), and one
at the end:

    [distill] step 350/1000 (35%) | loss 2.3141 | 11.8 steps/s | elapsed 0:00:30 | ETA 0:00:55

The interval is wall-clock, not a step count, so a teacher of thousands of steps and a cell of a hundred
both report at the same steady pace. Printing reads no random state and changes no result.
"""
from __future__ import annotations

import datetime
import os
import sys
import time

DEFAULT_SECONDS = 30.0


def interval_seconds() -> float:
    value = os.environ.get("XKDBENCH_PROGRESS_SECONDS", "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_SECONDS
    except ValueError:
        raise ValueError(f"XKDBENCH_PROGRESS_SECONDS: expected a number of seconds (0: off), got {value!r}") from None


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Counts `done` of `total` units (steps, batches) from `start` (a resumed run) and prints lines."""

    def __init__(self, label: str, total: int, *, unit: str = "step", start: int = 0, enabled: bool = True,
                 stream=None, every: float | None = None):
        self.label, self.total, self.unit, self.start = label, total, unit, start
        self.every = interval_seconds() if every is None else every
        self.enabled = enabled and self.every > 0
        self.stream = stream or sys.stderr
        self.started = self.last = time.perf_counter()
        if self.enabled:
            resumed = f", resumed at {start}" if start else ""
            self._print(f"{unit} {start}/{total}{resumed}: starting")

    def due(self) -> bool:
        """Whether a line is due now (the caller then computes its fields and calls `update`)."""
        return self.enabled and time.perf_counter() - self.last >= self.every

    def update(self, done: int, **fields: float) -> None:
        """Print a line for `done` units with `fields` (e.g. loss=2.31), whether or not one is due."""
        if not self.enabled:
            return
        now = time.perf_counter()
        self.last = now
        elapsed, counted = now - self.started, done - self.start
        rate = counted / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.unit} {done}/{self.total} ({100 * done / max(1, self.total):.0f}%)"]
        parts += [f"{name} {value:.4g}" for name, value in fields.items()]
        parts.append(f"{rate:.3g} {self.unit}s/s" if rate >= 1 or rate == 0 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {_clock(elapsed)}")
        if 0 < counted and done < self.total:
            parts.append(f"ETA {_clock((self.total - done) / rate)}")
        self._print(" | ".join(parts))

    def _print(self, text: str) -> None:
        print(f"[{self.label}] {text}", file=self.stream, flush=True)
