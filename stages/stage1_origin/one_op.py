"""Time one convolution of stage 1, compiled by numba or, with NUMBA_DISABLE_JIT=1, as plain Python.

    NUMBA_DISABLE_JIT=1 python -m stages.stage1_origin.one_op

The conv is layer1.0.conv2 (3x3, 64 -> 64 channels) on a 14x14 crop of its 56x56 input, so that plain
Python finishes in seconds; multiply-adds per second compare the two modes.
"""

import os
import time

import numpy as np

from common.architecture import resnet50
from stages.stage1_origin.model import conv2d

LAYER = "layer1.0.conv2"
CROP = 14  # of the layer's 56x56 input

conv = next(c for c in resnet50().convs if c.name == LAYER)
rng = np.random.default_rng(0)
x = rng.standard_normal((CROP, CROP, conv.in_channels), dtype=np.float32)  # HWC
weight = rng.standard_normal((conv.out_channels, conv.in_channels, conv.kernel, conv.kernel),
                             dtype=np.float32)  # OIHW
jit = os.environ.get("NUMBA_DISABLE_JIT", "0") == "0"
if jit:
    conv2d(x, weight, conv.stride, conv.padding)  # compile first: we time the loops, not the compiler
start = time.perf_counter()
out = conv2d(x, weight, conv.stride, conv.padding)
seconds = time.perf_counter() - start
macs = out.shape[0] * out.shape[1] * conv.out_channels * conv.in_channels * conv.kernel**2
mode = "compiled by numba" if jit else "plain Python (NUMBA_DISABLE_JIT=1)"
print(f"{LAYER} on a {CROP}x{CROP}x{conv.in_channels} input, {macs / 1e6:.1f}M multiply-adds, {mode}: "
      f"{seconds * 1000:.1f} ms, {macs / seconds / 1e6:.1f}M multiply-adds/s")
