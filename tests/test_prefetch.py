"""common.prefetch: results in input order with failures in their place, never more than one batch of photos
decoded ahead of the caller, and nothing left running when the caller stops early. The work here is a stand-in
that sleeps (releasing the GIL, as a decoder does); no photos, no network."""

import random
import threading
import time

import pytest

from common.prefetch import decoded_in_batches

ITEMS = 24
BATCH = 3
SLOW_S = 0.02  # the longest stand-in decode; long enough for threads to overtake one another
CALLER_S = 0.005  # the caller's time per item (the network's, in the command line)


class Spy:
    """The stand-in decoder: records which items started and finished, sleeps a random time, fails on items
    divisible by 5 (a bad photo)."""

    def __init__(self):
        self.started, self.finished = set(), set()
        self.lock = threading.Lock()
        self.durations = random.Random(0)

    def __call__(self, item: int) -> int:
        with self.lock:
            self.started.add(item)
            seconds = self.durations.uniform(0, SLOW_S)
        time.sleep(seconds)
        with self.lock:
            self.finished.add(item)
        if item % 5 == 0:
            raise ValueError(f"bad photo {item}")
        return item * item


def test_results_in_input_order_failures_in_place():
    spy = Spy()
    seen = []
    with decoded_in_batches(range(ITEMS), spy, BATCH) as results:
        for item, future in results:
            try:
                seen.append((item, future.result()))
            except ValueError as e:
                seen.append((item, str(e)))
    assert seen == [(i, f"bad photo {i}" if i % 5 == 0 else i * i) for i in range(ITEMS)]


def test_at_most_one_batch_ahead_of_the_caller():
    """However slow the caller, the decoders start no more than the batch that holds the item it is at."""
    spy = Spy()
    with decoded_in_batches(range(ITEMS), spy, BATCH) as results:
        for item, future in results:
            future.exception()  # wait for it, as the command line does
            time.sleep(CALLER_S)
            with spy.lock:
                ahead = max(spy.started) - item
            assert ahead < BATCH, f"at item {item}, item {item + ahead} has started"


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ValueError])
def test_leaving_early_waits_for_running_work_and_cancels_the_rest(stop):
    """Ctrl-C, or a damaged weights file found at the first photo: the block ends while a batch is decoding."""
    spy = Spy()
    with pytest.raises(stop):
        with decoded_in_batches(range(ITEMS), spy, BATCH) as results:
            for _ in results:
                raise stop
    assert spy.started == spy.finished, "a decoder was still running after the caller left"
    assert len(spy.started) <= BATCH
