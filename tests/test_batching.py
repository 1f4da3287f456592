"""The dynamic batcher's semantics (with a hand-driven clock), arrival processes, static helpers, telemetry."""
import sys
import threading
import time
import types

import numpy as np
import psutil
import pytest
import torch

from profiling import telemetry as telemetry_module
from profiling.batching import (DynamicBatcher, Request, burst_arrivals, feed, padding_waste_ratio,
                                poisson_arrivals, static_batch)
from profiling.telemetry import Telemetry, open_nvml


class FakeClock:
    """A clock that moves only when the test says so (seconds)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ids(batch):
    return None if batch is None else [request.request_id for request in batch]


# ---- batcher semantics --------------------------------------------------------------------------------------
def test_launches_as_soon_as_max_batch_requests_wait():
    clock = FakeClock()
    batcher = DynamicBatcher(max_batch=3, wait_window_s=1.0, clock=clock)
    batcher.put(Request(0))
    batcher.put(Request(1))
    assert batcher.poll() is None  # 2 < 3 and the window (1 s) has not expired
    batcher.put(Request(2))
    assert ids(batcher.poll()) == [0, 1, 2]  # no time passed: the cap alone launched it
    assert batcher.waiting() == 0


def test_launches_when_the_oldest_request_has_waited_the_window():
    clock = FakeClock()
    # Times in 1/128 s steps, exact in binary floating point, so "has waited the window" is not a rounding accident.
    tick = 1 / 128
    batcher = DynamicBatcher(max_batch=8, wait_window_s=4 * tick, clock=clock)
    batcher.put(Request(0))
    clock.advance(2 * tick)
    batcher.put(Request(1))
    clock.advance(tick)  # the oldest has waited 3 ticks of its 4
    assert batcher.poll() is None
    clock.advance(tick)  # 4 ticks: the window of the *oldest* request decides (the newest waited only 2)
    batch = batcher.poll()
    assert ids(batch) == [0, 1]
    assert [request.arrival_s for request in batch] == [0.0, 2 * tick]


def test_arrival_is_stamped_by_the_batcher_clock():
    clock = FakeClock()
    batcher = DynamicBatcher(max_batch=2, wait_window_s=1.0, clock=clock)
    clock.advance(3.5)
    request = batcher.put(Request(7))
    assert request.arrival_s == 3.5


def test_fifo_and_the_cap_split_a_long_queue():
    clock = FakeClock()
    batcher = DynamicBatcher(max_batch=2, wait_window_s=0.05, clock=clock)
    for request_id in range(5):
        batcher.put(Request(request_id))
    assert ids(batcher.poll()) == [0, 1]
    assert ids(batcher.poll()) == [2, 3]
    assert batcher.poll() is None  # one left, its window not yet expired
    clock.advance(0.05)
    assert ids(batcher.poll()) == [4]


def test_zero_window_launches_whatever_is_waiting():
    clock = FakeClock()
    batcher = DynamicBatcher(max_batch=4, wait_window_s=0.0, clock=clock)
    assert batcher.poll() is None  # nothing waiting
    batcher.put(Request(0))
    batcher.put(Request(1))
    assert ids(batcher.poll()) == [0, 1]


def test_closed_batcher_still_waits_out_the_last_window_then_ends():
    clock = FakeClock()
    batcher = DynamicBatcher(max_batch=4, wait_window_s=1.0, clock=clock)
    batcher.put(Request(0))
    batcher.close()
    got = []
    worker = threading.Thread(target=lambda: got.append(ids(batcher.next_batch(poll_s=0.005))))
    worker.start()
    worker.join(timeout=0.1)
    assert worker.is_alive() and got == []  # the clock has not moved: the last request still waits
    clock.advance(1.0)
    worker.join(timeout=5)
    assert got == [[0]]
    assert batcher.next_batch(poll_s=0.005) is None  # closed and empty
    with pytest.raises(RuntimeError):
        batcher.put(Request(1))


def test_bad_batcher_arguments_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(max_batch=0, wait_window_s=0.0)
    with pytest.raises(ValueError, match="wait_window_s"):
        DynamicBatcher(max_batch=1, wait_window_s=-0.001)


def test_concurrent_producers_lose_and_duplicate_nothing():
    producers, per_producer, cap = 4, 250, 7
    batcher = DynamicBatcher(max_batch=cap, wait_window_s=0.001)

    def produce(index):
        for k in range(per_producer):
            batcher.put(Request(index * per_producer + k))

    threads = [threading.Thread(target=produce, args=(index,)) for index in range(producers)]
    for thread in threads:
        thread.start()

    def close_when_done():
        for thread in threads:
            thread.join()
        batcher.close()

    closer = threading.Thread(target=close_when_done)
    closer.start()
    batches = []
    while (batch := batcher.next_batch()) is not None:
        batches.append(ids(batch))
    closer.join()
    seen = [request_id for batch in batches for request_id in batch]
    assert sorted(seen) == list(range(producers * per_producer))  # none lost, none twice
    assert all(1 <= len(batch) <= cap for batch in batches)
    for index in range(producers):  # FIFO: each producer's requests leave in the order it put them
        own = [request_id for request_id in seen if request_id // per_producer == index]
        assert own == sorted(own)


def test_feed_puts_on_schedule_and_closes():
    batcher = DynamicBatcher(max_batch=10, wait_window_s=0.0)
    start = time.perf_counter()
    feed(batcher, [Request(0), Request(1)], [0.0, 0.02], start)
    requests = batcher.poll()
    assert ids(requests) == [0, 1]
    assert requests[1].arrival_s - start >= 0.02  # not before its arrival time
    assert batcher.next_batch() is None  # feed closed it


# ---- arrival processes --------------------------------------------------------------------------------------
def test_poisson_rate_matches_over_many_samples_with_a_fixed_seed():
    rate, count = 4.0, 20_000
    arrivals = np.asarray(poisson_arrivals(rate, count, seed=0))
    gaps = np.diff(np.concatenate([[0.0], arrivals]))
    assert (gaps >= 0).all()
    assert count / arrivals[-1] == pytest.approx(rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential gaps: CV 1
    assert poisson_arrivals(rate, 50, seed=0) == poisson_arrivals(rate, 50, seed=0)
    assert poisson_arrivals(rate, 50, seed=0) != poisson_arrivals(rate, 50, seed=1)
    with pytest.raises(ValueError):
        poisson_arrivals(0.0, 5, seed=0)


def test_burst_arrives_all_at_once():
    assert burst_arrivals(3) == [0.0, 0.0, 0.0]
    assert burst_arrivals(2, at_s=1.5) == [1.5, 1.5]


# ---- static helpers -----------------------------------------------------------------------------------------
def test_padding_waste_is_padded_over_all_prompt_tokens():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert padding_waste_ratio(mask) == pytest.approx(2 / 8)
    assert padding_waste_ratio(torch.ones(3, 5)) == 0.0


def test_static_batch_takes_distinct_prompts_or_refuses():
    assert static_batch(["a", "b", "c"], 2) == ["a", "b"]
    with pytest.raises(ValueError, match="distinct prompts"):
        static_batch(["a"], 2)


# ---- telemetry ----------------------------------------------------------------------------------------------
def test_cpu_telemetry_samples_every_core_and_the_rss():
    with Telemetry(hz=50, device="cpu") as sampler:
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:
            sum(i * i for i in range(1000))  # keep a core busy
    samples = sampler.samples()
    assert sampler.backend == "psutil"
    times = samples["t_s"].drop_duplicates()
    assert len(times) >= 3 and times.is_monotonic_increasing and times.iloc[0] >= 0
    cpu = samples[samples["metric"] == "cpu_busy_ratio"]
    assert set(cpu["core"]) == set(range(psutil.cpu_count()))
    assert cpu["value"].between(0, 1).all() and cpu["value"].max() > 0
    rss = samples[samples["metric"] == "process_rss_bytes"]
    assert len(rss) == len(times) and (rss["value"] > 0).all() and (rss["unit"] == "bytes").all()
    own = samples[samples["metric"] == "process_cpu_ratio"]
    assert len(own) == len(times) and own["value"].between(0, 1).all() and own["value"].max() > 0
    assert not samples["metric"].str.startswith("gpu_").any()


def fake_pynvml(init_error: bool = False):
    """A stand-in for nvidia-ml-py with one GPU at 50% utilisation, 1 GiB used, 150 W, 1410 MHz."""
    module = types.SimpleNamespace(NVML_CLOCK_SM=0, calls=[])

    def init():
        module.calls.append("init")
        if init_error:
            raise RuntimeError("NVML Shared Library Not Found")

    module.nvmlInit = init
    module.nvmlShutdown = lambda: module.calls.append("shutdown")
    module.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    module.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=50, memory=20)
    module.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=2**30, total=2**34)
    module.nvmlDeviceGetPowerUsage = lambda handle: 150_000  # milliwatts
    module.nvmlDeviceGetClockInfo = lambda handle, kind: 1410
    return module


def test_nvml_is_chosen_only_for_a_gpu_run_with_a_working_nvml(monkeypatch):
    working = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", working)
    assert open_nvml("cpu") is None and working.calls == []  # a CPU run never touches NVML
    reader = open_nvml("cuda")
    assert reader is not None and reader.read() == {
        "gpu_util_ratio": 0.5, "gpu_memory_used_bytes": float(2**30), "gpu_power_w": 150.0,
        "gpu_sm_clock_mhz": 1410.0}
    reader.close()

    broken = fake_pynvml(init_error=True)
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert open_nvml("cuda") is None  # no driver: fall back to CPU telemetry

    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed: import fails
    assert open_nvml("cuda") is None


def test_gpu_samples_join_the_cpu_ones_when_nvml_answers(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    sampler = Telemetry(hz=100, device="cuda")
    sampler.nvml = telemetry_module.open_nvml("cuda")
    assert sampler.backend == "nvml+psutil"
    sampler.sample_once()
    samples = sampler.samples().set_index("metric")
    assert samples.loc["gpu_util_ratio", "value"] == 0.5 and samples.loc["gpu_power_w", "unit"] == "W"
    assert samples.loc["gpu_sm_clock_mhz", "unit"] == "MHz" and "process_rss_bytes" in samples.index
