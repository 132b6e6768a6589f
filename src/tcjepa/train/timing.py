"""Per-phase wall time of the training step, for ``tcjepa bench``; free when off, so the loop can pass one.

A step's total time says that it is slow, not where. The step wraps each of its phases (forward,
backward, clip, optimizer, ema) in :meth:`PhaseTimers.phase`; disabled timers hand back one shared
``nullcontext``, so the loop, which never reads them, pays an attribute lookup per phase and no clock.

On CUDA the host returns from a kernel launch long before the kernel finishes, so a host clock would time
the launches, not the work. There each phase records a pair of ``torch.cuda.Event`` s on the current
stream and the gaps are read once, after one synchronize, in :meth:`PhaseTimers.medians_ms`: timing adds
no sync to the step it measures. What the device spends waiting for the host (a host sync in the step,
Python overhead) lies between phases, so the phases can sum to less than the step time; the difference is
that overhead.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

_OFF = nullcontext()


class PhaseTimers:
    """``with timers.phase("forward"): ...``; :meth:`next_step` opens a step; medians over steps in ms."""

    def __init__(self, enabled: bool = False, device: torch.device | str = "cpu") -> None:
        self.enabled = enabled
        self.cuda = torch.device(device).type == "cuda"
        self._steps: list[list[tuple[str, object, object]]] = []

    def next_step(self) -> None:
        """Start a new step: the phases that follow are summed into it (a phase may repeat, e.g. per micro-batch)."""
        if self.enabled:
            self._steps.append([])

    def phase(self, name: str):
        """A context manager timing ``name`` inside the current step; a shared no-op when disabled."""
        return self._timed(name) if self.enabled else _OFF

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        if not self._steps:
            self._steps.append([])
        start = self._mark()
        try:
            yield
        finally:
            self._steps[-1].append((name, start, self._mark()))

    def _mark(self) -> object:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _ms(self, start: object, end: object) -> float:
        if self.cuda:
            return start.elapsed_time(end)  # type: ignore[attr-defined]
        return 1000 * (end - start)  # type: ignore[operator]

    def reset(self) -> None:
        """Forget the steps timed so far (e.g. the warm-up)."""
        self._steps = []

    def medians_ms(self) -> dict[str, float]:
        """Per phase, the median over steps of the phase's total time in the step (ms); {} when disabled."""
        if not self._steps:
            return {}
        if self.cuda:
            torch.cuda.synchronize()
        per_step: list[dict[str, float]] = []
        for spans in self._steps:
            totals: dict[str, float] = {}
            for name, start, end in spans:
                totals[name] = totals.get(name, 0.0) + self._ms(start, end)
            per_step.append(totals)
        names = list(dict.fromkeys(name for totals in per_step for name in totals))
        return {name: statistics.median(t.get(name, 0.0) for t in per_step) for name in names}
