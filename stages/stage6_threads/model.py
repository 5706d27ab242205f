'''Stage 6, threads: the convolutions run on every core, split over output channels.

Stages 1 to 5 ran on one core. The convolutions do almost all the work (about 4 billion multiply-adds),
and each output channel is computed independently of the others, so the generated conv kernel's outer
loop over output channels becomes numba's `prange` (with parallel=True): numba's thread pool gives each
thread a contiguous range of channels, covering all of them whatever the thread count (the C++ original
dropped channels when the thread count did not divide them). `--threads N` sets the count; the default
is one thread per core that other programs leave free. The other ops are memory-bound and cheap, and stay
single-threaded.

Everything else is stage 5's: its plan, its other kernels and its pool (imported from common/kernels.py), and the
model that writes, compiles and runs the generated source (common/model.py).
'''

from functools import partial
from pathlib import Path

from common.kernels import unfused_plan, unfused_pool
from common.model import Compiled, Parts

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import math

import numpy as np
from numba import njit, prange

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
'''

CONV = '''

@njit(f"void({{HWC}}, {{OHWI}}, {{HWC}})", fastmath=True, cache=True, parallel=True)
def {name}(x, weight, out):
    for co in prange({out_channels}):
        for ho in range({out_size}):
            for wo in range({out_size}):
                acc = np.float32(0.0)
                for kh in range({kernel}):
                    hi = ho * {stride} - {padding} + kh
                    if hi < 0 or hi >= {in_size}:
                        continue
                    for kw in range({kernel}):
                        wi = wo * {stride} - {padding} + kw
                        if wi < 0 or wi >= {in_size}:
                            continue
                        for ci in range({in_channels}):
                            acc += x[hi, wi, ci] * weight[co, kh, kw, ci]
                out[ho, wo, co] = acc
'''


def plan(arch, pool):
    """Stage 5's plan, with this stage's conv kernel."""
    return unfused_plan(arch, pool, CONV)


PARTS = Parts(Path(__file__), PRELUDE, unfused_pool, plan)
Model = partial(Compiled, PARTS)
