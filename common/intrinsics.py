"""The machine-level pieces of the fast stages' kernels, taught where each is introduced and imported from here after:

- stage 8 (tiled): `wide_vectors` (an LLVM function attribute), `stack_floats` (a stack array that LLVM keeps in
  registers) and `tile_vectorizer` (the SLP vectorizer instead of the loop vectorizer while a tile kernel compiles);
- stage 13 (int8): `stack_ints` and `dot_quads`, vpdpbusd's 64 multiply-adds of bytes, or its plain fallback;
- stage 14 (bfloat16): `to_bf16` / `from_bf16` and numpy's twin `bf16_bits`, and `dot_pairs`, vdpbf16ps's 32
  multiply-adds of bfloat16 pairs, or its plain fallback;
- stage 15 (AMX): the tile instructions (`load_tile`, `store_tile`, `zero_tile`, `tile_dot`, `load_tile_config`,
  `release_tiles`), the tiles' shapes (`tile_config`), `amx_permitted`, `cache_aligned` and `stack_lines`, a stack
  array on a cache line for tile stores.

Each stage's docstring and README explain them; tests/test_taught_once.py checks that the copy a stage teaches is
this one. bench.peak measures each instruction's peak with them.
"""

import contextlib
import ctypes

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.target import target_features, vector_registers

FLOAT32_BITS = 32
# The vector registers of the CPU numba compiles for (common.target): 512 bits x 32 with AVX-512, 256 x 16
# with AVX2, 128 x 32 with ARM's NEON.
VECTOR_BITS, VECTOR_REGISTERS = vector_registers()
LANES = VECTOR_BITS // FLOAT32_BITS  # float32 lanes in one vector register


# --- stage 8: the register tile's compile settings ---

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


def stack_array(element, align: int = 0):
    """An intrinsic that makes a scratch array of `element`s, of a constant size, on the stack (numba's np.empty is
    on the heap), starting on an `align`-byte boundary if align is given. LLVM knows that nothing else can point
    into a stack array, so once the loops over it are unrolled it keeps every element in a register: the tile of
    sums. Stage 8 writes out the float32 one."""

    @intrinsic
    def stack(typingctx, count):
        if not isinstance(count, types.IntegerLiteral):
            return None
        size = count.literal_value

        def codegen(context, builder, signature, args):
            array = cgutils.alloca_once(builder, context.get_value_type(element), size=size)
            if align:
                array.align = align
            return array

        return types.CPointer(element)(count), codegen

    return stack


stack_floats = stack_array(types.float32)
stack_ints = stack_array(types.int32)  # stage 13: the tile of int32 sums


@contextlib.contextmanager
def tile_vectorizer():
    """Compile with LLVM's SLP vectorizer instead of its loop vectorizer. The tile's two innermost
    loops (ROWS pixels, BLOCK channels) have constant trip counts, so LLVM unrolls them first, leaving
    ROWS x BLOCK scalar sums; the SLP vectorizer packs each LANES neighbouring ones into a vector register.
    numba runs only the loop vectorizer, which then vectorizes the input-channel loop instead, with
    gathers of weights 32 floats apart: 70x slower (measured). Both settings are read when numba
    compiles, so they are changed only while the conv kernels compile."""
    saved = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = 1, 0
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = saved


# --- stage 13: vpdpbusd ---

QUAD = 4  # bytes that vpdpbusd multiplies and adds in one lane: the input channels of one int32
INT8_MAX = 127  # a weight's codes run from -127 to 127
# LLVM's name of vpdpbusd for the vector width of the tile, if the CPU has it: AVX-512 VNNI, or AVX-VNNI (the 256-bit
# form on Intel's laptop CPUs since the 12th generation, which have no AVX-512).
VNNI = {512: ("avx512vnni", "llvm.x86.avx512.vpdpbusd.512"), 256: ("avxvnni", "llvm.x86.avx512.vpdpbusd.256")}
VNNI_FEATURE, VNNI_INTRINSIC = VNNI.get(VECTOR_BITS, (None, None))
HAS_VNNI = VNNI_FEATURE in target_features()


@intrinsic
def vnni_quads(typingctx, sums, at, quad, weight, index):
    """sums[at : at + LANES] += in each lane j, the 4 u8 codes of `quad` times the 4 s8 codes of weight[index + j],
    added up in int32: one vpdpbusd. `quad` (4 input channels of one pixel) is broadcast to every lane; the lanes
    are LANES output channels. sums is the stack tile (stack_ints); weight a flat int32 array."""
    def codegen(context, builder, signature, args):
        sums_ptr, at, quad, weight, index = args
        vector = ir.VectorType(ir.IntType(32), LANES)
        lane0 = ir.Constant(ir.IntType(32), 0)
        every_lane = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        broadcast = builder.shuffle_vector(builder.insert_element(ir.Constant(vector, ir.Undefined), quad, lane0),
                                           ir.Constant(vector, ir.Undefined), every_lane)
        weights = context.make_array(signature.args[3])(context, builder, weight).data
        weight_ptr = builder.bitcast(builder.gep(weights, [index]), vector.as_pointer())
        sums_at = builder.bitcast(builder.gep(sums_ptr, [at]), vector.as_pointer())
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                                  VNNI_INTRINSIC)
        total = builder.call(function, [builder.load(sums_at, align=4), broadcast,
                                        builder.load(weight_ptr, align=4)])
        builder.store(total, sums_at, align=4)
        return context.get_dummy_value()

    return types.none(sums, at, quad, weight, index), codegen


@numba.njit(inline="always")
def plain_quads(sums, at, quad, weight, index):
    """What vnni_quads computes, in plain integer code, for a CPU without VNNI: correct, not fast."""
    for lane in range(LANES):
        total = sums[at + lane]
        w = weight[index + lane]
        for byte in range(QUAD):
            code = (w >> (8 * byte)) & 0xFF
            total += ((quad >> (8 * byte)) & 0xFF) * (code - 256 if code > INT8_MAX else code)
        sums[at + lane] = total


dot_quads = vnni_quads if HAS_VNNI else plain_quads


# --- stage 14: bfloat16 ---

PAIR = 2  # bfloat16s that vdpbf16ps multiplies and adds in one lane: the input channels of one int32
BF16_SHIFT = 16  # a bfloat16 is a float32's top 16 bits
HALF_ULP = 0x7FFF  # rounding: add just under half of the last kept bit's value, plus that bit (ties to even)
# LLVM's name of vdpbf16ps, on 512-bit vectors, if the CPU has it. Its 256-bit form needs AVX-512 too (AVX512VL):
# a CPU whose widest vectors are 256 bits has no bfloat16 dot product.
BF16_FEATURE, BF16_INTRINSIC = "avx512bf16", "llvm.x86.avx512bf16.dpbf16ps.512"
HAS_BF16 = VECTOR_BITS == 512 and BF16_FEATURE in target_features()


class BFloat16(ir.Type):
    """LLVM's bfloat type, which llvmlite's IR builder does not have: the operand type of vdpbf16ps's intrinsic since
    LLVM 17 (before, <16 x i32>). An IR type only has to print its name: LLVM parses the module from its text."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, BFloat16)

    def __hash__(self):
        return hash(BFloat16)


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


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> their bfloat16 bits (uint16), rounded as to_bf16 rounds: numpy's twin of it."""
    bits = np.asarray(values, np.float32).view(np.uint32)
    return ((bits + HALF_ULP + ((bits >> BF16_SHIFT) & 1)) >> BF16_SHIFT).astype(np.uint16)


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
                                                  BF16_INTRINSIC)
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


# --- stage 15: AMX ---

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
stack_lines = stack_array(types.float32, TILE_ROW_BYTES)  # the sums AMX's tiles are stored to, on a cache line


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
