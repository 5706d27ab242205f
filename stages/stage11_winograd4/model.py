"""Stage 11, Winograd 4x4: F(4x4, 3x3) where its tiles fit, F(2x2, 3x3) where they do not.

F(4x4, 3x3) computes each 4x4 block of outputs from a 6x6 input patch with 36 multiplies per input
channel, 2.25 per output where F(2x2, 3x3) needs 4 and a direct conv 9, and it reads and writes fewer
transformed values per output. Its matrices (WINOGRAD_B_T, WINOGRAD_G, WINOGRAD_A_T) come from the
interpolation points 0, +-1, +-2 and infinity; G holds sixths and twenty-fourths, so it is applied in
float64 when the weights are folded, and rounded once. `winograd_tile` picks the size for each 3x3 conv:
F(4x4) for the 56x56 and 28x28 outputs of layers 1-2, F(2x2) for layer 3 (14x14 does not split into 4x4
tiles), none for layer 4. The transforms are generated from the matrices (`combination`,
`transform_source`), so the same templates serve both sizes.

Everything else is stage 10's: the three Winograd steps (input transform, products with the register
tile, output transform) and, for every other conv, stage 9's tile-threaded direct conv kernel; folded
batch norm, fused output loop, generated source, buffers and pool. Stage 12 imports this stage's Winograd from
common/winograd.py.
"""

from functools import partial
from pathlib import Path

import numpy as np

from common.architecture import Conv
from common.model import Compiled, Parts
from common.planner import Planner, indented
from common.tiles import BLOCK, ROWS, TILE_CHOICE, tiled_conv, tiled_plan
from common.weights import fold_batch_norm, folded_pool

# Winograd F(m x m, 3x3), m = 2 or 4: Y = A^T [(G g G^T) * (B^T d B)] A, an m x m block of outputs Y of the 3x3
# kernel g from an (m + 2) x (m + 2) input patch d. F(4x4) interpolates at 0, +-1, +-2 and infinity (Lavin and Gray).
WINOGRAD_TILES = (4, 2)  # the sizes tried, biggest first
WINOGRAD_B_T = {2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
                4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]}
WINOGRAD_G = {2: np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]),
              4: np.array([[1 / 4, 0.0, 0.0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                           [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0.0, 0.0, 1.0]])}
WINOGRAD_A_T = {2: [[1, 1, 1, 0], [0, 1, -1, -1]],
                4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]}
TRANSFORM_DEPTH = 4  # the transforms' statements: in the templates' loops over tiles, columns (rows) and channels


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
    """Winograd F({size}x{size}, 3x3), step 1: every {patch}x{patch} input patch d (patches {size} apart, overlapping
    by 2) of x, HWC with a zero border of 1, becomes B^T d B, stored as v[k, tile, channel] for its {points} points k.
    The rows of B^T are the sums below. The innermost loops run over channels, contiguous in x and in v,
    so the loop vectorizer makes them full-width."""
    wide_vectors()
    for tile in prange({tiles}):
        wide_vectors()
        h0 = (tile // {side}) * {size}
        w0 = (tile % {side}) * {size}
        for j in range({patch}):  # B^T d, one column j of the patch at a time, into v[{patch}i + j]
            for c in range({channels}):
{column}
        for k in range(0, {points}, {patch}):  # (B^T d) B, one row of {patch} points at a time, in place
            for c in range({channels}):
{row}
'''

WINOGRAD_PRODUCTS = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(v, u, m):
    """Step 2: for each of the {points} points k, m[k] = v[k] @ u[k] over the input channels: {points} matrix
    products (tiles x in) @ (in x out), with the conv kernel's register tile ({rows} tiles x {block} channels).
    v: [k][tile][ci], u: [k][group][ci][BLOCK], m: [k][tile][co]."""
    wide_vectors()
    for job in prange({points} * {groups} * {tile_blocks}):
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
    """Step 3: each tile's {patch}x{patch} products become its {size}x{size} outputs A^T m A, + bias, ReLU, into
    out (HWC). The rows of A^T are the sums below. Channels innermost, as in step 1."""
    wide_vectors()
    for tile in prange({tiles}):
        wide_vectors()
        h0 = (tile // {side}) * {size}
        w0 = (tile % {side}) * {size}
        for j in range({patch}):  # A^T m, one column j at a time, in place into the first {size} rows of m
            for c in range({channels}):
{column}
        for i in range({size}):  # (A^T m) A, one output row at a time
            for c in range({channels}):
{row}
'''


def winograd_tile(conv: Conv) -> int | None:
    """The biggest m of WINOGRAD_TILES for which a 3x3 stride-1 conv's output splits into m x m tiles, ROWS
    tiles at a time: 4 for layers 1-2, 2 for layer 3, None for the 7x7 of layer4 (and every other conv).
    Every 3x3 conv of ResNet-50 is a bottleneck's conv2: ReLU after it, no residual add, no border on its
    output, which is what the Winograd kernels do."""
    if conv.kernel != 3 or conv.stride != 1:
        return None
    return next((m for m in WINOGRAD_TILES if conv.out_size % m == 0 and (conv.out_size // m) ** 2 % ROWS == 0), None)


def combination(row, names) -> str:
    """One row of a transform matrix applied to named values, as source: ([4, 0, -5], "d") -> "4 d0 - 5 d2",
    written `np.float32(4) * d0 - np.float32(5) * d2` so that numba keeps it in float32."""
    terms = []
    for index, coefficient in enumerate(row):
        if coefficient:
            factor = "" if abs(coefficient) == 1 else f"np.float32({abs(coefficient)}) * "
            terms.append(("-" if coefficient < 0 else "+") + f" {factor}{names}{index}")
    text = " ".join(terms)
    return text[2:] if text.startswith("+") else "-" + text[2:]


def transform_source(m: int) -> dict[str, str]:
    """The statements of the input and output transforms of F(m x m, 3x3), to fill WINOGRAD_INPUT and
    WINOGRAD_OUTPUT: B^T and A^T applied along the patch's columns, then along its rows."""
    n, b_t, a_t = m + 2, WINOGRAD_B_T[m], WINOGRAD_A_T[m]
    column = [f"d{r} = x[h0 + {r}, w0 + j, c]" for r in range(n)]
    column += [f"v[{n * i} + j, tile, c] = {combination(row, 'd')}" for i, row in enumerate(b_t)]
    row = [f"e{r} = v[k + {r}, tile, c]" for r in range(n)]
    row += [f"v[k + {i}, tile, c] = {combination(b_row, 'e')}" for i, b_row in enumerate(b_t)]
    out_column = [f"p{r} = m[{n * r} + j, tile, c]" for r in range(n)]
    out_column += [f"m[{n * i} + j, tile, c] = {combination(a_row, 'p')}" for i, a_row in enumerate(a_t)]
    out_row = [f"e{r} = m[{n} * i + {r}, tile, c]" for r in range(n)]
    out_row += [f"out[h0 + i, w0 + {j}, c] = max({combination(a_row, 'e')} + bias[c], np.float32(0.0))"
                for j, a_row in enumerate(a_t)]
    # The statements sit in the templates' innermost loops, 4 levels deep.
    return {name: indented("\n".join(lines), TRANSFORM_DEPTH) for name, lines in
            (("input_column", column), ("input_row", row), ("output_column", out_column), ("output_row", out_row))}


def fold(conv: Conv, tensors, eps):
    """A conv's weight with its batch norm folded in (common.weights.fold_batch_norm), and its bias; the weight laid
    out as the conv kernel reads it: [group][kh][kw][ci][BLOCK], or [k][group][ci][BLOCK] in Winograd form."""
    folded, bias = fold_batch_norm(conv, tensors, eps)
    groups = conv.out_channels // BLOCK
    m = winograd_tile(conv)
    if m:
        g = WINOGRAD_G[m]
        transformed = np.einsum("ai,ocij,bj->ocab", g, folded, g)  # (out, in, m + 2, m + 2)
        packed = transformed.reshape(groups, BLOCK, conv.in_channels, (m + 2) ** 2).transpose(3, 0, 2, 1)
    else:
        packed = folded.reshape(groups, BLOCK, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias.astype(np.float32)


def conv_step(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0):
    """A conv that Winograd serves (winograd_tile) as the three steps of F(m x m, 3x3), with two scratch buffers of
    (m + 2)^2 values per m x m tile, one pair per layer shape; every other conv as stage 9 runs it."""
    tile = winograd_tile(conv)
    if not tile:
        return tiled_conv(p, pool, x, conv, out, residual, relu, out_border)
    u, bias = pool[conv.name]
    side, points = conv.out_size // tile, (tile + 2) ** 2
    tiles = side * side
    key = f"{conv.out_size}x{conv.in_channels}_{conv.out_channels}_f{tile}"
    v = p.scratch(f"v{key}", (points, tiles, conv.in_channels))
    m = p.scratch(f"m{key}", (points, tiles, conv.out_channels))
    shape = dict(size=tile, patch=tile + 2, tiles=tiles, side=side)
    code = transform_source(tile)
    p.emit(WINOGRAD_INPUT, f"winograd_input_{key}", (x, v), conv, channels=conv.in_channels,
           column=code["input_column"], row=code["input_row"], points=points, **shape)
    p.emit(WINOGRAD_PRODUCTS, f"winograd_products_{key}", (v, u, m), conv, tiled=True,
           groups=conv.out_channels // BLOCK, tile_blocks=tiles // ROWS, in_channels=conv.in_channels, rows=ROWS,
           block=BLOCK, sums=ROWS * BLOCK, points=points)
    p.emit(WINOGRAD_OUTPUT, f"winograd_output_{key}", (m, bias, out), conv, channels=conv.out_channels,
           column=code["output_column"], row=code["output_row"], **shape)
    return out


def plan(arch, pool):
    """Stage 10's plan, with F(4x4) where its tiles fit."""
    return tiled_plan(arch, pool, conv_step)


PARTS = Parts(Path(__file__), PRELUDE, partial(folded_pool, fold=fold), plan, choice=TILE_CHOICE)
Model = partial(Compiled, PARTS)
