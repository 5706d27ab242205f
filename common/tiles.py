"""The register tile: how many output pixels and channels a conv kernel keeps in vector registers, how its weights are
packed and its forward pass planned, taught where each piece is introduced and imported from here after.

- Stage 8 (tiled) sizes one tile for the CPU numba compiles for, at import: ROWS output pixels by BLOCK output
  channels, as many channel vectors as fit the registers beside one step's weight vectors and broadcast input
  (`channel_vectors`): 7 x 32 with AVX-512, 7 x 8 with AVX2. It packs the weights for it (`fold`) and plans the
  pass with zero-bordered inputs for the convs that pad (`tiled_plan`, with common.planner's `bottleneck`).
  Stages 9-12 keep that plan, each with its own conv step.
- Stage 12 (tuned) times a few candidate tiles per layer shape (`register_tiles`: 7 or 14 rows) and keeps the
  fastest, a `Choice` by `shape_name`; stages 13-15 tune the same way.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from common.architecture import Conv, ResNet50
from common.intrinsics import LANES, VECTOR_BITS, VECTOR_REGISTERS
from common.kernels import NUM_BUFFERS, TILED_CONV, head, max_pool
from common.planner import Plan, Planner, bottleneck, rotate
from common.weights import fold_batch_norm

ROWS = 7  # output pixels per tile: divides every output width of ResNet-50 (112, 56, 28, 14, 7)
ROW_CHOICES = (ROWS, 2 * ROWS)  # the tuning's: 14 divides the output widths of layers 1-3 and of the stem


def channel_vectors(registers: int) -> int:
    """Vectors of output channels per tile row: the most, a power of 2, for which ROWS x vectors sums, one step's
    weight vectors and its broadcast input fit the registers: 2 of 32 (14 + 2 + 1), 1 of 16 (AVX2: 7 + 1 + 1)."""
    vectors = 1
    while (ROWS + 1) * 2 * vectors + 1 <= registers:
        vectors *= 2
    return vectors


# The tile is chosen for the vector registers of the CPU numba compiles for, once, when this is imported.
BLOCK = channel_vectors(VECTOR_REGISTERS) * LANES  # output channels per tile: 32, 8 or 8, dividing 64
TILE_CHOICE = f"tile {ROWS}x{BLOCK}, {VECTOR_BITS}-bit vectors"


def fold(conv: Conv, tensors, eps):
    """A conv's weight with its batch norm folded in (common.weights.fold_batch_norm, stage 7's), and its bias; the
    weight laid out as the conv kernel reads it: [group][kh][kw][ci][BLOCK]."""
    folded, bias = fold_batch_norm(conv, tensors, eps)
    groups = conv.out_channels // BLOCK
    packed = folded.reshape(groups, BLOCK, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias.astype(np.float32)


def tiled_conv(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0, tile=None,
               suffix=""):
    """Stage 9's conv step: one conv with its batch norm folded in, then + residual (if not None), then ReLU (if
    relu), by TILED_CONV with `tile` (rows, block; stage 8's ROWS x BLOCK by default), the kernel's name ending in
    `suffix`. x has a zero border of the conv's padding; out one of out_border. Without a residual, `out` stands in
    for the argument the kernel does not read."""
    rows, block = tile or (ROWS, BLOCK)
    weight, bias = pool[conv.name]
    add_residual = residual is not None
    epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
    p.emit(TILED_CONV, f"conv_{shape_name(conv)}{epilogue}{suffix}",
           (x, weight, bias, residual if add_residual else out, out), conv, tiled=True,
           in_channels=conv.in_channels, groups=conv.out_channels // block,
           positions=conv.out_size * (conv.out_size // rows), column_tiles=conv.out_size // rows,
           kernel=conv.kernel, stride=conv.stride, padding=conv.padding, add_residual=add_residual, relu=relu,
           out_pad=out_border, rows=rows, block=block, sums=rows * block,
           pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
    return out


def tiled_plan(arch: ResNet50, pool: dict, conv_step: Callable) -> Plan:
    """Stage 8's plan: the stem's input and every conv2's inside a zero border of their padding, with the stage's
    conv step, `conv_step(p, pool, x, conv, out, residual, relu, out_border)`, for every conv."""
    p = Planner()
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
    stem = arch.stem
    image = p.bordered(stem.in_size, stem.in_channels, stem.padding)  # HWC, the stem's padding around it

    def conv(x, c: Conv, out, residual, relu: bool, out_border=0):
        return conv_step(p, pool, x, c, out, residual, relu, out_border)

    x = conv(image, stem, p.view(buffers[0], stem.out_size, stem.out_channels), None, relu=True)
    x = rotate(arch, max_pool(p, arch, x, buffers[1]), buffers,
               lambda x, block, free: bottleneck(p, conv, x, block, free))
    inside = slice(stem.padding, stem.padding + stem.in_size)
    return p.plan(image[inside, inside], head(p, arch, x, pool["fc"]))


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


def shape_name(conv: Conv) -> str:
    return f"{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}_k{conv.kernel}s{conv.stride}"


def first_of_each_shape(convs) -> dict[str, Conv]:
    """The first conv of each layer shape, by shape_name, in network order: the convs a tile is chosen for."""
    first = {}
    for conv in convs:
        first.setdefault(shape_name(conv), conv)
    return first


def label(choice: Choice) -> str:
    return f"{choice.rows}x{choice.block}"
