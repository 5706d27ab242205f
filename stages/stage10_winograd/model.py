"""Stage 10, Winograd: F(2x2, 3x3), fewer multiplies for the 3x3 convs of layers 1-3.

Winograd's F(2x2, 3x3) computes each 2x2 block of a 3x3 stride-1 conv's outputs from a 4x4 input patch d
with 16 multiplies per input channel instead of 36: Y = A^T [(G g G^T) * (B^T d B)] A, * element by
element. The kernel's transform U = G g G^T is computed once, when the weights are folded (`fold`,
WINOGRAD_G). Each conv is then three steps: WINOGRAD_INPUT turns every patch into V = B^T d B (additions
only); WINOGRAD_PRODUCTS computes, for each of the 16 points k, the matrix product V[k] (tiles x in) @
U[k] (in x out) with the register tile; WINOGRAD_OUTPUT turns each tile's 16 products into its 2x2 outputs
A^T M A, then adds the bias and applies the ReLU. `uses_winograd` picks the convs: 3x3, stride 1, with
2x2 tiles that come ROWS at a time, i.e. layers 1-3 (layer 4's 7x7 outputs do not split into 2x2 tiles).

Everything else is stage 9's, unchanged and imported: stage 8's register-tiled direct conv kernel, its tiles shared
out over the threads, for every other conv (common/kernels.py's TILED_CONV, common/tiles.py's tiled_conv); folded
batch norm, fused output loop, generated source, buffers and pool.
"""

from functools import partial
from pathlib import Path

import numpy as np

from common.architecture import Conv
from common.model import Compiled, Parts
from common.planner import Planner
from common.tiles import BLOCK, ROWS, TILE_CHOICE, tiled_conv, tiled_plan
from common.weights import fold_batch_norm, folded_pool

WINOGRAD_OUT, WINOGRAD_IN = 2, 4  # F(2x2, 3x3): 2x2 outputs from each 4x4 input patch
WINOGRAD_POINTS = WINOGRAD_IN * WINOGRAD_IN
# G: the 3x3 kernel g -> its 4x4 Winograd form G g G^T, computed once at load time.
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import stack_floats, wide_vectors

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
POINTS = "float32[:, :, ::1]"
'''

WINOGRAD_INPUT = '''

@njit(f"void({{HWC}}, {{POINTS}})", fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, v):
    """Winograd F(2x2, 3x3), step 1: every 4x4 input patch d (patches 2 apart, overlapping by 2) of x,
    HWC with a zero border of 1, becomes B^T d B, stored as v[k, tile, channel] for its 16 points k.
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: additions only. The innermost
    loops run over channels, contiguous in x and in v, so the loop vectorizer makes them 16 lanes wide."""
    wide_vectors()
    for tile in prange({tiles}):
        wide_vectors()
        h0 = (tile // {side}) * 2
        w0 = (tile % {side}) * 2
        for j in range(4):  # B^T d, one column j of the patch at a time, into v[4i + j]
            for c in range({channels}):
                d0, d1, d2, d3 = x[h0, w0 + j, c], x[h0 + 1, w0 + j, c], x[h0 + 2, w0 + j, c], x[h0 + 3, w0 + j, c]
                v[j, tile, c] = d0 - d2
                v[4 + j, tile, c] = d1 + d2
                v[8 + j, tile, c] = d2 - d1
                v[12 + j, tile, c] = d1 - d3
        for k in range(0, 16, 4):  # (B^T d) B, one row of 4 points at a time, in place
            for c in range({channels}):
                e0, e1, e2, e3 = v[k, tile, c], v[k + 1, tile, c], v[k + 2, tile, c], v[k + 3, tile, c]
                v[k, tile, c] = e0 - e2
                v[k + 1, tile, c] = e1 + e2
                v[k + 2, tile, c] = e2 - e1
                v[k + 3, tile, c] = e1 - e3
'''

WINOGRAD_PRODUCTS = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(v, u, m):
    """Step 2: for each of the 16 points k, m[k] = v[k] @ u[k] over the input channels: 16 matrix
    products (tiles x in) @ (in x out), with the conv kernel's register tile ({rows} tiles x {block} channels).
    v: [k][tile][ci], u: [k][group][ci][BLOCK], m: [k][tile][co]."""
    wide_vectors()
    for job in prange(16 * {groups} * {tile_blocks}):
        wide_vectors()
        k = job // ({groups} * {tile_blocks})
        group = (job // {tile_blocks}) % {groups}
        t0 = (job % {tile_blocks}) * {rows}
        acc = numba.carray(stack_floats({sums}), ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] = 0.0
        for ci in range({in_channels}):
            for r in range({rows}):
                xv = v[k, t0 + r, ci]
                for c in range({block}):
                    acc[r, c] += xv * u[k, group, ci, c]
        for r in range({rows}):
            for c in range({block}):
                m[k, t0 + r, group * {block} + c] = acc[r, c]
'''

WINOGRAD_OUTPUT = '''

@njit(f"void({{POINTS}}, {{VECTOR}}, {{HWC}})", fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(m, bias, out):
    """Step 3: each tile's 4x4 products become its 2x2 outputs A^T m A, + bias, ReLU, into out (HWC).
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. Channels innermost, as in step 1."""
    wide_vectors()
    for tile in prange({tiles}):
        wide_vectors()
        h0 = (tile // {side}) * 2
        w0 = (tile % {side}) * 2
        for j in range(4):  # A^T m, one column j at a time, in place into rows 0 and 1 of m
            for c in range({channels}):
                m0, m1, m2, m3 = m[j, tile, c], m[4 + j, tile, c], m[8 + j, tile, c], m[12 + j, tile, c]
                m[j, tile, c] = m0 + m1 + m2
                m[4 + j, tile, c] = m1 - m2 - m3
        for i in range(2):  # (A^T m) A, one output row at a time
            for c in range({channels}):
                e0, e1, e2, e3 = m[4 * i, tile, c], m[4 * i + 1, tile, c], m[4 * i + 2, tile, c], m[4 * i + 3, tile, c]
                out[h0 + i, w0, c] = max(e0 + e1 + e2 + bias[c], np.float32(0.0))
                out[h0 + i, w0 + 1, c] = max(e1 - e2 - e3 + bias[c], np.float32(0.0))
'''


def uses_winograd(conv: Conv) -> bool:
    """3x3 stride-1 convs whose output splits into 2x2 tiles, ROWS tiles at a time: layers 1-3, not the
    7x7 of layer4. Every 3x3 conv of ResNet-50 is a bottleneck's conv2: ReLU after it, no residual add,
    no border on its output, which is what the Winograd kernels do."""
    tiles = (conv.out_size // WINOGRAD_OUT) ** 2
    return conv.kernel == 3 and conv.stride == 1 and conv.out_size % WINOGRAD_OUT == 0 and tiles % ROWS == 0


def fold(conv: Conv, tensors, eps):
    """A conv's weight with its batch norm folded in (common.weights.fold_batch_norm), and its bias; the weight laid
    out as the conv kernel reads it: [group][kh][kw][ci][BLOCK], or [k][group][ci][BLOCK] in Winograd form."""
    folded, bias = fold_batch_norm(conv, tensors, eps)
    groups = conv.out_channels // BLOCK
    if uses_winograd(conv):
        transformed = np.einsum("ai,ocij,bj->ocab", WINOGRAD_G, folded, WINOGRAD_G)  # (out, in, 4, 4)
        packed = transformed.reshape(groups, BLOCK, conv.in_channels, WINOGRAD_POINTS).transpose(3, 0, 2, 1)
    else:
        packed = folded.reshape(groups, BLOCK, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias.astype(np.float32)


def conv_step(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0):
    """A conv that uses Winograd as its three steps, with two scratch buffers of 16 values per 2x2 tile, one pair
    per layer shape; every other conv as stage 9 runs it."""
    if not uses_winograd(conv):
        return tiled_conv(p, pool, x, conv, out, residual, relu, out_border)
    u, bias = pool[conv.name]
    side = conv.out_size // WINOGRAD_OUT
    tiles = side * side
    key = f"{conv.out_size}x{conv.in_channels}_{conv.out_channels}"
    v = p.scratch(f"v{key}", (WINOGRAD_POINTS, tiles, conv.in_channels))
    m = p.scratch(f"m{key}", (WINOGRAD_POINTS, tiles, conv.out_channels))
    p.emit(WINOGRAD_INPUT, f"winograd_input_{key}", (x, v), conv, tiles=tiles, side=side, channels=conv.in_channels)
    p.emit(WINOGRAD_PRODUCTS, f"winograd_products_{key}", (v, u, m), conv, tiled=True,
           groups=conv.out_channels // BLOCK, tile_blocks=tiles // ROWS, in_channels=conv.in_channels, rows=ROWS,
           block=BLOCK, sums=ROWS * BLOCK)
    p.emit(WINOGRAD_OUTPUT, f"winograd_output_{key}", (m, bias, out), conv, tiles=tiles, side=side,
           channels=conv.out_channels)
    return out


def plan(arch, pool):
    """Stage 9's plan, with the Winograd conv step for the convs that use it."""
    return tiled_plan(arch, pool, conv_step)


PARTS = Parts(Path(__file__), PRELUDE, partial(folded_pool, fold=fold), plan, choice=TILE_CHOICE)
Model = partial(Compiled, PARTS)
