"""Latency measurement: a monotonic high-resolution clock, warm-up apart, the median of the repeats."""

import statistics
import time
from collections.abc import Callable

MS_PER_S = 1000.0


def timed(fn: Callable, *args):
    """(fn's result, seconds it took)"""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def repeat_timed(fn: Callable, arg, repeat: int):
    """Run fn(arg) `repeat` times; (last result, list of seconds)."""
    seconds = []
    result = None
    for _ in range(repeat):
        result, s = timed(fn, arg)
        seconds.append(s)
    return result, seconds


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * MS_PER_S
