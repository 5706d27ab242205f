"""layer1.0.conv2's kernels, winograd_input_56x64_56x64_k3s1_f4, winograd_products_56x64_56x64_k3s1_f4_7x32,
winograd_output_56x64_56x64_k3s1_f4, as stages/stage16_strides/model.py generates them: rendered by
common/examples.py from the stage's plan, kept equal to what it writes by tests/test_examples.py. The kernel cache
holds the same source, one module per kernel, named after its digest."""
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
def winograd_input_56x64_56x64_k3s1_f4(x, v):
    """Winograd F(4x4, 3x3), step 1: every 6x6 input patch d (patches 4 apart, overlapping
    by 2) of x, HWC with a zero border of 1, becomes B^T d B, stored as v[k, tile, channel] for its 36 points k.
    The rows of B^T are the sums below. The innermost loops run over channels, contiguous in x and in v,
    so the loop vectorizer makes them full-width."""
    wide_vectors()
    for tile in prange(196):
        wide_vectors()
        h0 = (tile // 14) * 4
        w0 = (tile % 14) * 4
        for j in range(6):  # B^T d, one column j of the patch at a time, into v[6i + j]
            for c in range(64):
                d0 = x[h0 + 0, w0 + j, c]
                d1 = x[h0 + 1, w0 + j, c]
                d2 = x[h0 + 2, w0 + j, c]
                d3 = x[h0 + 3, w0 + j, c]
                d4 = x[h0 + 4, w0 + j, c]
                d5 = x[h0 + 5, w0 + j, c]
                v[0 + j, tile, c] = np.float32(4) * d0 - np.float32(5) * d2 + d4
                v[6 + j, tile, c] = -np.float32(4) * d1 - np.float32(4) * d2 + d3 + d4
                v[12 + j, tile, c] = np.float32(4) * d1 - np.float32(4) * d2 - d3 + d4
                v[18 + j, tile, c] = -np.float32(2) * d1 - d2 + np.float32(2) * d3 + d4
                v[24 + j, tile, c] = np.float32(2) * d1 - d2 - np.float32(2) * d3 + d4
                v[30 + j, tile, c] = np.float32(4) * d1 - np.float32(5) * d3 + d5
        for k in range(0, 36, 6):  # (B^T d) B, one row of 6 points at a time, in place
            for c in range(64):
                e0 = v[k + 0, tile, c]
                e1 = v[k + 1, tile, c]
                e2 = v[k + 2, tile, c]
                e3 = v[k + 3, tile, c]
                e4 = v[k + 4, tile, c]
                e5 = v[k + 5, tile, c]
                v[k + 0, tile, c] = np.float32(4) * e0 - np.float32(5) * e2 + e4
                v[k + 1, tile, c] = -np.float32(4) * e1 - np.float32(4) * e2 + e3 + e4
                v[k + 2, tile, c] = np.float32(4) * e1 - np.float32(4) * e2 - e3 + e4
                v[k + 3, tile, c] = -np.float32(2) * e1 - e2 + np.float32(2) * e3 + e4
                v[k + 4, tile, c] = np.float32(2) * e1 - e2 - np.float32(2) * e3 + e4
                v[k + 5, tile, c] = np.float32(4) * e1 - np.float32(5) * e3 + e5


@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def winograd_products_56x64_56x64_k3s1_f4_7x32(v, u, m):
    """Step 2: for each of the 36 points k, m[k] = v[k] @ u[k] over the input channels: 36 matrix
    products (tiles x in) @ (in x out), with the conv kernel's register tile (7 tiles x 32 channels).
    v: [k][tile][ci], u: [k][group][ci][BLOCK], m: [k][tile][co]."""
    wide_vectors()
    for job in prange(36 * 2 * 28):
        wide_vectors()
        k = job // (2 * 28)
        group = (job // 28) % 2
        t0 = (job % 28) * 7
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
def winograd_output_56x64_56x64_k3s1_f4(m, bias, out):
    """Step 3: each tile's 6x6 products become its 4x4 outputs A^T m A, + bias, ReLU, into
    out (HWC). The rows of A^T are the sums below. Channels innermost, as in step 1."""
    wide_vectors()
    for tile in prange(196):
        wide_vectors()
        h0 = (tile // 14) * 4
        w0 = (tile % 14) * 4
        for j in range(6):  # A^T m, one column j at a time, in place into the first 4 rows of m
            for c in range(64):
                p0 = m[0 + j, tile, c]
                p1 = m[6 + j, tile, c]
                p2 = m[12 + j, tile, c]
                p3 = m[18 + j, tile, c]
                p4 = m[24 + j, tile, c]
                p5 = m[30 + j, tile, c]
                m[0 + j, tile, c] = p0 + p1 + p2 + p3 + p4
                m[6 + j, tile, c] = p1 - p2 + np.float32(2) * p3 - np.float32(2) * p4
                m[12 + j, tile, c] = p1 + p2 + np.float32(4) * p3 + np.float32(4) * p4
                m[18 + j, tile, c] = p1 - p2 + np.float32(8) * p3 - np.float32(8) * p4 + p5
        for i in range(4):  # (A^T m) A, one output row at a time
            for c in range(64):
                e0 = m[6 * i + 0, tile, c]
                e1 = m[6 * i + 1, tile, c]
                e2 = m[6 * i + 2, tile, c]
                e3 = m[6 * i + 3, tile, c]
                e4 = m[6 * i + 4, tile, c]
                e5 = m[6 * i + 5, tile, c]
                out[h0 + i, w0 + 0, c] = max(e0 + e1 + e2 + e3 + e4 + bias[c], np.float32(0.0))
                out[h0 + i, w0 + 1, c] = max(e1 - e2 + np.float32(2) * e3 - np.float32(2) * e4 + bias[c], np.float32(0.0))
                out[h0 + i, w0 + 2, c] = max(e1 + e2 + np.float32(4) * e3 + np.float32(4) * e4 + bias[c], np.float32(0.0))
                out[h0 + i, w0 + 3, c] = max(e1 - e2 + np.float32(8) * e3 - np.float32(8) * e4 + e5 + bias[c], np.float32(0.0))
