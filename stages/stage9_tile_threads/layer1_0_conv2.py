"""layer1.0.conv2's kernels, conv_56x64_56x64_k3s1_relu, as stages/stage9_tile_threads/model.py generates them:
rendered by common/examples.py from the stage's plan, kept equal to what it writes by tests/test_examples.py. The
kernel cache holds the same source, one module per kernel, named after its digest."""
import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import stack_floats, wide_vectors

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"


@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def conv_56x64_56x64_k3s1_relu(x, weight, bias, residual, out):
    """x: HWC, zero border 1; weight: [group][kh][kw][ci][BLOCK]; out: HWC, border 0 left alone."""
    wide_vectors()
    # prange gives each thread one contiguous range of tile numbers. Numbered group-major, a thread's
    # tiles share one group's weights; numbered pixel-major, a thread keeps to its part of the image,
    # the part it wrote in the layer before, still in its own core's L2 cache.
    for tile in prange(2 * 448):
        wide_vectors()
        if True:
            group, position = tile % 2, tile // 2
        else:
            group, position = tile // 448, tile % 448
        ho = position // 8
        wo0 = (position % 8) * 7
        acc = numba.carray(stack_floats(224), (7, 32))
        for r in range(7):
            for c in range(32):
                acc[r, c] = bias[group * 32 + c]
        for kh in range(3):
            for kw in range(3):
                for ci in range(64):
                    for r in range(7):
                        xv = x[ho * 1 + kh, (wo0 + r) * 1 + kw, ci]
                        for c in range(32):
                            acc[r, c] += xv * weight[group, kh, kw, ci, c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if False:
            for r in range(7):
                for c in range(32):
                    acc[r, c] += residual[ho, wo0 + r, group * 32 + c]
        if True:
            for r in range(7):
                for c in range(32):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range(7):
            for c in range(32):
                out[0 + ho, 0 + wo0 + r, group * 32 + c] = acc[r, c]
