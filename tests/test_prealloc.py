"""From stage 4 on, a forward pass allocates nothing.

Two counts, each of which sees what the other cannot:
- Python side: tracemalloc sees every numpy array created, including the ones numba returns;
- compiled side: numba's runtime (NRT) counts every block it allocates when NUMBA_NRT_STATS=1 (tests/conftest.py
  sets it): np.empty and friends inside a kernel, however small and short-lived, which a peak of bytes misses.
  It also counts one block per array argument, at every call: numba wraps the caller's array in it for the
  duration of the call. So a forward pass that allocates nothing makes exactly as many blocks as it passes
  arrays to kernels. Counted as the forward pass runs, the kernels can come from the disk cache, compiled once
  for the whole test run.
Stage 3, which allocates its outputs as it goes, and a kernel that allocates a scratch array show that each
count catches what it is meant to.
"""

import tracemalloc

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import rtsys

from common.stages import STAGES, record, stage_module, stage_number

FORWARDS = 3
# Python objects a forward pass may create and drop again (argument tuples, boxed ints): far below one
# activation buffer (the smallest, 7x7x2048 float32, is 401 KB).
TRANSIENT_BYTES = 64 * 1024


def python_peak_bytes(model, image) -> int:
    model.forward(image)  # compile and warm up first
    tracemalloc.start()
    for _ in range(FORWARDS):
        model.forward(image)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def compiled_allocations(model, image) -> int:
    """Blocks numba's runtime allocated during FORWARDS forward passes."""
    model.forward(image)
    before = rtsys.get_allocation_stats()
    for _ in range(FORWARDS):
        model.forward(image)
    after = rtsys.get_allocation_stats()
    return after.alloc - before.alloc


def arrays_passed(arguments) -> int:
    """Array arguments one forward pass hands to compiled kernels, of all the arguments it passes."""
    return sum(isinstance(a, np.ndarray) for a in arguments)


def forward_arguments(stage: str, model) -> list:
    """What one forward pass of the stage passes to its kernels: a generated stage's a[i] (stage 5 on), or stage 4's
    (kernel, arguments) steps' arguments, called from Python."""
    if record(stage).generates:
        return list(model.arrays)
    return [a for _, args in model.plan.steps for a in args]


@njit
def scratch_sum(x, out):
    scratch = np.empty_like(x)  # a block of its own at every call: what a preallocating stage never does
    scratch[:] = x
    out[0] = scratch.sum()


class ScratchStage:
    """One kernel that allocates a scratch array of 8 floats: far below TRANSIENT_BYTES."""

    def __init__(self):
        self.steps = [(scratch_sum, (np.ones(8, np.float32), np.zeros(1, np.float32)))]

    def forward(self, image):
        for kernel, args in self.steps:
            kernel(*args)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [s for s in STAGES if stage_number(s) >= 4])
def test_forward_allocates_nothing(stage, images):
    model = stage_module(stage).Model()
    image = next(iter(images.values()))
    peak = python_peak_bytes(model, image)
    assert peak < TRANSIENT_BYTES, f"{stage}: the Python side allocated up to {peak} bytes during forward"
    extra = compiled_allocations(model, image) - FORWARDS * arrays_passed(forward_arguments(stage, model))
    assert extra == 0, f"{stage}: compiled kernels allocated {extra} blocks in {FORWARDS} forward passes"


@pytest.mark.slow
def test_python_check_catches_an_allocating_stage(images):
    assert python_peak_bytes(stage_module("stage3_preload").Model(), next(iter(images.values()))) > TRANSIENT_BYTES


def test_compiled_count_catches_a_small_allocation():
    model = ScratchStage()
    assert python_peak_bytes(model, None) < TRANSIENT_BYTES  # too small for the peak to show
    arguments = [a for _, args in model.steps for a in args]
    assert compiled_allocations(model, None) - FORWARDS * arrays_passed(arguments) == FORWARDS
