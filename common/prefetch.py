"""Photos decode in parallel, one per core, between the network's passes.

Decoding happens in C inside Pillow and OpenCV (libjpeg, zlib, the resize), which release the GIL while they
work, so threads decode several photos at once. The obvious plan, one background thread decoding the next
photo while the network runs the current one, is slower on a machine whose cores the network already uses:
numba's threads wait for each other at the end of every parallel loop, so the one that shares its core with
the decoder holds up the other. Measured on the 2-core development machine on 2026-11-29 (stage 8, 48 photos
of 12 megapixels, Pillow, in one process, libgomp set as common/cli.py sets it): a background thread gave 28
photos/s, fewer than the 30/s of decoding and classifying in turn; a background thread at the lowest priority
39/s, but 2/s once two other programs kept both cores busy (it only gets idle cores); decoding `batch` photos
at once, one thread per core, while the network waits, then classifying them, 40/s, and on the busy machine
19/s (15/s in turn). Both cores decode, then both run the network, so 40/s is all two cores give:
2 / (2 forward passes of 17 ms + 16 ms for two photos decoding side by side) = 40/s.

At most one batch of photos is decoded before the network has taken it: the decoded inputs are small
(224x224x3 float32, 0.6 MB), a photo being decoded is not (a 12-megapixel JPEG reduced to 1000x750 is
2.25 MB, a 12-megapixel PNG 36 MB), so memory stays flat however long the folder. Results come back in
input order, a failure in its place.
"""

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice


@contextmanager
def decoded_in_batches(items: Iterable, work: Callable, batch: int) -> Iterator[Iterator[tuple[object, Future]]]:
    """Yields an iterator of (item, future of work(item)) for every item, in order; future.result() returns
    work's result or raises its exception. The next `batch` items start together when the caller asks for the
    first of them. Leaving the block, also early (an exception, Ctrl-C), cancels what has not started and waits
    for what has, so no decoder runs on after the caller has gone."""
    pool = ThreadPoolExecutor(max_workers=batch, thread_name_prefix="decode")
    items = iter(items)

    def in_order():
        while started := [(item, pool.submit(work, item)) for item in islice(items, batch)]:
            yield from started

    try:
        yield in_order()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
