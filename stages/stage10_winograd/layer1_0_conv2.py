"""layer1.0.conv2's kernels, winograd_input_56x64_64, winograd_products_56x64_64, winograd_output_56x64_64, as
stages/stage10_winograd/model.py generates them: rendered by common/examples.py from the stage's plan, kept equal to
what it writes by tests/test_examples.py. The kernel cache holds the same source, one module per kernel, named after
its digest."""
import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import stack_floats, wide_vectors

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
POINTS = "float32[:, :, ::1]"


@njit(f"void({HWC}, {POINTS})", fastmath=True, cache=True, parallel=True, boundscheck=False)
def winograd_input_56x64_64(x, v):
    """Winograd F(2x2, 3x3), step 1: every 4x4 input patch d (patches 2 apart, overlapping by 2) of x,
    HWC with a zero border of 1, becomes B^T d B, stored as v[k, tile, channel] for its 16 points k.
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: additions only. The innermost
    loops run over channels, contiguous in x and in v, so the loop vectorizer makes them 16 lanes wide."""
    wide_vectors()
    for tile in prange(784):
        wide_vectors()
        h0 = (tile // 28) * 2
        w0 = (tile % 28) * 2
        for j in range(4):  # B^T d, one column j of the patch at a time, into v[4i + j]
            for c in range(64):
                d0, d1, d2, d3 = x[h0, w0 + j, c], x[h0 + 1, w0 + j, c], x[h0 + 2, w0 + j, c], x[h0 + 3, w0 + j, c]
                v[j, tile, c] = d0 - d2
                v[4 + j, tile, c] = d1 + d2
                v[8 + j, tile, c] = d2 - d1
                v[12 + j, tile, c] = d1 - d3
        for k in range(0, 16, 4):  # (B^T d) B, one row of 4 points at a time, in place
            for c in range(64):
                e0, e1, e2, e3 = v[k, tile, c], v[k + 1, tile, c], v[k + 2, tile, c], v[k + 3, tile, c]
                v[k, tile, c] = e0 - e2
                v[k + 1, tile, c] = e1 + e2
                v[k + 2, tile, c] = e2 - e1
                v[k + 3, tile, c] = e1 - e3


@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def winograd_products_56x64_64(v, u, m):
    """Step 2: for each of the 16 points k, m[k] = v[k] @ u[k] over the input channels: 16 matrix
    products (tiles x in) @ (in x out), with the conv kernel's register tile (7 tiles x 32 channels).
    v: [k][tile][ci], u: [k][group][ci][BLOCK], m: [k][tile][co]."""
    wide_vectors()
    for job in prange(16 * 2 * 112):
        wide_vectors()
        k = job // (2 * 112)
        group = (job // 112) % 2
        t0 = (job % 112) * 7
        acc = numba.carray(stack_floats(224), (7, 32))
        for r in range(7):
            for c in range(32):
                acc[r, c] = 0.0
        for ci in range(64):
            for r in range(7):
                xv = v[k, t0 + r, ci]
                for c in range(32):
                    acc[r, c] += xv * u[k, group, ci, c]
        for r in range(7):
            for c in range(32):
                m[k, t0 + r, group * 32 + c] = acc[r, c]


@njit(f"void({POINTS}, {VECTOR}, {HWC})", fastmath=True, cache=True, parallel=True, boundscheck=False)
def winograd_output_56x64_64(m, bias, out):
    """Step 3: each tile's 4x4 products become its 2x2 outputs A^T m A, + bias, ReLU, into out (HWC).
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. Channels innermost, as in step 1."""
    wide_vectors()
    for tile in prange(784):
        wide_vectors()
        h0 = (tile // 28) * 2
        w0 = (tile % 28) * 2
        for j in range(4):  # A^T m, one column j at a time, in place into rows 0 and 1 of m
            for c in range(64):
                m0, m1, m2, m3 = m[j, tile, c], m[4 + j, tile, c], m[8 + j, tile, c], m[12 + j, tile, c]
                m[j, tile, c] = m0 + m1 + m2
                m[4 + j, tile, c] = m1 - m2 - m3
        for i in range(2):  # (A^T m) A, one output row at a time
            for c in range(64):
                e0, e1, e2, e3 = m[4 * i, tile, c], m[4 * i + 1, tile, c], m[4 * i + 2, tile, c], m[4 * i + 3, tile, c]
                out[h0 + i, w0, c] = max(e0 + e1 + e2 + bias[c], np.float32(0.0))
                out[h0 + i, w0 + 1, c] = max(e1 - e2 - e3 + bias[c], np.float32(0.0))
