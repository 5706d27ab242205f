"""From stage 4 on, a forward pass allocates nothing.

Two checks, each of which catches what the other cannot see:
- Python side: tracemalloc sees every numpy array created, including the ones numba returns;
- compiled side: numba's allocator (NRT) is invisible to tracemalloc, so the compiled kernels' LLVM IR is
  searched for calls that allocate (np.empty and friends compile to NRT_MemInfo_alloc*). Calls that
  only wrap the caller's arrays for the duration of a call (NRT_adapt_ndarray_from_python) are fine.
Stage 3 is checked too, to show that both checks do catch allocating code.
numba cannot show the IR of kernels it loaded from its disk cache (stages 5 on), so the models here are
built without it (common.codegen.without_disk_cache).
"""

import re
import tracemalloc

import pytest

from common.asm import stage_functions
from common.codegen import without_disk_cache
from common.stages import STAGES, stage_module, stage_number

FORWARDS = 3
# Python objects a forward pass may create and drop again (argument tuples, boxed ints): far below one
# activation buffer (the smallest, 7x7x2048 float32, is 401 KB).
TRANSIENT_BYTES = 64 * 1024
NRT_ALLOCATION = re.compile(r"@(NRT_MemInfo_alloc\w*|NRT_MemInfo_new\w*|NRT_Allocate\w*)\(")


def python_peak_bytes(model, image) -> int:
    model.forward(image)  # compile and warm up first
    tracemalloc.start()
    for _ in range(FORWARDS):
        model.forward(image)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def allocating_kernels(model) -> dict[str, list[str]]:
    """Compiled kernels of the stage (and of its generated code, if any) whose IR allocates."""
    found = {}
    for name, dispatcher in stage_functions(model).items():
        ir = "\n".join(dispatcher.inspect_llvm(sig) for sig in dispatcher.signatures)
        assert "define " in ir, f"{name}: numba returned no IR to inspect"
        calls = sorted(set(NRT_ALLOCATION.findall(ir)))
        if calls:
            found[name] = calls
    return found


@pytest.mark.slow
@pytest.mark.parametrize("stage", [s for s in STAGES if stage_number(s) >= 4])
def test_forward_allocates_nothing(stage, images):
    with without_disk_cache():
        model = stage_module(stage).Model()
    peak = python_peak_bytes(model, next(iter(images.values())))
    assert peak < TRANSIENT_BYTES, f"{stage}: the Python side allocated up to {peak} bytes during forward"
    assert not allocating_kernels(model), f"{stage}: compiled kernels allocate: {allocating_kernels(model)}"


@pytest.mark.slow
def test_checks_catch_an_allocating_stage(images):
    with without_disk_cache():
        model = stage_module("stage3_preload").Model()
    assert python_peak_bytes(model, next(iter(images.values()))) > TRANSIENT_BYTES
    assert "conv2d" in allocating_kernels(model)
