"""Stage 14, bfloat16: weights and activations rounded to bfloat16, float32 sums by vdpbf16ps.

A bfloat16 is the top half of a float32: its sign, its 8 exponent bits and 7 of its 23 mantissa bits. A float32
becomes one by rounding its bit pattern to a multiple of 2^16, to the nearest, ties to the even one (`to_bf16`),
and becomes a float32 again with 16 zero bits put under it (`from_bf16`). It keeps float32's range and 8
significant bits of its precision, a relative error of at most 2^-8 (0.4%) per value: no scales, no zero points, no
calibration, which int8 needs (stage 13), and a negative value is no special case. A value takes 2 bytes.

`vdpbf16ps` (AVX512_BF16) multiplies two vectors of 32 bfloat16s pairwise and adds each lane's 2 products to the
lane's float32 sum: 32 multiply-adds per instruction, where a float32 FMA does 16 and vpdpbusd 64. It takes its
operands as pairs in int32 lanes, as vpdpbusd takes quads: the weights are packed [group][kh][kw][ci / 2][block][2],
and 2 neighbouring channels of an HWC activation are one int32. `dot_pairs` gives the instruction through LLVM's
intrinsic; without AVX512_BF16 a plain float32 loop does the same (up to a sum's last bit), correct but slow. Every
conv and the fc layer read bfloat16 weights and activations; what stays float32 is what is never stored: the sums,
the biases and the output loop's arithmetic, which rounds once, as it stores. Whether it is faster than float32
depends on how often the CPU issues vdpbf16ps: on the Intel Xeon of the README, once every 2 cycles, where it issues
2 FMAs a cycle (bench/peak.py), so its peak is half the float32 one and only the halved bytes are gained.

Everything else is stage 13's: the tuned register tile of direct convs (float32 sums again), the tile-threaded
conv kernel, the input channels packed into int32 lanes, folded batch norm, fused output loop, generated source,
buffers and pool. Its codes, scales and calibration go.
"""

import contextlib
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
    it keeps every element in a register: this is the tile of sums."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    size = count.literal_value

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=size)

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

from {module} import dot_pairs, from_bf16, stack_floats, to_bf16, wide_vectors

HWC = "float32[:, :, ::1]"
BF16 = "uint16[:, :, ::1]"
VALUES = "uint16[::1]"
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
        sums = stack_floats({sums})  # [rows][block]
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


def candidates(conv: Conv) -> list[Choice]:
    """The tiles the tuning times for a conv's shape, stage 11's first: those whose rows split a row of output
    pixels. The tile order stays stage 11's: tuned too, it never beat its choice (stage 12's README)."""
    return [Choice(rows, block) for rows, block in TILES
            if conv.out_size % rows == 0 and conv.out_channels % block == 0]


def label(choice: Choice) -> str:
    return f"{choice.rows}x{choice.block}"


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
    padded = np.zeros((conv.out_channels, pairs(conv.in_channels) * PAIR, conv.kernel, conv.kernel), np.uint16)
    padded[:, : conv.in_channels] = bf16_bits(folded)
    groups, block, k = conv.out_channels // choice.block, choice.block, conv.kernel
    packed = padded.reshape(groups, block, pairs(conv.in_channels), PAIR, k, k).transpose(0, 4, 5, 2, 1, 3)
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
        self.buffers = [np.empty(largest, np.uint16) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC bfloat16s
        self.bordered = {}  # HWC shape -> the buffer of that shape with a border of zeros, written once
        self.image = np.empty((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32)  # HWC
        stem = arch.stem
        self.input = np.zeros((stem.in_size + 2 * stem.padding, stem.in_size + 2 * stem.padding,
                               pairs(stem.in_channels) * PAIR), np.uint16)  # HWC bfloat16s, a border of zeros
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
        sums = (f"float32 sums by vdpbf16ps ({BF16_FEATURE})" if HAS_BF16
                else "no AVX512_BF16 on this CPU: plain float32 sums, slow")
        self.choice = f"bfloat16, {sums}; {tuning}, {VECTOR_BITS}-bit vectors"
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
        return self.bordered.setdefault(shape, np.zeros(shape, np.uint16))

    def conv(self, x, conv: Conv, out, residual, relu: bool, out_border=0):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu). x has a
        border of the conv's padding, out gets one of out_border. Without a residual, `out` stands in for the
        argument the kernel does not read."""
        weight, bias = self.pool[conv.name]
        choice = self.choices[shape_name(conv)]
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = f"conv_{shape_name(conv)}{epilogue}_{label(choice)}"
        arrays = (x, weight, bias, residual if add_residual else out, out)
        self.emit(CONV, name, arrays, pairs=x.shape[2] // PAIR, lanes=LANES, non_negative=NON_NEGATIVE,
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
        size = k * k * pairs(conv.in_channels) * conv.out_channels
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
