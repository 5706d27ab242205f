"""layer1.0.conv2's kernels, conv_56x64_56x64_k3s1_relu_uint8_7x32, as stages/stage13_int8/model.py generates them:
rendered by common/examples.py from the stage's plan, kept equal to what it writes by tests/test_examples.py. The
kernel cache holds the same source, one module per kernel, named after its digest."""
import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import stack_floats, wide_vectors
from stages.stage13_int8.model import dot_quads, stack_ints

HWC = "float32[:, :, ::1]"
CODES = "uint8[:, :, ::1]"
BYTES = "uint8[::1]"


@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def conv_56x64_56x64_k3s1_relu_uint8_7x32(x, weight, bias, scale, residual, out):
    """x: HWC u8 codes, border 1 of the zero point's code; weight: s8 codes as int32 quads, [group][kh][kw]
    [ci / 4][block] flattened; bias, scale: see requantization; out: HWC, u8 codes if True, else float32, border
    0 left alone."""
    wide_vectors()
    quads = x.view(np.int32)  # [h][w][ci / 4]: the codes of 4 neighbouring channels in one int32
    # prange gives each thread one contiguous range of tile numbers. Numbered group-major, a thread's
    # tiles share one group's weights; numbered pixel-major, a thread keeps to its part of the image,
    # the part it wrote in the layer before, still in its own core's L2 cache.
    for tile in prange(2 * 448):
        wide_vectors()
        # A negative index counts from the end in numba (a[-1]), tested at every access unless LLVM can prove the
        # index is not negative; only then does it see a row's bytes as neighbours and load and store them as
        # vectors. A tile number is never negative, and clearing its sign bit proves it (NON_NEGATIVE).
        number = tile & 2147483647
        if True:
            group, position = number % 2, number // 2
        else:
            group, position = number // 448, number % 448
        ho = position // 8
        wo0 = (position % 8) * 7
        sums = stack_ints(224)  # [rows][block]
        for i in range(224):
            sums[i] = 0
        for kh in range(3):
            for kw in range(3):
                for q in range(16):
                    at = (((group * 3 + kh) * 3 + kw) * 16 + q) * 32
                    for r in range(7):
                        quad = quads[ho * 1 + kh, (wo0 + r) * 1 + kw, q]
                        for v in range(0, 32, 16):
                            dot_quads(sums, r * 32 + v, quad, weight, at + v)
        # In the output's units (its codes, if it has them): sums x scale + bias (+ residual x its scale).
        acc = numba.carray(stack_floats(224), (7, 32))
        for r in range(7):
            for c in range(32):
                acc[r, c] = np.float32(sums[r * 32 + c]) * scale[group * 32 + c] + bias[group * 32 + c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if False:
            for r in range(7):
                for c in range(32):
                    acc[r, c] += residual[ho, wo0 + r, group * 32 + c] * scale[64]
        if True:
            for r in range(7):
                for c in range(32):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        if True:  # after the ReLU: not negative, so + 0.5 and truncating rounds to the nearest code
            for r in range(7):
                for c in range(32):
                    out[0 + ho, 0 + wo0 + r, group * 32 + c] = np.uint8(
                        min(acc[r, c] + np.float32(0.5), np.float32(255)))
        else:
            for r in range(7):
                for c in range(32):
                    out[0 + ho, 0 + wo0 + r, group * 32 + c] = acc[r, c]
