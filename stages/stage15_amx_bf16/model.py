"""Stage 15, AMX bfloat16: the convs' register tile becomes AMX tiles, 8,192 multiply-adds per instruction.

AMX (Advanced Matrix Extensions) is a matrix unit beside the vector registers: 8 tile registers of up to 16 rows of
64 bytes, and `tdpbf16ps`, which multiplies a tile of 16 x 32 bfloat16s by one of 32 x 16 into a tile of 16 x 16
float32 sums: 8,192 multiply-adds per instruction, where vdpbf16ps does 32. A conv maps onto it as the register tile
did: the sum tile is ROWS output pixels x 16 output channels, the input tile ROWS pixels x 32 input channels of one
kernel position (`load_tile` reads each pixel's 64 bytes, a stride apart: the HWC activation as it is), the weight
tile 16 pairs of input channels x 16 output channels (stage 14's [group][kh][kw][ci / 2][block][2] packing, with
blocks of 64: each of the 4 sum tiles takes a quarter of a row). Each work item keeps 4 sum tiles, 64 output
channels, and loads each input tile once for the 4 `tile_dot`s. Tiles are stored to a stack array (`store_tile`),
from which the output loop, stage 14's, reads the sums.

Three things AMX asks for. Linux gives a process the tiles' 8 KB of state only when it asks for them (arch_prctl,
`amx_permitted`), or kills it at the first tile instruction. Each thread describes its tiles' shapes once
(`load_tile_config`, from `tile_config`'s 64 bytes), so a conv's prange runs one part per thread instead of one
iteration per tile of output. And a tile row read across two cache lines makes the load 3.5 to 6 times slower
(measured), so every buffer a tile is loaded from starts on a cache line (`cache_aligned`). The stem's 3 input
channels (in 4) would fill an eighth of a tile row, so its tile row is a row of its kernel: 8 neighbouring pixels of
the photo's buffer, the 7 taps of a kernel row and one of zero weights (`row_taps`), and the stem a conv of 7 x 1
taps. fc (1 pixel) stays on stage 14's vdpbf16ps kernel; without AMX every conv does.

Everything else is stage 14's, imported: bfloat16 weights and activations and vdpbf16ps (common/intrinsics.py), its
kernels, packing and plan (common/bf16.py), float32 sums, the tuned tile of ROWS pixels, the fused output loop,
generated source, buffers and pool. bench.peak measures tdpbf16ps's peak with common/intrinsics.py's copy of the
tile instructions below.
"""

import ctypes
from functools import partial
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Conv, ResNet50
from common.bf16 import (
    NON_NEGATIVE,
    OUTPUT_LOOP,
    TILE_POSITION,
    bf16_conv,
    bf16_plan,
    fold_fc,
    pack,
    pairs,
    stand_in_fc,
)
from common.bf16 import stand_in as vector_stand_in
from common.intrinsics import BF16_FEATURE, HAS_BF16, PAIR, bf16_bits
from common.model import Compiled, Parts, Tuning
from common.planner import Plan, Planner, indented
from common.target import target_features
from common.tiles import TILES, Choice, label, shape_name
from common.weights import fold_batch_norm, folded_pool

FLOAT32_BITS = 32
AMX_FEATURES = ("amx-tile", "amx-bf16")  # as LLVM names them
TILE_ROW_BYTES = 64  # bytes per tile row: a cache line, the alignment tile loads want
TILE_ROWS = 16  # rows of a tile, at most
AMX_K = TILE_ROW_BYTES // 2  # input channels in an input tile's row: 32 bfloat16s
AMX_N = TILE_ROW_BYTES // (FLOAT32_BITS // 8)  # output channels in a sum tile's row: 16 float32s
SUM_TILES = 4  # tiles 0-3: the sums of a work item, 4 x 16 = 64 output channels
AMX_BLOCK = SUM_TILES * AMX_N
INPUT_TILE, WEIGHT_TILES = 4, (5, 6, 7)  # the weight tiles take turns, so that a load need not wait for a dot
TILES_IN_USE = SUM_TILES + 1 + len(WEIGHT_TILES)
# ldtilecfg's 64 bytes: the palette (1: 8 tiles of 16 rows x 64 bytes at most), then from byte 16 each tile's bytes
# per row as uint16, from byte 48 its rows as uint8.
TILE_CONFIG_BYTES, PALETTE, COLUMN_BYTES_AT, ROWS_AT = 64, 1, 16, 48
SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 158, 0x1023, 18  # Linux x86-64's arch_prctl(2)


def amx_permitted() -> bool:
    """Does numba compile for a CPU with AMX, and has Linux let this process use its tiles? Asked once, at import."""
    if not all(feature in target_features() for feature in AMX_FEATURES):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0


HAS_AMX = amx_permitted()


def tile_call(name: str, tiles, signature=None, values=()):
    """The codegen of an AMX intrinsic: a call of LLVM's `name` on the tile numbers `tiles` (constants in the
    source: the instruction encodes them), then, if `values` are given, the address of base[index] (an array, or a
    stack pointer) and a stride in bytes between rows."""
    if not all(isinstance(tile, types.IntegerLiteral) for tile in tiles):
        return None

    def codegen(context, builder, signature, values):
        operands = [ir.Constant(ir.IntType(8), tile.literal_value) for tile in tiles]
        if len(values) > len(tiles):
            base, index, stride = values[len(tiles):]
            kind = signature.args[len(tiles)]
            data = base if isinstance(kind, types.CPointer) else context.make_array(kind)(context, builder, base).data
            address = builder.bitcast(builder.gep(data, [index]), ir.IntType(8).as_pointer())
            operands += [address, context.cast(builder, stride, signature.args[-1], types.int64)]
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [operand.type for operand in operands]), name)
        builder.call(function, operands)
        return context.get_dummy_value()

    return codegen


@intrinsic
def load_tile(typingctx, tile, base, index, stride):
    """tileloadd: the tile's rows from base[index] on, each `stride` bytes after the one before."""
    codegen = tile_call("llvm.x86.tileloadd64", [tile])
    return codegen and (types.none(tile, base, index, stride), codegen)


@intrinsic
def store_tile(typingctx, tile, base, index, stride):
    """tilestored: the tile's rows to base[index] on (base: a stack pointer), `stride` bytes apart."""
    codegen = tile_call("llvm.x86.tilestored64", [tile])
    return codegen and (types.none(tile, base, index, stride), codegen)


@intrinsic
def zero_tile(typingctx, tile):
    codegen = tile_call("llvm.x86.tilezero", [tile])
    return codegen and (types.none(tile), codegen)


@intrinsic
def tile_dot(typingctx, sums, inputs, weights):
    """sums += inputs x weights: one tdpbf16ps, rows x 16 float32 sums of 16 pairs of bfloat16 products each."""
    codegen = tile_call("llvm.x86.tdpbf16ps", [sums, inputs, weights])
    return codegen and (types.none(sums, inputs, weights), codegen)


@intrinsic
def release_tiles(typingctx):
    """tilerelease: the tiles back to their initial state, so that the kernel saves no tile state when it switches
    threads."""
    return types.none(), tile_call("llvm.x86.tilerelease", [])


@intrinsic
def load_tile_config(typingctx, config):
    """ldtilecfg: this thread's tiles' shapes, from tile_config's 64 bytes."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [ir.IntType(8).as_pointer()]), "llvm.x86.ldtilecfg")
        builder.call(function, [builder.bitcast(data, ir.IntType(8).as_pointer())])
        return context.get_dummy_value()

    return types.none(config), codegen


# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it. The sums
# a tile is stored to start on a cache line (stack_lines).
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import dot_pairs, from_bf16, to_bf16, wide_vectors
from common.intrinsics import stack_lines as stack_floats
from stages.stage15_amx_bf16.model import load_tile, load_tile_config, release_tiles, store_tile, tile_dot, zero_tile

HWC = "float32[:, :, ::1]"
BF16 = "uint16[:, :, ::1]"
VALUES = "uint16[::1]"
THREADS = numba.config.NUMBA_NUM_THREADS  # one part of a conv's tiles per thread of numba's pool
'''

AMX_CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out, config):
    """CONV's arguments and layouts, and config: tile_config's 64 bytes. x and weight start on a cache line, the
    weight's blocks are AMX_BLOCK channels."""
    wide_vectors()
    # One part per thread of numba's pool, each a contiguous range of tile numbers: a thread loads its tiles' shapes
    # once a part (with fewer threads at work, one runs several parts).
    for part in prange(THREADS):
        wide_vectors()
        load_tile_config(config)
        sums = stack_floats({sums})  # [rows][block]: the 4 sum tiles side by side, stored from the tiles
        for tile in range(part * {tiles} // THREADS, (part + 1) * {tiles} // THREADS):
''' + indented(TILE_POSITION, 1) + '''            zero_tile(0)
            zero_tile(1)
            zero_tile(2)
            zero_tile(3)
            for kh in range({kernel}):
                for kw in range({kernel_w}):
                    for k in range({chunks}):
                        # The input tile: rows pixels of the output row, 32 values of each from input channel
                        # k x 32 on (the stem's: from its tap kw = 0 on, 8 pixels of 4 channels).
                        load_tile(4, x, ((ho * {stride} + kh) * {x_width} + wo0 * {stride} + kw) * {x_channels}
                                  + k * {amx_k}, {input_stride})
                        # The weight tiles: 16 pairs of those values, for 16 output channels each.
                        at = (((group * {kernel} + kh) * {kernel_w} + kw) * {tap_pairs} + k * {amx_k} // 2) * {block}
                        load_tile(5, weight, at, {weight_stride})
                        tile_dot(0, 4, 5)
                        load_tile(6, weight, at + {amx_n}, {weight_stride})
                        tile_dot(1, 4, 6)
                        load_tile(7, weight, at + 2 * {amx_n}, {weight_stride})
                        tile_dot(2, 4, 7)
                        load_tile(5, weight, at + 3 * {amx_n}, {weight_stride})
                        tile_dot(3, 4, 5)
            store_tile(0, sums, 0, {sums_stride})
            store_tile(1, sums, {amx_n}, {sums_stride})
            store_tile(2, sums, 2 * {amx_n}, {sums_stride})
            store_tile(3, sums, 3 * {amx_n}, {sums_stride})
''' + indented(OUTPUT_LOOP, 1) + '''        release_tiles()
'''


def row_taps(conv: Conv) -> bool:
    """Is the conv the stem, whose few input channels (3, in 4) fill a tile row only with a row of kernel taps? An
    input tile row is then 8 neighbouring pixels of the photo's HWC buffer as it is, 7 taps of a kernel row and one
    more (zero weights), which must still be inside the buffer for the last output pixel."""
    taps = AMX_K // (pairs(conv.in_channels) * PAIR)
    return (conv.in_channels % AMX_K != 0 and conv.kernel <= taps
            and (conv.out_size - 1) * conv.stride + taps <= conv.in_size + 2 * conv.padding)


def fits_tiles(conv: Conv) -> bool:
    """Can the conv run on AMX tiles: do its input channels fill whole input tile rows, or a row of its taps?"""
    return conv.in_channels % AMX_K == 0 or row_taps(conv)


def on_tiles(choice: Choice) -> bool:
    """Is this a choice of AMX sum tiles (AMX_BLOCK output channels), rather than of a vdpbf16ps register tile?"""
    return choice.block == AMX_BLOCK


def candidates(conv: Conv, tiles=TILES, amx=HAS_AMX) -> list[Choice]:
    """The tiles the tuning times for a conv's shape, stage 11's first: those whose rows split a row of output
    pixels. The tile order stays stage 11's: tuned too, it never beat its choice (stage 12's README). On a CPU with
    AMX (this one's, by default), for a conv that fits its tiles, sum tiles of those rows and AMX_BLOCK channels."""
    tiles = [(rows, AMX_BLOCK) for rows, _ in tiles] if amx and fits_tiles(conv) else tiles
    return [Choice(rows, block) for rows, block in tiles
            if conv.out_size % rows == 0 and conv.out_channels % block == 0]


def tile_config(rows: int) -> np.ndarray:
    """ldtilecfg's 64 bytes for sum and input tiles of `rows` rows (output pixels), weight tiles of TILE_ROWS (pairs
    of input channels), every row TILE_ROW_BYTES."""
    config = np.zeros(TILE_CONFIG_BYTES, np.uint8)
    config[0] = PALETTE
    config[COLUMN_BYTES_AT : COLUMN_BYTES_AT + 2 * TILES_IN_USE].view(np.uint16)[:] = TILE_ROW_BYTES
    config[ROWS_AT : ROWS_AT + TILES_IN_USE] = [rows] * (SUM_TILES + 1) + [TILE_ROWS] * len(WEIGHT_TILES)
    return config


def cache_aligned(array: np.ndarray) -> np.ndarray:
    """The array itself if it starts on a cache line, else a copy that does (numpy aligns to 16 bytes only)."""
    if array.ctypes.data % TILE_ROW_BYTES == 0:
        return array
    room = np.empty(array.nbytes + TILE_ROW_BYTES, np.uint8)
    start = -room.ctypes.data % TILE_ROW_BYTES
    copy = room[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def fold(conv: Conv, tensors, eps, choice: Choice):
    """Stage 14's fold, the stem's weights on AMX as row taps: a conv of kernel x 1 taps over AMX_K values, each tap
    [kw][ci] of 8 x 4."""
    folded, bias = fold_batch_norm(conv, tensors, eps)  # OIHW
    if on_tiles(choice) and row_taps(conv):
        taps = np.zeros((conv.out_channels, AMX_K // PAIR // pairs(conv.in_channels), pairs(conv.in_channels) * PAIR,
                         conv.kernel))  # [out][kw][ci][kh]
        taps[:, : conv.kernel, : conv.in_channels] = folded.transpose(0, 3, 1, 2)
        folded = taps.reshape(conv.out_channels, AMX_K, conv.kernel, 1)
    return pack(folded, choice), bias.astype(np.float32)


def load_pool(manifest, weights_dir, choices):
    """Every conv as (weight pairs, bias) by conv name, packed for its shape's choice, and fc's the same way."""
    return folded_pool(manifest, weights_dir,
                       lambda conv, tensors, eps: fold(conv, tensors, eps, choices[shape_name(conv)]), fold_fc)


def conv_step(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0, *, choices, configs):
    """A conv whose choice is AMX sum tiles by AMX_CONV, with its tiles' shapes (configs: rows -> tile_config(rows),
    one array per shape of sum tile) and its weights on a cache line; any other by stage 14's kernel."""
    choice = choices[shape_name(conv)]
    if not on_tiles(choice):
        return bf16_conv(p, pool, x, conv, out, residual, relu, out_border, choices=choices)
    weight, bias = pool[conv.name]
    weight = cache_aligned(weight)
    config = configs.setdefault(choice.rows, tile_config(choice.rows))
    add_residual = residual is not None
    epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
    row_bytes = choice.block * FLOAT32_BITS // 8  # of the sums, and of the weights' int32 pairs
    taps = row_taps(conv)
    chunks = 1 if taps else x.shape[2] // AMX_K  # of AMX_K input channels
    p.emit(AMX_CONV, f"conv_{shape_name(conv)}{epilogue}_{label(choice)}",
           (x, weight, bias, residual if add_residual else out, out, config), conv, tiled=True,
           tiles=conv.out_channels // choice.block * conv.out_size * (conv.out_size // choice.rows), chunks=chunks,
           kernel_w=1 if taps else conv.kernel, tap_pairs=chunks * AMX_K // PAIR, x_width=x.shape[1],
           x_channels=x.shape[2], input_stride=conv.stride * x.nbytes // (x.shape[0] * x.shape[1]), amx_k=AMX_K,
           amx_n=AMX_N, weight_stride=row_bytes, sums_stride=row_bytes, non_negative=NON_NEGATIVE,
           groups=conv.out_channels // choice.block, positions=conv.out_size * (conv.out_size // choice.rows),
           column_tiles=conv.out_size // choice.rows, kernel=conv.kernel, stride=conv.stride,
           add_residual=add_residual, relu=relu, out_pad=out_border, rows=choice.rows, block=choice.block,
           sums=choice.rows * choice.block,
           pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
    return out


def plan(arch: ResNet50, pool: dict, choices: dict) -> Plan:
    """Stage 14's plan, every buffer a tile is loaded from on a cache line."""
    return bf16_plan(arch, pool, partial(conv_step, choices=choices, configs={}), place=cache_aligned)


def stand_in(conv: Conv, choice: Choice):
    """Stage 14's stand-in weights; the stem's on AMX as its row taps are: kernel x 1 taps of AMX_K values."""
    if not (on_tiles(choice) and row_taps(conv)):
        return vector_stand_in(conv, choice)
    size = conv.kernel * AMX_K // PAIR * conv.out_channels
    weight = bf16_bits(np.full(PAIR, 1 / (size // conv.out_channels * PAIR))).view(np.int32)
    return np.full(size, weight[0], np.int32), np.zeros(conv.out_channels, np.float32)


# Shown on the command line's first line, with the precision and how its sums are made.
SUMS = ("float32 sums by AMX's tdpbf16ps (amx-bf16), fc's by vdpbf16ps" if HAS_AMX
        else f"no AMX here: float32 sums by vdpbf16ps ({BF16_FEATURE})" if HAS_BF16
        else "no AVX512_BF16 on this CPU: plain float32 sums, slow")
PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan,
              tuning=Tuning(Choice, candidates, stand_in, stand_in_fc, header=f"bfloat16, {SUMS}; ",
                            example=lambda conv: candidates(conv, amx=True)[0]))
Model = partial(Compiled, PARTS)
