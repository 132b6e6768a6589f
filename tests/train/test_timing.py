"""Phase timers: a phase repeated within a step is summed, steps are summarised by their median."""

from __future__ import annotations

import time

from tcjepa.train.timing import PhaseTimers


def test_timers_sum_a_repeated_phase_within_a_step() -> None:
    timers = PhaseTimers(enabled=True)
    for _ in range(3):
        timers.next_step()
        for _ in range(2):
            with timers.phase("wait"):
                time.sleep(0.01)
        with timers.phase("other"):
            pass
    medians = timers.medians_ms()
    assert list(medians) == ["wait", "other"]
    assert medians["wait"] >= 20 > medians["other"]
    timers.reset()
    assert timers.medians_ms() == {}


def test_disabled_timers_record_nothing() -> None:
    timers = PhaseTimers()
    timers.next_step()
    with timers.phase("wait"):
        time.sleep(0.001)
    assert timers.phase("a") is timers.phase("b")  # one shared null context: the loop pays no clock
    assert timers.medians_ms() == {}
