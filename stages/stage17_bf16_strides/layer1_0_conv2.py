"""layer1.0.conv2's kernels, conv_56x64_56x64_k3s1_relu_7x32, as stages/stage17_bf16_strides/model.py generates them:
rendered by common/examples.py from the stage's plan, kept equal to what it writes by tests/test_examples.py. The
kernel cache holds the same source, one module per kernel, named after its digest."""
import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import dot_pairs, from_bf16, stack_floats, to_bf16, wide_vectors

HWC = "float32[:, :, ::1]"
BF16 = "uint16[:, :, ::1]"
VALUES = "uint16[::1]"


@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def conv_56x64_56x64_k3s1_relu_7x32(x, weight, bias, residual, out):
    """x: HWC bfloat16 bits, border 1 of zeros; weight: bfloat16 int32 pairs, [group][kh][kw][ci / 2][block]
    flattened; bias: float32; out: HWC bfloat16 bits, border 0 left alone."""
    wide_vectors()
    pairs = x.view(np.int32)  # [h][w][ci / 2]: the bfloat16s of 2 neighbouring channels in one int32
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
        sums = stack_floats(224)  # [rows][block]
        for i in range(224):
            sums[i] = 0.0
        for kh in range(3):
            for kw in range(3):
                for p in range(32):
                    at = (((group * 3 + kh) * 3 + kw) * 32 + p) * 32
                    for r in range(7):
                        pair = pairs[ho * 1 + kh, (wo0 + r) * 1 + kw, p]
                        for v in range(0, 32, 16):
                            dot_pairs(sums, r * 32 + v, pair, weight, at + v)
        acc = numba.carray(sums, (7, 32))
        for r in range(7):
            for c in range(32):
                acc[r, c] += bias[group * 32 + c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if False:
            for r in range(7):
                for c in range(32):
                    acc[r, c] += from_bf16(residual[ho * 1, (wo0 + r) * 1,
                                                    group * 32 + c])
        if True:
            for r in range(7):
                for c in range(32):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range(7):
            for c in range(32):
                out[0 + ho, 0 + wo0 + r, group * 32 + c] = to_bf16(acc[r, c])
