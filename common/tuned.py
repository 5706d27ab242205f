"""Stage 12's tuned float32 stage, for the float32 stages after it: its prelude, its candidate tiles, its packing for
a chosen tile and its stand-in weights. stages/stage12_tuned/model.py writes them out and explains them.
"""

import numpy as np

from common.architecture import Conv, ResNet50
from common.tiles import TILES, Choice
from common.weights import fold_batch_norm
from common.winograd import winograd_tile, winograd_transform

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


def candidates(conv: Conv, tiles=TILES) -> list[Choice]:
    """The tiles (of this CPU's register_tiles, by default) the tuning times for a conv's shape, stage 11's first:
    those whose rows split what the tile's rows run over (a row of output pixels, or the Winograd tiles). The
    Winograd size and the tile order stay stage 11's: tuned too, they never beat its choice (README)."""
    m = winograd_tile(conv)
    rows_over = (conv.out_size // m) ** 2 if m else conv.out_size
    return [Choice(rows, block) for rows, block in tiles if rows_over % rows == 0 and conv.out_channels % block == 0]


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
