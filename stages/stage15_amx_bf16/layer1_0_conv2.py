"""layer1.0.conv2's kernels, conv_56x64_56x64_k3s1_relu_7x64, as stages/stage15_amx_bf16/model.py generates them:
rendered by common/examples.py from the stage's plan, kept equal to what it writes by tests/test_examples.py. The
kernel cache holds the same source, one module per kernel, named after its digest."""
import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import dot_pairs, from_bf16, to_bf16, wide_vectors
from common.intrinsics import stack_lines as stack_floats
from stages.stage15_amx_bf16.model import load_tile, load_tile_config, release_tiles, store_tile, tile_dot, zero_tile

HWC = "float32[:, :, ::1]"
BF16 = "uint16[:, :, ::1]"
VALUES = "uint16[::1]"
THREADS = numba.config.NUMBA_NUM_THREADS  # one part of a conv's tiles per thread of numba's pool


@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def conv_56x64_56x64_k3s1_relu_7x64(x, weight, bias, residual, out, config):
    """CONV's arguments and layouts, and config: tile_config's 64 bytes. x and weight start on a cache line, the
    weight's blocks are AMX_BLOCK channels."""
    wide_vectors()
    # One part per thread of numba's pool, each a contiguous range of tile numbers: a thread loads its tiles' shapes
    # once a part (with fewer threads at work, one runs several parts).
    for part in prange(THREADS):
        wide_vectors()
        load_tile_config(config)
        sums = stack_floats(448)  # [rows][block]: the 4 sum tiles side by side, stored from the tiles
        for tile in range(part * 448 // THREADS, (part + 1) * 448 // THREADS):
            # A negative index counts from the end in numba (a[-1]), tested at every access unless LLVM can prove the
            # index is not negative; only then does it see a row's bytes as neighbours and load and store them as
            # vectors. A tile number is never negative, and clearing its sign bit proves it (NON_NEGATIVE).
            number = tile & 2147483647
            if True:
                group, position = number % 1, number // 1
            else:
                group, position = number // 448, number % 448
            ho = position // 8
            wo0 = (position % 8) * 7
            zero_tile(0)
            zero_tile(1)
            zero_tile(2)
            zero_tile(3)
            for kh in range(3):
                for kw in range(3):
                    for k in range(2):
                        # The input tile: rows pixels of the output row, 32 values of each from input channel
                        # k x 32 on (the stem's: from its tap kw = 0 on, 8 pixels of 4 channels).
                        load_tile(4, x, ((ho * 1 + kh) * 58 + wo0 * 1 + kw) * 64
                                  + k * 32, 128)
                        # The weight tiles: 16 pairs of those values, for 16 output channels each.
                        at = (((group * 3 + kh) * 3 + kw) * 32 + k * 32 // 2) * 64
                        load_tile(5, weight, at, 256)
                        tile_dot(0, 4, 5)
                        load_tile(6, weight, at + 16, 256)
                        tile_dot(1, 4, 6)
                        load_tile(7, weight, at + 2 * 16, 256)
                        tile_dot(2, 4, 7)
                        load_tile(5, weight, at + 3 * 16, 256)
                        tile_dot(3, 4, 5)
            store_tile(0, sums, 0, 256)
            store_tile(1, sums, 16, 256)
            store_tile(2, sums, 2 * 16, 256)
            store_tile(3, sums, 3 * 16, 256)
            acc = numba.carray(sums, (7, 64))
            for r in range(7):
                for c in range(64):
                    acc[r, c] += bias[group * 64 + c]
            # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
            if False:
                for r in range(7):
                    for c in range(64):
                        acc[r, c] += from_bf16(residual[ho, wo0 + r, group * 64 + c])
            if True:
                for r in range(7):
                    for c in range(64):
                        acc[r, c] = max(acc[r, c], np.float32(0.0))
            for r in range(7):
                for c in range(64):
                    out[0 + ho, 0 + wo0 + r, group * 64 + c] = to_bf16(acc[r, c])
        release_tiles()
