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

Everything else is stage 14's: bfloat16 weights and activations, float32 sums, the tuned tile of ROWS pixels, the
fused output loop, generated source, buffers and pool.
"""

import contextlib
import ctypes
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Bottleneck, Conv, resnet50
from common.codegen import load_module, write_modules
from common.paths import WEIGHTS_DIR
from common.target import target_features, vector_registers
from common.tuning import prepared_for, tuned
from common.weights import load_manifest, load_tensor

NUM_BUFFERS = 4  # a bottleneck needs its input, two intermediates and its output (or shortcut) at once
FLOAT32_BITS = 32
ROWS = 7  # stage 11's output pixels per tile: divides every output width of ResNet-50 (112, 56, 28, 14, 7)
ROW_CHOICES = (ROWS, 2 * ROWS)  # the tuning's: 14 divides the output widths of layers 1-3 and of the stem


def channel_vectors(registers: int) -> int:
    """Vectors of output channels per tile row: the most, a power of 2, for which ROWS x vectors sums, one step's
    weight vectors and its broadcast input fit the registers: 2 of 32 (14 + 2 + 1), 1 of 16 (AVX2: 7 + 1 + 1)."""
    vectors = 1
    while (ROWS + 1) * 2 * vectors + 1 <= registers:
        vectors *= 2
    return vectors


# The vector registers of the CPU numba compiles for (common.target): 512 bits x 32 with AVX-512, 256 x 16
# with AVX2, 128 x 32 with ARM's NEON. The tile is chosen for them, once, when the stage is imported.
VECTOR_BITS, VECTOR_REGISTERS = vector_registers()
LANES = VECTOR_BITS // FLOAT32_BITS  # float32 lanes in one vector register
BLOCK = channel_vectors(VECTOR_REGISTERS) * LANES  # stage 11's output channels per tile: 32, 8 or 8, dividing 64


def register_tiles(registers: int, lanes: int) -> list[tuple[int, int]]:
    """(rows, channels) of the tiles of stage 11's channel_vectors whose rows x vectors sums, one step's weight vectors
    and its broadcast input fit the registers: 7x32 and 14x32 (14 x 2 + 2 + 1 = 31) of 32 registers of 16 lanes
    (AVX-512), 7x8 and 14x8 of 16 of 8 (AVX2). Tiles of fewer channel vectors (7x16, 14x16, 28x16 on AVX-512) were
    never the fastest when measured (README); none of 48 channels: 48 divides no channel count of ResNet-50."""
    vectors = channel_vectors(registers)
    return [(rows, vectors * lanes) for rows in ROW_CHOICES if rows * vectors + vectors + 1 <= registers]


TILES = register_tiles(VECTOR_REGISTERS, LANES)
TILE_CHOICE = f"tiles {', '.join(f'{r}x{b}' for r, b in TILES)} tried, {VECTOR_BITS}-bit vectors"
PAIR = 2  # bfloat16s that vdpbf16ps multiplies and adds in one lane: the input channels of one int32
BF16_SHIFT = 16  # a bfloat16 is a float32's top 16 bits
HALF_ULP = 0x7FFF  # rounding: add just under half of the last kept bit's value, plus that bit (ties to even)
INT16_MIN = -(2**15)  # the max pool's start: the smallest bfloat16 bits, as int16
NON_NEGATIVE = 0x7FFFFFFF  # a mask that keeps every tile number as it is and clears the sign bit
# LLVM's name of vdpbf16ps, on 512-bit vectors, if the CPU has it. Its 256-bit form needs AVX-512 too (AVX512VL):
# a CPU whose widest vectors are 256 bits has no bfloat16 dot product.
BF16_FEATURE, DOT_INTRINSIC = "avx512bf16", "llvm.x86.avx512bf16.dpbf16ps.512"
HAS_BF16 = VECTOR_BITS == 512 and BF16_FEATURE in target_features()
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


class BFloat16(ir.Type):
    """LLVM's bfloat type, which llvmlite's IR builder does not have: the operand type of vdpbf16ps's intrinsic since
    LLVM 17 (before, <16 x i32>). An IR type only has to print its name: LLVM parses the module from its text."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, BFloat16)

    def __hash__(self):
        return hash(BFloat16)


class Choice(NamedTuple):
    """What the tuning picks for one layer shape, kept as a list of these two in the choice file."""

    rows: int  # output pixels per register tile
    block: int  # output channels per register tile


@intrinsic
def wide_vectors(typingctx):
    """Ask LLVM for vectors as wide as the registers (VECTOR_BITS) in the function that calls this. On
    Intel's AVX-512 CPUs LLVM's default tuning ("prefer-256-bit") emits 256-bit ymm code, and 256-bit FMAs
    run on two ports at 8 lanes where 512-bit FMAs run on two ports at 16 lanes: half the peak. numba has
    no option for a function attribute, so this intrinsic adds it to the LLVM function it is compiled into."""

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        # llvmlite's attribute set only admits a fixed list of keywords; these are key="value" attributes.
        set.add(attributes, f'"prefer-vector-width"="{VECTOR_BITS}"')
        set.add(attributes, f'"min-legal-vector-width"="{VECTOR_BITS}"')
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def stack_floats(typingctx, count):
    """A float32 scratch array of a constant size on the stack (numba's np.empty is on the heap).
    LLVM knows that nothing else can point into a stack array, so once the loops over it are unrolled
    it keeps every element in a register: this is the tile of sums (vdpbf16ps'; AMX's tiles are stored into it)."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    size = count.literal_value

    def codegen(context, builder, signature, args):
        stack = cgutils.alloca_once(builder, context.get_value_type(types.float32), size=size)
        stack.align = TILE_ROW_BYTES  # on a cache line, for store_tile
        return stack

    return types.CPointer(types.float32)(count), codegen


@intrinsic
def to_bf16(typingctx, value):
    """float32 -> its bfloat16 as uint16 bits, rounded to the nearest, ties to even: add 0x7FFF and the lowest bit
    kept, then drop the low 16 bits. In 32-bit integer code, which LLVM vectorizes as it does floats (numba's own
    integer arithmetic would widen it to 64 bits). Not for NaN, which no layer makes."""
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        lowest_kept = builder.and_(builder.lshr(bits, ir.Constant(i32, BF16_SHIFT)), ir.Constant(i32, 1))
        rounded = builder.add(bits, builder.add(lowest_kept, ir.Constant(i32, HALF_ULP)))
        return builder.trunc(builder.lshr(rounded, ir.Constant(i32, BF16_SHIFT)), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def from_bf16(typingctx, bits):
    """The bfloat16 in the low 16 bits of an integer (a uint16, or an int32 pair: its low half) -> the float32 it
    is, exactly: those bits moved to the top of a float32's."""
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        width = signature.args[0].bitwidth
        wide = builder.zext(args[0], i32) if width < FLOAT32_BITS else builder.trunc(args[0], i32) \
            if width > FLOAT32_BITS else args[0]
        return builder.bitcast(builder.shl(wide, ir.Constant(i32, BF16_SHIFT)), ir.FloatType())

    if not isinstance(bits, types.Integer):
        return None
    return types.float32(bits), codegen


@intrinsic
def bf16_pairs(typingctx, sums, at, pair, weight, index):
    """sums[at : at + LANES] += in each lane j, the 2 bfloat16s of `pair` times the 2 of weight[index + j], added up
    in float32: one vdpbf16ps. `pair` (2 input channels of one pixel) is broadcast to every lane; the lanes are
    LANES output channels. sums is the stack tile (stack_floats); weight a flat int32 array of pairs."""
    def codegen(context, builder, signature, args):
        sums_ptr, at, pair, weight, index = args
        vector = ir.VectorType(ir.IntType(32), LANES)
        floats = ir.VectorType(ir.FloatType(), LANES)
        bf16s = ir.VectorType(BFloat16(), PAIR * LANES)
        lane0 = ir.Constant(ir.IntType(32), 0)
        every_lane = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        broadcast = builder.shuffle_vector(builder.insert_element(ir.Constant(vector, ir.Undefined), pair, lane0),
                                           ir.Constant(vector, ir.Undefined), every_lane)
        weights = context.make_array(signature.args[3])(context, builder, weight).data
        weight_ptr = builder.bitcast(builder.gep(weights, [index]), vector.as_pointer())
        sums_at = builder.bitcast(builder.gep(sums_ptr, [at]), floats.as_pointer())
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(floats, [floats, bf16s, bf16s]),
                                                  DOT_INTRINSIC)
        total = builder.call(function, [builder.load(sums_at, align=4), builder.bitcast(broadcast, bf16s),
                                        builder.bitcast(builder.load(weight_ptr, align=4), bf16s)])
        builder.store(total, sums_at, align=4)
        return context.get_dummy_value()

    return types.none(sums, at, pair, weight, index), codegen


@numba.njit(inline="always")
def plain_pairs(sums, at, pair, weight, index):
    """What bf16_pairs computes, in plain float32 code, for a CPU without AVX512_BF16: correct, not fast. The
    instruction adds a lane's 2 products to the sum one at a time, this code adds them together first: a sum's last
    bit may differ."""
    low, high = from_bf16(pair), from_bf16(pair >> BF16_SHIFT)
    for lane in range(LANES):
        w = weight[index + lane]
        sums[at + lane] += low * from_bf16(w) + high * from_bf16(w >> BF16_SHIFT)


dot_pairs = bf16_pairs if HAS_BF16 else plain_pairs


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


@contextlib.contextmanager
def tile_vectorizer():
    """Compile with LLVM's SLP vectorizer instead of its loop vectorizer. The tile's two innermost
    loops (ROWS pixels, BLOCK channels) have constant trip counts, so LLVM unrolls them first, leaving
    ROWS x BLOCK scalar sums; the SLP vectorizer packs each LANES neighbouring ones into a vector register.
    numba runs only the loop vectorizer, which then vectorizes the input-channel loop instead, with
    gathers of weights 32 floats apart: 70x slower (measured). Both settings are read when numba
    compiles, so they are changed only while the conv kernels compile, in Model()."""
    saved = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = 1, 0
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = saved

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from {module} import (dot_pairs, from_bf16, load_tile, load_tile_config, release_tiles, stack_floats, store_tile,
                    tile_dot, to_bf16, wide_vectors, zero_tile)

HWC = "float32[:, :, ::1]"
BF16 = "uint16[:, :, ::1]"
VALUES = "uint16[::1]"
'''

# Where a tile of output is, from its number: the same in both conv templates.
TILE_POSITION = '''\
        # A negative index counts from the end in numba (a[-1]), tested at every access unless LLVM can prove the
        # index is not negative; only then does it see a row's bytes as neighbours and load and store them as
        # vectors. A tile number is never negative, and clearing its sign bit proves it (NON_NEGATIVE).
        number = tile & {non_negative}
        if {pixels_first}:
            group, position = number % {groups}, number // {groups}
        else:
            group, position = number // {positions}, number % {positions}
        ho = position // {column_tiles}
        wo0 = (position % {column_tiles}) * {rows}
'''

# From the sums to the stored bfloat16s: the same in both conv templates.
OUTPUT_LOOP = '''\
        acc = numba.carray(sums, ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] += bias[group * {block} + c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if {add_residual}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] += from_bf16(residual[ho, wo0 + r, group * {block} + c])
        if {relu}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range({rows}):
            for c in range({block}):
                out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = to_bf16(acc[r, c])
'''

CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out):
    """x: HWC bfloat16 bits, border {padding} of zeros; weight: bfloat16 int32 pairs, [group][kh][kw][ci / 2][block]
    flattened; bias: float32; out: HWC bfloat16 bits, border {out_pad} left alone."""
    wide_vectors()
    pairs = x.view(np.int32)  # [h][w][ci / 2]: the bfloat16s of 2 neighbouring channels in one int32
    # prange gives each thread one contiguous range of tile numbers. Numbered group-major, a thread's
    # tiles share one group's weights; numbered pixel-major, a thread keeps to its part of the image,
    # the part it wrote in the layer before, still in its own core's L2 cache.
    for tile in prange({groups} * {positions}):
        wide_vectors()
''' + TILE_POSITION + '''        sums = stack_floats({sums})  # [rows][block]
        for i in range({sums}):
            sums[i] = 0.0
        for kh in range({kernel}):
            for kw in range({kernel}):
                for p in range({pairs}):
                    at = (((group * {kernel} + kh) * {kernel} + kw) * {pairs} + p) * {block}
                    for r in range({rows}):
                        pair = pairs[ho * {stride} + kh, (wo0 + r) * {stride} + kw, p]
                        for v in range(0, {block}, {lanes}):
                            dot_pairs(sums, r * {block} + v, pair, weight, at + v)
''' + OUTPUT_LOOP

AMX_CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out, config):
    """CONV's arguments and layouts, and config: tile_config's 64 bytes. x and weight start on a cache line, the
    weight's blocks are AMX_BLOCK channels."""
    wide_vectors()
    # One part per thread of numba's pool, each a contiguous range of tile numbers: a thread loads its tiles' shapes
    # once a part (with fewer threads at work, one runs several parts).
    for part in prange({parts}):
        wide_vectors()
        load_tile_config(config)
        sums = stack_floats({sums})  # [rows][block]: the 4 sum tiles side by side, stored from the tiles
        for tile in range(part * {tiles} // {parts}, (part + 1) * {tiles} // {parts}):
''' + textwrap.indent(TILE_POSITION, '    ') + '''            zero_tile(0)
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
''' + textwrap.indent(OUTPUT_LOOP, '    ') + '''        release_tiles()
'''

MAX_POOL = '''

@njit(f"void({{BF16}}, {{BF16}})", fastmath=True, cache=True)
def {name}(x, out):
    """On the bits as int16: a bfloat16 that is not negative orders as its bits do, and a ReLU's -0.0 (0x8000) is
    the smallest int16, where it would be the largest uint16."""
    bits, maxima = x.view(np.int16), out.view(np.int16)
    maxima[:] = {int16_min}
    for ho in range({out_size}):
        for wo in range({out_size}):
            for kh in range({kernel}):
                hi = ho * {stride} - {padding} + kh
                if hi < 0 or hi >= {in_size}:
                    continue
                for kw in range({kernel}):
                    wi = wo * {stride} - {padding} + kw
                    if wi < 0 or wi >= {in_size}:
                        continue
                    for c in range({channels}):
                        maxima[ho, wo, c] = max(maxima[ho, wo, c], bits[hi, wi, c])
'''

GLOBAL_AVG_POOL = '''

@njit(f"void({{BF16}}, {{VALUES}})", fastmath=True, cache=True)
def {name}(x, out):
    """The mean of x per channel, summed in float32, rounded to bfloat16: the features."""
    for c in range({channels}):
        total = np.float32(0.0)
        for h in range({size}):
            for w in range({size}):
                total += from_bf16(x[h, w, c])
        out[c] = to_bf16(total * np.float32(1 / {positions}))
'''

INPUT_BF16 = '''

@njit(f"void({{HWC}}, {{BF16}})", fastmath=True, cache=True)
def {name}(image, out):
    """image: HWC float32 -> its bfloat16 bits inside out's border of {padding} zeros: HWC uint16."""
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[{padding} + h, {padding} + w, c] = to_bf16(image[h, w, c])
'''

FULLY_CONNECTED = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, out):
    """x: the features' bfloat16 bits; weight: bfloat16 int32 pairs, [group][in / 2][LANES] flattened, LANES outputs
    a group; out: float32 logits, sums + bias. The fc layer is a 1x1 conv of one pixel."""
    wide_vectors()
    pairs = x.view(np.int32)
    for group in prange({groups}):
        wide_vectors()
        sums = stack_floats({lanes})
        for i in range({lanes}):
            sums[i] = 0.0
        for p in range({pairs}):
            dot_pairs(sums, 0, pairs[p], weight, (group * {pairs} + p) * {lanes})
        for i in range({lanes}):
            out[group * {lanes} + i] = sums[i] + bias[group * {lanes} + i]
'''

def shape_name(conv: Conv) -> str:
    return f"{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}_k{conv.kernel}s{conv.stride}"


def row_taps(conv: Conv) -> bool:
    """Is the conv the stem, whose few input channels (3, in 4) fill a tile row only with a row of kernel taps? An
    input tile row is then 8 neighbouring pixels of the photo's HWC buffer as it is, 7 taps of a kernel row and one
    more (zero weights), which must still be inside the buffer for the last output pixel."""
    taps = AMX_K // (pairs(conv.in_channels) * PAIR)
    return (conv.in_channels % AMX_K != 0 and conv.kernel <= taps
            and (conv.out_size - 1) * conv.stride + taps <= conv.in_size + 2 * conv.padding)


def on_amx(conv: Conv) -> bool:
    """Does the conv run on AMX tiles: on a CPU that has them, if its input channels fill whole input tile rows, or
    a row of its taps does?"""
    return HAS_AMX and (conv.in_channels % AMX_K == 0 or row_taps(conv))


def candidates(conv: Conv) -> list[Choice]:
    """The tiles the tuning times for a conv's shape, stage 11's first: those whose rows split a row of output
    pixels. The tile order stays stage 11's: tuned too, it never beat its choice (stage 12's README). On AMX, sum
    tiles of those rows and AMX_BLOCK channels."""
    tiles = [(rows, AMX_BLOCK) for rows, _ in TILES] if on_amx(conv) else TILES
    return [Choice(rows, block) for rows, block in tiles
            if conv.out_size % rows == 0 and conv.out_channels % block == 0]


def label(choice: Choice) -> str:
    return f"{choice.rows}x{choice.block}"


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


def pairs(channels: int) -> int:
    """int32 pairs that hold `channels` bfloat16s: the stem's 3 input channels take two, the 4th a zero weight."""
    return -(-channels // PAIR)


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> their bfloat16 bits (uint16), rounded as to_bf16 rounds: numpy's twin of it."""
    bits = np.asarray(values, np.float32).view(np.uint32)
    return ((bits + HALF_ULP + ((bits >> BF16_SHIFT) & 1)) >> BF16_SHIFT).astype(np.uint16)


def fold(conv: Conv, tensors, eps, choice: Choice):
    """OIHW conv weight and its batch norm -> (weight pairs, bias (out,)): the batch norm's scale folded in, in
    float64, then each weight rounded to bfloat16, packed as the choice's conv kernel reads them: [group][kh][kw]
    [ci / 2][block][2] bfloat16s, as one flat int32 array."""
    weight = tensors(f"{conv.name}.weight").astype(np.float64)
    gamma, beta, mean, var = (tensors(f"{conv.bn}.{part}").astype(np.float64)
                              for part in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + eps)
    folded = weight * scale[:, None, None, None]  # OIHW
    if on_amx(conv) and row_taps(conv):  # a conv of kernel x 1 taps over AMX_K values: [kw][ci] of 8 x 4
        taps = np.zeros((conv.out_channels, AMX_K // PAIR // pairs(conv.in_channels), pairs(conv.in_channels) * PAIR,
                         conv.kernel))  # [out][kw][ci][kh]
        taps[:, : conv.kernel, : conv.in_channels] = folded.transpose(0, 3, 1, 2)
        folded = taps.reshape(conv.out_channels, AMX_K, conv.kernel, 1)
    out, channels, kh, kw = folded.shape
    padded = np.zeros((out, pairs(channels) * PAIR, kh, kw), np.uint16)
    padded[:, :channels] = bf16_bits(folded)
    groups, block = out // choice.block, choice.block
    packed = padded.reshape(groups, block, pairs(channels), PAIR, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    return np.ascontiguousarray(packed).view(np.int32).reshape(-1), (beta - mean * scale).astype(np.float32)


def load_pool(manifest, weights_dir, arch, choices):
    """Every conv as (weight pairs, bias) by conv name, packed for its shape's choice, and fc's the same way."""
    def tensors(name):
        return load_tensor(name, manifest, weights_dir)

    pool = {conv.name: fold(conv, tensors, manifest["bn_eps"], choices[shape_name(conv)]) for conv in arch.convs}
    pool["fc"] = fold_fc(tensors("fc.weight"), tensors("fc.bias"))
    return pool


def fold_fc(weight, bias):
    """fc's (out, in) weight and bias -> (pairs, bias) as conv's fold makes them, the outputs in groups of LANES
    ([group][in / 2][LANES][2] bfloat16s), padded with zero rows to a whole group (1000 -> 1008 with 16 lanes)."""
    out_features = -(-weight.shape[0] // LANES) * LANES
    values = np.zeros((out_features, weight.shape[1]), np.uint16)
    values[: weight.shape[0]] = bf16_bits(weight)
    packed = values.reshape(out_features // LANES, LANES, -1, PAIR).transpose(0, 2, 1, 3)
    padded_bias = np.zeros(out_features, np.float32)
    padded_bias[: bias.size] = bias
    return np.ascontiguousarray(packed).view(np.int32).reshape(-1), padded_bias


class Model:
    """ResNet-50 built from common.architecture; weights folded and packed and buffers allocated when it
    is built, the forward pass generated as source, one specialized kernel per distinct layer shape."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        arch = self.arch
        largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
        self.buffers = [cache_aligned(np.empty(largest, np.uint16)) for _ in range(NUM_BUFFERS)]  # flat: HWC
        self.bordered = {}  # HWC shape -> the buffer of that shape with a border of zeros, written once
        self.tile_configs = {}  # rows -> tile_config(rows), one array per shape of sum tile
        self.image = np.empty((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32)  # HWC
        stem = arch.stem
        self.input = cache_aligned(np.zeros((stem.in_size + 2 * stem.padding, stem.in_size + 2 * stem.padding,
                                             pairs(stem.in_channels) * PAIR), np.uint16))  # HWC, a border of zeros
        self.features = np.empty(arch.fc.in_features, np.uint16)
        self.logits = np.empty(-(-arch.fc.out_features // LANES) * LANES, np.float32)  # whole groups of LANES
        start = time.perf_counter()
        choices, tuning = self.tune()  # its trial forward passes use the buffers above, as the real one does
        self.choices = {shape: Choice(*choice) for shape, choice in choices.items()}
        self.timings = {"tune": time.perf_counter() - start}  # set-up costs in seconds
        start = time.perf_counter()
        # Computed once, then mapped from the cache (common/prepared.py), again when the stage is tuned again.
        self.pool = prepared_for(choices, lambda: load_pool(self.manifest, weights_dir, self.arch, self.choices),
                                 self.manifest, weights_dir, Path(__file__))
        self.timings["load weights"] = time.perf_counter() - start
        # Shown on the command line's first line, with the precision and how its sums are made.
        sums = ("float32 sums by AMX's tdpbf16ps (amx-bf16), fc's by vdpbf16ps" if HAS_AMX
                else f"no AMX here: float32 sums by vdpbf16ps ({BF16_FEATURE})" if HAS_BF16
                else "no AVX512_BF16 on this CPU: plain float32 sums, slow")
        self.choice = f"bfloat16, {sums}; {tuning}, {VECTOR_BITS}-bit vectors"
        self.peak = "amx-bf16" if HAS_AMX else None  # bench/report.py: whose peak a share of it is of
        self.kernel_sources = {}  # kernel name -> its source, one per distinct layer shape
        self.lines = []  # the forward pass, one call per step
        self.arrays = []  # what the calls pass: a[i] in the generated source is self.arrays[i]
        self.calls = []  # the same steps as (kernel name, arrays), for the tuning to run them
        self.tile_signatures = {}  # tile kernel name -> its argument types, to compile it with tile_vectorizer
        start = time.perf_counter()
        self.plan()
        self.source_path = self.write_source()
        self.timings["codegen"] = time.perf_counter() - start
        # Compiled (the tile kernels with tile_vectorizer's settings), or loaded from the disk cache.
        self.kernels, how, seconds = load_module(self.source_path, self.tile_signatures, tile_vectorizer)
        self.timings[how] = seconds
        self.arrays = tuple(self.arrays)

    def view(self, buffer, size, channels):
        """An HWC view of the start of a flat buffer."""
        return buffer[: size * size * channels].reshape(size, size, channels)

    def emit(self, template, name, arrays, **constants):
        """One step: a call of the kernel `name`, generated from `template` with `constants` filled in."""
        self.kernel_sources.setdefault(name, template.format(name=name, **constants))
        self.calls.append((name, tuple(arrays)))
        indices = []
        for array in arrays:
            indices.append(len(self.arrays))
            self.arrays.append(array)
        self.lines.append(f"    {name}({', '.join(f'a[{i}]' for i in indices)})")

    def bordered_buffer(self, size, channels, border):
        """The HWC buffer for size x size x channels with a zero border around it, one per shape: the
        kernels write only its inside, so the border stays 0 and serves as the padding of the conv reading it."""
        shape = (size + 2 * border, size + 2 * border, channels)
        if shape not in self.bordered:
            self.bordered[shape] = cache_aligned(np.zeros(shape, np.uint16))
        return self.bordered[shape]

    def conv(self, x, conv: Conv, out, residual, relu: bool, out_border=0):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu). x has a
        border of the conv's padding, out gets one of out_border. Without a residual, `out` stands in for the
        argument the kernel does not read."""
        weight, bias = self.pool[conv.name]
        choice = self.choices[shape_name(conv)]
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = f"conv_{shape_name(conv)}{epilogue}_{label(choice)}"
        amx = on_amx(conv)
        if amx:  # the tiles' shapes, and their loads from cache lines
            weight = cache_aligned(weight)
            config = self.tile_configs.setdefault(choice.rows, tile_config(choice.rows))
        arrays = (x, weight, bias, residual if add_residual else out, out) + ((config,) if amx else ())
        row_bytes = choice.block * FLOAT32_BITS // 8  # of the sums, and of the weights' int32 pairs
        taps = amx and row_taps(conv)
        chunks = 1 if taps else x.shape[2] // AMX_K  # of AMX_K input channels
        self.emit(AMX_CONV if amx else CONV, name, arrays, tiles=conv.out_channels // choice.block * conv.out_size
                  * (conv.out_size // choice.rows), chunks=chunks, kernel_w=1 if taps else conv.kernel,
                  tap_pairs=chunks * AMX_K // PAIR, x_width=x.shape[1], x_channels=x.shape[2],
                  input_stride=conv.stride * x.nbytes // (x.shape[0] * x.shape[1]), amx_k=AMX_K, amx_n=AMX_N,
                  weight_stride=row_bytes, sums_stride=row_bytes, parts=numba.config.NUMBA_NUM_THREADS,
                  pairs=x.shape[2] // PAIR, lanes=LANES, non_negative=NON_NEGATIVE,
                  groups=conv.out_channels // choice.block, positions=conv.out_size * (conv.out_size // choice.rows),
                  column_tiles=conv.out_size // choice.rows, kernel=conv.kernel, stride=conv.stride,
                  padding=conv.padding, add_residual=add_residual, relu=relu, out_pad=out_border, rows=choice.rows,
                  block=choice.block, sums=choice.rows * choice.block,
                  pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
        self.tile_signatures[name] = tuple(numba.typeof(array) for array in arrays)
        return out

    def bottleneck(self, x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        self.lines.append(f"    # {block.name}")
        c1, c2, c3, down = block.conv1, block.conv2, block.conv3, block.downsample
        mid = self.bordered_buffer(c1.out_size, c1.out_channels, c2.padding)  # conv2 reads it with its padding
        self.conv(x, c1, mid, None, relu=True, out_border=c2.padding)
        out = self.conv(mid, c2, self.view(b2, c2.out_size, c2.out_channels), None, relu=True)
        # conv3 adds the shortcut as it stores its sums, so the shortcut comes first.
        shortcut = x
        if down:
            shortcut = self.conv(x, down, self.view(b1, down.out_size, down.out_channels), None, relu=False)
        return self.conv(out, c3, self.view(b3, c3.out_size, c3.out_channels), shortcut, relu=True)

    def plan(self):
        arch, buffers = self.arch, self.buffers
        stem = arch.stem
        self.emit(INPUT_BF16, f"input_bf16_{stem.in_size}x{stem.in_channels}", (self.image, self.input),
                  size=stem.in_size, channels=stem.in_channels, padding=stem.padding)
        x = self.conv(self.input, stem, self.view(buffers[0], stem.out_size, stem.out_channels), None, relu=True)
        pool = arch.pool
        pooled = self.view(buffers[1], pool.out_size, pool.channels)
        self.emit(MAX_POOL, f"max_pool_{pool.in_size}x{pool.channels}", (x, pooled), in_size=pool.in_size,
                  out_size=pool.out_size, channels=pool.channels, kernel=pool.kernel, stride=pool.stride,
                  padding=pool.padding, int16_min=INT16_MIN)
        x, current = pooled, 1
        for block in arch.blocks:
            others = [i for i in range(NUM_BUFFERS) if i != current]
            x = self.bottleneck(x, block, [buffers[i] for i in others])
            current = others[2]  # the block's output is in the third free buffer
        last = arch.blocks[-1].conv3
        self.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, self.features),
                  size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
        fc = arch.fc
        weight, bias = self.pool["fc"]
        self.emit(FULLY_CONNECTED, f"fully_connected_{fc.in_features}_{fc.out_features}",
                  (self.features, weight, bias, self.logits),
                  groups=self.logits.size // LANES, pairs=fc.in_features // PAIR, lanes=LANES)

    def write_source(self, purpose="resnet50") -> Path:
        """The generated forward module's path in the kernel cache (common.codegen.write_modules). Its name and each
        kernel module's hold a digest of their source, of this generator and of the machine, so that numba's cached
        machine code is only reused for the same three."""
        variant = self.manifest["variant"]
        name = f"{Path(__file__).parent.name}_{purpose}_{variant.replace('.', '_')}"
        return write_modules(name, f"ResNet-50 forward pass for {variant} weights", PRELUDE.format(module=__name__),
                             self.kernel_sources, self.lines, generator=Path(__file__))

    def tune(self):
        """(choice by layer shape, what the header line says): from the choice file, or tuned now: the forward pass
        planned with each round's candidates (network), compiled and timed call by call (common/tuning.py)."""
        self.kernel_sources, self.tile_signatures, self.lines, self.arrays, self.calls = {}, {}, [], [], []
        self.stand_ins = {}  # (conv name, packed shape) -> stand-in (weight, bias), shared by the rounds
        first = {}
        for conv in self.arch.convs:
            first.setdefault(shape_name(conv), conv)
        options = {shape: [list(c) for c in candidates(conv)] for shape, conv in first.items()}
        result = tuned(Path(__file__), options, self.network, self.compile_trials, lambda c: label(Choice(*c)))
        del self.stand_ins  # 100 MB or more, not needed once the choices are made
        return result

    def network(self, choices: dict[str, list]):
        """The forward pass planned with `choices`, on stand-in weights: its calls."""
        self.choices = {shape: Choice(*choice) for shape, choice in choices.items()}
        self.pool = {conv.name: self.stand_in(conv, self.choices[shape_name(conv)]) for conv in self.arch.convs}
        fc = self.arch.fc
        self.pool["fc"] = self.stand_ins.setdefault(fc.name, fold_fc(np.ones((fc.out_features, fc.in_features)),
                                                                    np.ones(fc.out_features)))
        self.calls = []
        self.plan()
        return self.calls

    def stand_in(self, conv: Conv, choice: Choice):
        """(weight pairs, bias) as fold packs them for `choice`, each conv its own (as its real weights, they come
        from memory, not from the cache), written (pages never written all read one page of zeros): every weight
        1 / the sums' length, so that the values keep their size through the network."""
        k = conv.kernel
        # The stem's row taps are kernel x 1 taps of AMX_K values, not kernel x kernel of its channels.
        taps = k * AMX_K // PAIR if on_amx(conv) and row_taps(conv) else k * k * pairs(conv.in_channels)
        size = taps * conv.out_channels
        if (conv.name, choice) not in self.stand_ins:
            weight = bf16_bits(np.full(PAIR, 1 / (size // conv.out_channels * PAIR))).view(np.int32)
            self.stand_ins[conv.name, choice] = (np.full(size, weight[0], np.int32),
                                                 np.zeros(conv.out_channels, np.float32))
        return self.stand_ins[conv.name, choice]

    def compile_trials(self):
        """Every candidate's kernels, compiled (in one process per core) or loaded from the kernel cache."""
        return load_module(self.write_source("tuning"), self.tile_signatures, tile_vectorizer)[0]

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        self.image[:] = image  # the first kernel rounds it to bfloat16
        self.kernels.forward(self.arrays)
        return self.logits[: self.arch.fc.out_features]
