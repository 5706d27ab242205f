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

Everything else is stage 13's, imported: the tuned register tile of direct convs (float32 sums again; common/tiles.py,
common/model.py), the tile-threaded conv kernel, the input channels packed into int32 lanes, folded batch norm,
fused output loop, generated source, buffers and pool. Its codes, scales and calibration go. Stage 15 imports this
stage's bfloat16 pieces from common/intrinsics.py and its kernels, packing and plan from common/bf16.py.
"""

from functools import partial
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Conv, ResNet50
from common.intrinsics import LANES, VECTOR_BITS
from common.kernels import NUM_BUFFERS
from common.model import Compiled, Parts, Tuning
from common.planner import Plan, Planner, bottleneck, rotate
from common.target import target_features
from common.tiles import TILES, Choice, label, shape_name
from common.weights import fold_batch_norm, folded_pool

FLOAT32_BITS = 32
PAIR = 2  # bfloat16s that vdpbf16ps multiplies and adds in one lane: the input channels of one int32
BF16_SHIFT = 16  # a bfloat16 is a float32's top 16 bits
HALF_ULP = 0x7FFF  # rounding: add just under half of the last kept bit's value, plus that bit (ties to even)
INT16_MIN = -(2**15)  # the max pool's start: the smallest bfloat16 bits, as int16
NON_NEGATIVE = 0x7FFFFFFF  # a mask that keeps every tile number as it is and clears the sign bit
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


dot_pairs = bf16_pairs if HAS_BF16 else plain_pairs

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import stack_floats, wide_vectors
from stages.stage14_bf16.model import dot_pairs, from_bf16, to_bf16

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


def candidates(conv: Conv, tiles=TILES) -> list[Choice]:
    """The tiles (of this CPU's register_tiles, by default) the tuning times for a conv's shape, stage 11's first:
    those whose rows split a row of output pixels. The tile order stays stage 11's: tuned too, it never beat its
    choice (stage 12's README)."""
    return [Choice(rows, block) for rows, block in tiles
            if conv.out_size % rows == 0 and conv.out_channels % block == 0]


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
    folded, bias = fold_batch_norm(conv, tensors, eps)  # OIHW
    padded = np.zeros((conv.out_channels, pairs(conv.in_channels) * PAIR, conv.kernel, conv.kernel), np.uint16)
    padded[:, : conv.in_channels] = bf16_bits(folded)
    groups, block, k = conv.out_channels // choice.block, choice.block, conv.kernel
    packed = padded.reshape(groups, block, pairs(conv.in_channels), PAIR, k, k).transpose(0, 4, 5, 2, 1, 3)
    return np.ascontiguousarray(packed).view(np.int32).reshape(-1), bias.astype(np.float32)


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


def load_pool(manifest, weights_dir, choices):
    """Every conv as (weight pairs, bias) by conv name, packed for its shape's choice, and fc's the same way."""
    return folded_pool(manifest, weights_dir,
                       lambda conv, tensors, eps: fold(conv, tensors, eps, choices[shape_name(conv)]), fold_fc)


def plan(arch: ResNet50, pool: dict, choices: dict) -> Plan:
    """Stage 13's plan in bfloat16: the photo rounded first, every activation stored as bfloat16 bits."""
    p = Planner(zeros=lambda shape: np.zeros(shape, np.uint16))
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [np.empty(largest, np.uint16) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC bfloat16s
    stem = arch.stem
    image = np.empty((stem.in_size, stem.in_size, stem.in_channels), np.float32)  # HWC
    bf16s = p.zeros((stem.in_size + 2 * stem.padding, stem.in_size + 2 * stem.padding,
                     pairs(stem.in_channels) * PAIR))  # HWC bfloat16s, a border of zeros
    features = np.empty(arch.fc.in_features, np.uint16)
    logits = np.empty(-(-arch.fc.out_features // LANES) * LANES, np.float32)  # whole groups of LANES

    def conv_step(x, conv: Conv, out, residual, relu: bool, out_border=0):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu). x has a
        border of the conv's padding, out gets one of out_border. Without a residual, `out` stands in for the
        argument the kernel does not read."""
        weight, bias = pool[conv.name]
        choice = choices[shape_name(conv)]
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = f"conv_{shape_name(conv)}{epilogue}_{label(choice)}"
        p.emit(CONV, name, (x, weight, bias, residual if add_residual else out, out), conv, tiled=True,
               pairs=x.shape[2] // PAIR, lanes=LANES, non_negative=NON_NEGATIVE,
               groups=conv.out_channels // choice.block, positions=conv.out_size * (conv.out_size // choice.rows),
               column_tiles=conv.out_size // choice.rows, kernel=conv.kernel, stride=conv.stride,
               padding=conv.padding, add_residual=add_residual, relu=relu, out_pad=out_border, rows=choice.rows,
               block=choice.block, sums=choice.rows * choice.block,
               pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
        return out

    p.emit(INPUT_BF16, f"input_bf16_{stem.in_size}x{stem.in_channels}", (image, bf16s), size=stem.in_size,
           channels=stem.in_channels, padding=stem.padding)
    x = conv_step(bf16s, stem, p.view(buffers[0], stem.out_size, stem.out_channels), None, relu=True)
    mp = arch.pool
    pooled = p.view(buffers[1], mp.out_size, mp.channels)
    p.emit(MAX_POOL, f"max_pool_{mp.in_size}x{mp.channels}", (x, pooled), in_size=mp.in_size,
           out_size=mp.out_size, channels=mp.channels, kernel=mp.kernel, stride=mp.stride, padding=mp.padding,
           int16_min=INT16_MIN)
    x = rotate(arch, pooled, buffers, lambda x, block, free: bottleneck(p, conv_step, x, block, free))
    last = arch.blocks[-1].conv3
    p.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, features),
           size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
    weight, bias = pool["fc"]
    p.emit(FULLY_CONNECTED, f"fully_connected_{arch.fc.in_features}_{arch.fc.out_features}",
           (features, weight, bias, logits), groups=logits.size // LANES, pairs=arch.fc.in_features // PAIR,
           lanes=LANES)
    return p.plan(image, logits[: arch.fc.out_features])


def stand_in(conv: Conv, choice: Choice):
    """(weight pairs, bias) as fold packs them for `choice`, written (pages never written all read one page of
    zeros): every weight 1 / the sums' length, so that the values keep their size through the network."""
    size = conv.kernel * conv.kernel * pairs(conv.in_channels) * conv.out_channels
    weight = bf16_bits(np.full(PAIR, 1 / (size // conv.out_channels * PAIR))).view(np.int32)
    return np.full(size, weight[0], np.int32), np.zeros(conv.out_channels, np.float32)


def stand_in_fc(arch: ResNet50):
    return fold_fc(np.ones((arch.fc.out_features, arch.fc.in_features)), np.ones(arch.fc.out_features))


# Shown on the command line's first line, with the precision and how its sums are made.
SUMS = (f"float32 sums by vdpbf16ps ({BF16_FEATURE})" if HAS_BF16
        else "no AVX512_BF16 on this CPU: plain float32 sums, slow")
PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan,
              tuning=Tuning(Choice, candidates, stand_in, stand_in_fc, header=f"bfloat16, {SUMS}; "))
Model = partial(Compiled, PARTS)
