"""Time one convolution of stage 1 three ways: as plain Python, as the original tutorial's Python version wrote
it (np.vdot over the input channels), and compiled by numba.

    python -m stages.stage1_origin.one_op

The conv is layer1.0.conv2 (3x3, 64 -> 64 channels) on a 14x14 crop of its 56x56 input, so that plain
Python finishes in seconds; multiply-adds per second compare the three.

- plain Python: conv2d's own source run by the interpreter, one multiply-add at a time (numba keeps the
  undecorated function as conv2d.py_func; NUMBA_DISABLE_JIT=1 runs the whole network this way);
- np.vdot: the one optimization of the Python version of dongtuoc/cv_learning_resnet50, the C++ tutorial
  stages 1-6 mirror: the innermost loop, over the input channels, becomes one call of np.vdot, a dot product
  numpy computes in compiled code. The five outer loops stay in the interpreter. (The original computed in
  float64; here the arrays are float32, like every stage's);
- numba: conv2d as stage 1 runs it, all six loops compiled to machine code.
"""

import sys
import time

import numba
import numpy as np

from common.architecture import resnet50
from common.timing import MS_PER_S
from stages.stage1_origin.model import conv2d

LAYER = "layer1.0.conv2"
CROP = 14  # of the layer's 56x56 input
REPEATS = 3  # each way is timed this many times; the fastest counts (the others met a busy machine)
MILLION = 1e6


def conv2d_vdot(x, weight, stride, padding):
    """conv2d with its input-channel loop as one np.vdot of two vectors: x at one pixel (its channels are
    contiguous in HWC) and the weights of one output channel at one kernel position."""
    height, width, _ = x.shape
    out_channels, _, kernel, _ = weight.shape
    out_height = (height + 2 * padding - kernel) // stride + 1
    out_width = (width + 2 * padding - kernel) // stride + 1
    out = np.empty((out_height, out_width, out_channels), dtype=np.float32)  # HWC
    for co in range(out_channels):
        for ho in range(out_height):
            for wo in range(out_width):
                acc = np.float32(0.0)
                for kh in range(kernel):
                    hi = ho * stride - padding + kh
                    if hi < 0 or hi >= height:
                        continue
                    for kw in range(kernel):
                        wi = wo * stride - padding + kw
                        if wi < 0 or wi >= width:
                            continue
                        acc += np.vdot(x[hi, wi], weight[co, :, kh, kw])
                out[ho, wo, co] = acc
    return out


if numba.config.DISABLE_JIT:
    sys.exit("one_op compares numba's compiled conv2d with the interpreter: run it without NUMBA_DISABLE_JIT")
conv = next(c for c in resnet50().convs if c.name == LAYER)
rng = np.random.default_rng(0)
x = rng.standard_normal((CROP, CROP, conv.in_channels), dtype=np.float32)  # HWC
weight = rng.standard_normal((conv.out_channels, conv.in_channels, conv.kernel, conv.kernel),
                             dtype=np.float32)  # OIHW
conv2d(x, weight, conv.stride, conv.padding)  # compile first: we time the loops, not the compiler
ways = (("plain Python", conv2d.py_func), ("np.vdot over the input channels", conv2d_vdot),
        ("compiled by numba", conv2d))
for way, function in ways:
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = function(x, weight, conv.stride, conv.padding)
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    macs = out.shape[0] * out.shape[1] * conv.out_channels * conv.in_channels * conv.kernel**2
    print(f"{LAYER} on a {CROP}x{CROP}x{conv.in_channels} input, {macs / MILLION:.1f}M multiply-adds, {way}: "
          f"{best * MS_PER_S:.1f} ms, {macs / best / MILLION:.1f}M multiply-adds/s")
