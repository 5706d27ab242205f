"""Stage 9, tile threads: stage 8's register-tiled conv kernel, with its tiles shared out over the threads.

Stage 8 split each conv over the threads by groups of BLOCK output channels, as stage 6 split it by output
channels. The stem and the convs of layer 1 have 64 output channels, 2 groups: at most 2 threads work on
them, whatever the number of cores. Here `prange` runs over all the tiles of a conv (channel group x row x
column block): even the 7x7 layers have 7 x 16 = 112 of them, so every thread gets work. Each thread gets
one contiguous range of tile numbers, and the numbering, chosen for each conv when the source is generated
(`pixels_first`: is the conv's input bigger than its weights?), decides what it keeps in its core's cache:
pixel-major where the input is bigger (with the v1 weights: the stem, layer 1, the 1x1 convs of layer 2 and
layer3.0.conv1), so that a thread works on the part of the image it wrote in the layer before, still in its
own L2 cache; group-major where the weights are bigger (layer 2's 3x3 convs and the rest of layers 3-4), so
that a thread's tiles share one group's weights.

Everything else is stage 8's, unchanged and imported: the tile's size and packing and the plan with zero-bordered
inputs (common/tiles.py), the intrinsics and vectorizer settings its docstring explains (common/intrinsics.py),
and what stage 8 inherited: folded batch norm, fused output loop, generated source, buffers and pool. From stage 10
on, this conv kernel is common/kernels.py's TILED_CONV and its step common/tiles.py's tiled_conv.
"""

from functools import partial
from pathlib import Path

from common.architecture import Conv
from common.model import Compiled, Parts
from common.planner import Planner
from common.tiles import BLOCK, ROWS, TILE_CHOICE, fold, tiled_plan
from common.weights import folded_pool

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import stack_floats, wide_vectors

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
'''

CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out):
    """x: HWC, zero border {padding}; weight: [group][kh][kw][ci][BLOCK]; out: HWC, border {out_pad} left alone."""
    wide_vectors()
    # prange gives each thread one contiguous range of tile numbers. Numbered group-major, a thread's
    # tiles share one group's weights; numbered pixel-major, a thread keeps to its part of the image,
    # the part it wrote in the layer before, still in its own core's L2 cache.
    for tile in prange({groups} * {positions}):
        wide_vectors()
        if {pixels_first}:
            group, position = tile % {groups}, tile // {groups}
        else:
            group, position = tile // {positions}, tile % {positions}
        ho = position // {column_tiles}
        wo0 = (position % {column_tiles}) * {rows}
        acc = numba.carray(stack_floats({sums}), ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] = bias[group * {block} + c]
        for kh in range({kernel}):
            for kw in range({kernel}):
                for ci in range({in_channels}):
                    for r in range({rows}):
                        xv = x[ho * {stride} + kh, (wo0 + r) * {stride} + kw, ci]
                        for c in range({block}):
                            acc[r, c] += xv * weight[group, kh, kw, ci, c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if {add_residual}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] += residual[ho, wo0 + r, group * {block} + c]
        if {relu}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range({rows}):
            for c in range({block}):
                out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = acc[r, c]
'''


def conv_step(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0):
    """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu).
    x has a zero border of the conv's padding; out one of out_border. Without a residual, `out`
    stands in for the argument the kernel does not read."""
    weight, bias = pool[conv.name]
    add_residual = residual is not None
    epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
    name = (f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
            f"_k{conv.kernel}s{conv.stride}{epilogue}")
    p.emit(CONV, name, (x, weight, bias, residual if add_residual else out, out), conv, tiled=True,
           in_channels=conv.in_channels, groups=conv.out_channels // BLOCK,
           positions=conv.out_size * (conv.out_size // ROWS), column_tiles=conv.out_size // ROWS,
           kernel=conv.kernel, stride=conv.stride, padding=conv.padding, add_residual=add_residual, relu=relu,
           out_pad=out_border, rows=ROWS, block=BLOCK, sums=ROWS * BLOCK,
           pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
    return out


def plan(arch, pool):
    """Stage 8's plan, with this stage's conv step."""
    return tiled_plan(arch, pool, conv_step)


PARTS = Parts(Path(__file__), PRELUDE, partial(folded_pool, fold=fold), plan, choice=TILE_CHOICE)
Model = partial(Compiled, PARTS)
