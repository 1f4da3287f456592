"""The serving scheduler's launch rules for a batch that runs to completion, with arrivals spread in time (with
simultaneous arrivals the two rules agree, so only spread arrivals tell them apart):

    dynamic  launches once the *oldest* waiting request has waited the window (or the batch is full)
    static   launches once *nothing new* has arrived for a whole window (or the batch is full)
"""
import pytest

from profiling.serving.engine.scheduler import Scheduler
from profiling.serving.engine.sequence import Sequence
from profiling.serving.engine.waiting_queue import WaitingQueue

TICK = 1 / 128  # exact in binary floating point, so "has waited the window" is never a rounding accident
WINDOW = 4 * TICK


def scheduler_with(policy: str, arrivals: list[float], max_batch: int = 4) -> Scheduler:
    scheduler = Scheduler(policy, max_batch, WINDOW, WaitingQueue("fifo"), clock=lambda: 0.0)
    for index, arrival in enumerate(arrivals):
        scheduler.add(Sequence(f"r{index}", [1], 2, arrival_s=arrival))
    return scheduler


def launched(scheduler: Scheduler, now: float) -> list[str] | float:
    """The request ids of the batch that launches at `now`, or how long the scheduler would still wait."""
    step, wait_s = scheduler._schedule(now)
    if step is None:
        return wait_s
    assert step.kind == "prefill"
    return [seq.request_id for seq in step.sequences]


def test_dynamic_launches_when_the_oldest_has_waited_the_window():
    scheduler = scheduler_with("dynamic", [0.0, 2 * TICK])
    assert launched(scheduler, 3 * TICK) == pytest.approx(TICK)  # the oldest has waited 3 ticks of 4
    assert launched(scheduler, 4 * TICK) == ["r0", "r1"]  # the newest waited only 2: the oldest decides


def test_static_launches_when_nothing_new_arrived_for_a_window():
    scheduler = scheduler_with("static", [0.0, 2 * TICK])
    assert launched(scheduler, 4 * TICK) == pytest.approx(2 * TICK)  # r1 came 2 ticks ago: the queue may grow
    assert launched(scheduler, 6 * TICK) == ["r0", "r1"]


@pytest.mark.parametrize("policy", ["static", "dynamic"])
def test_a_full_batch_launches_at_once(policy):
    scheduler = scheduler_with(policy, [0.0, TICK, 2 * TICK, 3 * TICK, 3 * TICK], max_batch=4)
    assert launched(scheduler, 3 * TICK) == ["r0", "r1", "r2", "r3"]  # the cap, not a window, launched it
