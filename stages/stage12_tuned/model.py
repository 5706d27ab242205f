"""Stage 12, tuned: each layer shape gets the register tile that ran fastest on this CPU, timed at the first run.

Stage 11 uses one tile everywhere, 7 pixels x 32 channels on AVX-512, chosen from the register count and from
measurements on one AMD machine. A tile of 14 x 32 fits the 32 registers too (28 sums, 2 weight vectors, 1 input)
and loads each weight vector once per 14 pixels instead of 7, but it leaves half as many tiles to share between the
threads and its pixels run further through the input; which wins depends on the layer and on the CPU's caches, so
it is measured, as ATLAS, FFTW and TVM do. At the first run on a CPU the stage plans its forward pass once per
candidate tile (`plan`, on `stand_in` weights: common/model.py's `tune`), compiles the kernels in parallel, times
every kernel call inside whole forward passes (a layer timed alone is misjudged) and keeps, per layer shape, the
fastest (common/tuning.py).
The choices are kept in the kernel cache, keyed like the kernels by CPU and versions; later runs load them. The
candidates are the tiles whose sums, weight vectors and broadcast input fit the vector registers (`register_tiles`):
7x32 and 14x32 on AVX-512, 7x8 and 14x8 on AVX2. The tile order and the Winograd size were tuned too, and stage
11's rules always won (README), so they stay as they were.

Everything else is stage 11's, imported: Winograd F(4x4) and F(2x2) where their tiles fit (common/winograd.py), the
tile-threaded direct conv kernel (common/tiles.py), folded batch norm, fused output loop, generated source, buffers
and pool. The weights are packed for the tile of their layer (`fold`); the prepared-weights cache is prepared again
when a new tuning changes the tiles. Stages 13-15 tune the same way, with this stage's candidates, Choice and
shape names from common/tiles.py.
"""

from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common.architecture import Conv, ResNet50
from common.intrinsics import LANES, VECTOR_REGISTERS
from common.model import Compiled, Parts, Tuning
from common.planner import Planner
from common.tiles import ROWS, channel_vectors, tiled_conv, tiled_plan
from common.weights import fold_batch_norm, folded_pool
from common.winograd import winograd, winograd_tile, winograd_transform

ROW_CHOICES = (ROWS, 2 * ROWS)  # the tuning's: 14 divides the output widths of layers 1-3 and of the stem


def register_tiles(registers: int, lanes: int) -> list[tuple[int, int]]:
    """(rows, channels) of the tiles of stage 11's channel_vectors whose rows x vectors sums, one step's weight vectors
    and its broadcast input fit the registers: 7x32 and 14x32 (14 x 2 + 2 + 1 = 31) of 32 registers of 16 lanes
    (AVX-512), 7x8 and 14x8 of 16 of 8 (AVX2). Tiles of fewer channel vectors (7x16, 14x16, 28x16 on AVX-512) were
    never the fastest when measured (README); none of 48 channels: 48 divides no channel count of ResNet-50."""
    vectors = channel_vectors(registers)
    return [(rows, vectors * lanes) for rows in ROW_CHOICES if rows * vectors + vectors + 1 <= registers]


TILES = register_tiles(VECTOR_REGISTERS, LANES)


class Choice(NamedTuple):
    """What the tuning picks for one layer shape, kept as a list of these two in the choice file."""

    rows: int  # output pixels (or Winograd tiles) per register tile
    block: int  # output channels per register tile


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

def shape_name(conv: Conv) -> str:
    return f"{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}_k{conv.kernel}s{conv.stride}"


def candidates(conv: Conv, tiles=TILES) -> list[Choice]:
    """The tiles (of this CPU's register_tiles, by default) the tuning times for a conv's shape, stage 11's first:
    those whose rows split what the tile's rows run over (a row of output pixels, or the Winograd tiles). The
    Winograd size and the tile order stay stage 11's: tuned too, they never beat its choice (README)."""
    m = winograd_tile(conv)
    rows_over = (conv.out_size // m) ** 2 if m else conv.out_size
    return [Choice(rows, block) for rows, block in tiles if rows_over % rows == 0 and conv.out_channels % block == 0]


def label(choice: Choice) -> str:
    return f"{choice.rows}x{choice.block}"


def fold(conv: Conv, tensors, eps, choice: Choice):
    """A conv's weight with its batch norm folded in (common.weights.fold_batch_norm), and its bias; the weight laid
    out as the choice's conv kernel reads it: [group][kh][kw][ci][block], or [k][group][ci][block] in Winograd
    form."""
    folded, bias = fold_batch_norm(conv, tensors, eps)
    groups, block, m = conv.out_channels // choice.block, choice.block, winograd_tile(conv)
    if m:
        transformed = winograd_transform(folded, m)  # (out, in, m + 2, m + 2)
        packed = transformed.reshape(groups, block, conv.in_channels, (m + 2) ** 2).transpose(3, 0, 2, 1)
    else:
        packed = folded.reshape(groups, block, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias.astype(np.float32)


def load_pool(manifest, weights_dir, choices):
    """Every conv as (folded weight, bias) by conv name, packed for its shape's choice; fc's weight and bias as
    exported."""
    return folded_pool(manifest, weights_dir, lambda conv, tensors, eps: fold(conv, tensors, eps,
                                                                              choices[shape_name(conv)]))


def conv_step(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0, *, choices):
    """Stage 11's conv step, with the register tile chosen for the conv's shape; every kernel's name holds its
    shape's name, by which the tuning times it, and the tile's label."""
    choice = choices[shape_name(conv)]
    tile = winograd_tile(conv)
    if tile:
        return winograd(p, pool, x, conv, out, tile, choice, f"{shape_name(conv)}_f{tile}", f"_{label(choice)}")
    return tiled_conv(p, pool, x, conv, out, residual, relu, out_border, choice, f"_{label(choice)}")


def plan(arch: ResNet50, pool: dict, choices: dict):
    """Stage 11's plan, with each shape's chosen tile."""
    return tiled_plan(arch, pool, partial(conv_step, choices=choices))


def stand_in(conv: Conv, choice: Choice):
    """(weight, bias) of the shape fold packs them in for `choice`, written (pages never written all read one page
    of zeros), each weight 1 / its sums' length, so that the activations keep their size through the network (an
    overflow to infinity could change the timing)."""
    m, k, groups = winograd_tile(conv), conv.kernel, conv.out_channels // choice.block
    shape = ((m + 2) ** 2, groups, conv.in_channels, choice.block) if m else \
        (groups, k, k, conv.in_channels, choice.block)
    return np.full(shape, 1 / (conv.in_channels * k * k), np.float32), np.zeros(conv.out_channels, np.float32)


def stand_in_fc(arch: ResNet50):
    fc = arch.fc
    return np.ones((fc.out_features, fc.in_features), np.float32), np.ones(fc.out_features, np.float32)


PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan,
              tuning=Tuning(Choice, candidates, stand_in, stand_in_fc))
Model = partial(Compiled, PARTS)
