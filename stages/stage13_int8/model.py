"""Stage 13, int8: weights in 8-bit integers, activations in 8-bit codes, sums in 32-bit integers by VNNI.

A float32 FMA does 16 multiply-adds per instruction; `vpdpbusd` (AVX-512 VNNI) does 64: in each of 16 lanes it
multiplies 4 unsigned bytes by 4 signed bytes and adds the 4 products to the lane's int32 sum. Bytes are also a
quarter of the memory of floats: layer 4's 60 MB of weights become 15 MB. What it costs is precision: 256 levels
per value. Each conv's weights, batch norm folded in first, are rounded to int8 per output channel, w = s_w[o] x q
with q from -127 to 127 (symmetric: the zero of a weight is the code 0). Each activation the network stores is a
ReLU's output, never negative, so it is kept as u8 codes, x = s_x x q with q from 0 to 255 and the zero point 0;
the scale s_x = range / 255 comes from the range of that tensor measured once on calibration photos
(common/calibration.py). A conv then sums the codes' products exactly in int32, and its output loop turns the sums
back into the next tensor's codes: sum x s_x x s_w[o] / s_out + bias[o] / s_out (+ the residual in those units),
ReLU, round, clamp to 255 (`scale` holds those multipliers). Two tensors can be negative and are not u8 codes: the
photo, quantized with a zero point (codes 0 to 255 stand for its whole range, `input_code`; the stem conv's bias
takes off the zero point's share, `fold`), and a downsample conv's output (no ReLU), kept in float32 and added by
conv3's output loop (as s8 codes it was no faster, measured, and less accurate). The fc layer is int8 too, a 1x1
conv of one pixel (`fold_fc`): the global average pool rounds each channel's mean code, and fc reads 2 MB of weight
codes instead of 8 MB of floats (in float32 it took 4% of the pass, measured, for 0.05% of the multiply-adds).

The weights are packed so that 4 input channels' bytes sit together in one int32, as vpdpbusd takes them:
[group][kh][kw][ci / 4][block][4], and the HWC activations already are (4 neighbouring channels are 4 neighbouring
bytes). `dot_quads` gives the instruction through LLVM's intrinsic (512-bit, or AVX-VNNI's 256-bit form, chosen
from the CPU as the tile is); without VNNI a plain integer loop does the same, correct but slow. Winograd goes:
its transforms turn codes into sums and differences that no longer fit in a byte, and with 4 times the
multiply-adds per instruction the direct 3x3 conv gains more than Winograd saved.

Everything else is stage 12's, imported: the tuned register tile (its int32 sums take the place of the float sums;
common/tiles.py, common/model.py), the tile-threaded conv kernel, folded batch norm, fused output loop, generated
source, buffers and pool. bench.peak measures vpdpbusd's peak with common/intrinsics.py's copy of dot_quads.
"""

from functools import partial
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Bottleneck, Conv, ResNet50, resnet50
from common.calibration import activation_ranges
from common.intrinsics import LANES, VECTOR_BITS
from common.kernels import NUM_BUFFERS
from common.model import Compiled, Parts, Tuning
from common.planner import Plan, Planner, rotate
from common.target import target_features
from common.tiles import TILES, Choice, label, shape_name
from common.weights import fold_batch_norm, folded_pool

QUAD = 4  # bytes that vpdpbusd multiplies and adds in one lane: the input channels of one int32
INT8_MAX = 127  # a weight's codes run from -127 to 127: symmetric, so that the weight 0 is the code 0
U8_MAX = 255  # an activation's codes run from 0 to 255
NON_NEGATIVE = 0x7FFFFFFF  # a mask that keeps every tile number as it is and clears the sign bit
# LLVM's name of vpdpbusd for the vector width of the tile, if the CPU has it: AVX-512 VNNI, or AVX-VNNI (the 256-bit
# form on Intel's laptop CPUs since the 12th generation, which have no AVX-512).
VNNI = {512: ("avx512vnni", "llvm.x86.avx512.vpdpbusd.512"), 256: ("avxvnni", "llvm.x86.avx512.vpdpbusd.256")}
VNNI_FEATURE, VNNI_INTRINSIC = VNNI.get(VECTOR_BITS, (None, None))
HAS_VNNI = VNNI_FEATURE in target_features()

UNITS, INPUT_CODE = "units", "input code"  # the plan's entries beside the weights: what one code stands for


@intrinsic
def stack_ints(typingctx, count):
    """stack_floats' int32 twin: the tile of int32 sums."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    size = count.literal_value

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.int32), size=size)

    return types.CPointer(types.int32)(count), codegen


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

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import stack_floats, wide_vectors
from stages.stage13_int8.model import dot_quads, stack_ints

HWC = "float32[:, :, ::1]"
CODES = "uint8[:, :, ::1]"
BYTES = "uint8[::1]"
'''

CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, scale, residual, out):
    """x: HWC u8 codes, border {padding} of the zero point's code; weight: s8 codes as int32 quads, [group][kh][kw]
    [ci / 4][block] flattened; bias, scale: see requantization; out: HWC, u8 codes if {quantize}, else float32, border
    {out_pad} left alone."""
    wide_vectors()
    quads = x.view(np.int32)  # [h][w][ci / 4]: the codes of 4 neighbouring channels in one int32
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
        sums = stack_ints({sums})  # [rows][block]
        for i in range({sums}):
            sums[i] = 0
        for kh in range({kernel}):
            for kw in range({kernel}):
                for q in range({quads}):
                    at = (((group * {kernel} + kh) * {kernel} + kw) * {quads} + q) * {block}
                    for r in range({rows}):
                        quad = quads[ho * {stride} + kh, (wo0 + r) * {stride} + kw, q]
                        for v in range(0, {block}, {lanes}):
                            dot_quads(sums, r * {block} + v, quad, weight, at + v)
        # In the output's units (its codes, if it has them): sums x scale + bias (+ residual x its scale).
        acc = numba.carray(stack_floats({sums}), ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] = np.float32(sums[r * {block} + c]) * scale[group * {block} + c] + bias[group * {block} + c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if {add_residual}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] += residual[ho, wo0 + r, group * {block} + c] * scale[{out_channels}]
        if {relu}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        if {quantize}:  # after the ReLU: not negative, so + 0.5 and truncating rounds to the nearest code
            for r in range({rows}):
                for c in range({block}):
                    out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = np.uint8(
                        min(acc[r, c] + np.float32(0.5), np.float32({u8_max})))
        else:
            for r in range({rows}):
                for c in range({block}):
                    out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = acc[r, c]
'''

MAX_POOL = '''

@njit(f"void({{CODES}}, {{CODES}})", fastmath=True, cache=True)
def {name}(x, out):
    out[:] = 0  # codes of ReLU outputs: 0 is the smallest, as -inf is for floats
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
                        out[ho, wo, c] = max(out[ho, wo, c], x[hi, wi, c])
'''

GLOBAL_AVG_POOL = '''

@njit(f"void({{CODES}}, {{BYTES}})", fastmath=True, cache=True)
def {name}(x, out):
    """The mean of x's codes per channel, rounded: the features' codes, in x's unit."""
    for c in range({channels}):
        total = 0
        for h in range({size}):
            for w in range({size}):
                total += x[h, w, c]
        out[c] = np.uint8((total + {positions} // 2) // {positions})
'''

INPUT_CODES = '''

@njit(f"void({{HWC}}, {{CODES}})", fastmath=True, cache=True)
def {name}(image, out):
    """image: HWC float32 -> its codes round(x / {unit}) + {zero_point} inside out's border of {padding}: HWC u8."""
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                code = image[h, w, c] * np.float32({inverse}) + np.float32({zero_point} + 0.5)
                out[{padding} + h, {padding} + w, c] = np.uint8(
                    np.int32(min(max(code, np.float32(0.0)), np.float32({u8_max}))))  # as conv_step's codes
'''

FULLY_CONNECTED = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, scale, out):
    """x: the features' u8 codes; weight: s8 codes as int32 quads, [group][in / 4][LANES] flattened, LANES outputs
    a group; out: float32 logits, sums x scale + bias. The fc layer is a 1x1 conv of one pixel."""
    wide_vectors()
    quads = x.view(np.int32)
    for group in prange({groups}):
        wide_vectors()
        sums = stack_ints({lanes})
        for i in range({lanes}):
            sums[i] = 0
        for q in range({quads}):
            dot_quads(sums, 0, quads[q], weight, (group * {quads} + q) * {lanes})
        for i in range({lanes}):
            out[group * {lanes} + i] = np.float32(sums[i]) * scale[group * {lanes} + i] + bias[group * {lanes} + i]
'''


def candidates(conv: Conv, tiles=TILES) -> list[Choice]:
    """The tiles (of this CPU's register_tiles, by default) the tuning times for a conv's shape, stage 11's first:
    those whose rows split a row of output pixels. The tile order stays stage 11's: tuned too, it never beat its
    choice (stage 12's README)."""
    return [Choice(rows, block) for rows, block in tiles
            if conv.out_size % rows == 0 and conv.out_channels % block == 0]


def quads(channels: int) -> int:
    """int32 quads that hold `channels` bytes: the stem's 3 input channels take one, the 4th byte a zero weight."""
    return -(-channels // QUAD)


def input_code(preprocessing: dict) -> tuple[float, int]:
    """(unit, zero point) of the photo's u8 codes, x = unit x (code - zero point): 256 codes spread over the whole
    range that common.image.normalize gives, from pixel value 0 to 255 in every channel."""
    mean, std = np.asarray(preprocessing["mean"]), np.asarray(preprocessing["std"])
    low, high = np.min(-mean / std), np.max((preprocessing["scale"] - mean) / std)
    unit = float(high - low) / U8_MAX
    return unit, round(-low / unit)


def fold(conv: Conv, tensors, eps, choice: Choice, zero_point: int = 0, unit: float = 0.0):
    """OIHW conv weight and its batch norm -> (weight codes, their scale per output channel, bias (out,)): the
    batch norm's scale folded in, in float64, then each output channel's weights rounded to codes -127..127 of
    the scale max |w| / 127. The codes are packed as the choice's conv kernel reads them: [group][kh][kw][ci / 4]
    [block][4] bytes, as one flat int32 array. An input with a zero point (the photo's codes, of `unit`) adds
    zero_point x the sum of a channel's codes to its sums: the bias takes it off again."""
    folded, bias = fold_batch_norm(conv, tensors, eps)  # OIHW
    weight_scale = np.abs(folded).max(axis=(1, 2, 3)) / INT8_MAX
    codes = np.rint(folded / weight_scale[:, None, None, None]).astype(np.int8)
    bias = bias - zero_point * unit * weight_scale * codes.sum(axis=(1, 2, 3), dtype=np.int64)
    padded = np.zeros((conv.out_channels, quads(conv.in_channels) * QUAD, conv.kernel, conv.kernel), np.int8)
    padded[:, : conv.in_channels] = codes
    groups, block, k = conv.out_channels // choice.block, choice.block, conv.kernel
    packed = padded.reshape(groups, block, quads(conv.in_channels), QUAD, k, k).transpose(0, 4, 5, 2, 1, 3)
    return (np.ascontiguousarray(packed).view(np.int32).reshape(-1), weight_scale.astype(np.float32),
            bias.astype(np.float32))


def fold_fc(weight, bias):
    """fc's (out, in) weight and bias -> (codes, scales, bias) as conv's fold makes them, the outputs in groups of
    LANES ([group][in / 4][LANES][4] bytes), padded with zero rows to a whole group (1000 -> 1008 with 16 lanes)."""
    out_features = -(-weight.shape[0] // LANES) * LANES
    weight_scale = np.ones(out_features)
    weight_scale[: weight.shape[0]] = np.abs(weight).max(axis=1) / INT8_MAX
    codes = np.zeros((out_features, weight.shape[1]), np.int8)
    codes[: weight.shape[0]] = np.rint(weight / weight_scale[: weight.shape[0], None])
    packed = codes.reshape(out_features // LANES, LANES, -1, QUAD).transpose(0, 2, 1, 3)
    padded_bias = np.zeros(out_features, np.float32)
    padded_bias[: bias.size] = bias
    return np.ascontiguousarray(packed).view(np.int32).reshape(-1), weight_scale.astype(np.float32), padded_bias


def requantization(weight_scale: np.ndarray, bias: np.ndarray, units: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(bias, scale) as a conv's output loop takes them, in its output's units. units: (x's, out's, residual's): what
    one code of each stands for (1 for float32 values). scale: [out channels + 1], what one unit of a sum is in out's
    units, per channel; then one residual unit's."""
    x_unit, out_unit, residual_unit = units
    scale = np.append(x_unit * weight_scale / out_unit, residual_unit / out_unit).astype(np.float32)
    return (bias / out_unit).astype(np.float32), scale


def load_pool(manifest, weights_dir, choices):
    """Every conv as (weight codes, their scales, bias) by conv name, packed for its shape's choice (the stem's bias
    takes off the photo's zero point's share), and fc's the same way."""
    stem = resnet50(manifest["variant"]).stem
    unit, zero_point = input_code(manifest["preprocessing"])

    def fold_conv(conv, tensors, eps):
        return fold(conv, tensors, eps, choices[shape_name(conv)], *((zero_point, unit) if conv == stem else ()))

    return folded_pool(manifest, weights_dir, fold_conv, fold_fc)


def measure(manifest, weights_dir) -> dict:
    """What one code stands for: each activation's (its range, calibrated on photos by common/calibration.py, over
    255 codes), and the photo's (its unit and zero point, from the preprocessing)."""
    units = {name: value / U8_MAX for name, value in activation_ranges(weights_dir).items()}
    return {UNITS: units, INPUT_CODE: input_code(manifest["preprocessing"])}


def plan(arch: ResNet50, pool: dict, choices: dict) -> Plan:
    """Stage 12's plan in codes: the photo turned into codes first, every conv's output loop requantizing, the
    pools and fc on codes; a downsample conv's output stays float32."""
    p = Planner(zeros=lambda shape: np.zeros(shape, np.uint8))  # a border of code 0
    units, (input_unit, zero_point) = pool[UNITS], pool[INPUT_CODE]
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    # Flat, viewed as HWC codes (u8) or, for a downsample conv's output, HWC float32: sized for the latter.
    buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]
    stem = arch.stem
    image = np.empty((stem.in_size, stem.in_size, stem.in_channels), np.float32)  # HWC
    codes = np.full((stem.in_size + 2 * stem.padding, stem.in_size + 2 * stem.padding, quads(stem.in_channels) * QUAD),
                    zero_point, np.uint8)  # HWC codes, the photo's border
    features = np.empty(arch.fc.in_features, np.uint8)  # codes, of the last block's output's unit
    logits = np.empty(-(-arch.fc.out_features // LANES) * LANES, np.float32)  # whole groups of LANES

    def view(buffer, size, channels, dtype=np.uint8):
        """An HWC view of the start of a flat buffer, of u8 codes or of float32."""
        return p.view(buffer, size, channels, dtype)

    def conv_step(x, conv: Conv, out, residual, relu: bool, units, out_border=0):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu). x holds codes,
        with a border of the conv's padding; out gets codes if it is u8, values if float32, and a border of
        out_border. units: (x's, out's, residual's), as requantization takes them. Without a residual, `out` stands
        in for the argument the kernel does not read."""
        weight, weight_scale, bias = pool[conv.name]
        out_bias, scale = requantization(weight_scale, bias, units)
        choice = choices[shape_name(conv)]
        add_residual = residual is not None
        epilogue = (f"_add{residual.dtype}" if add_residual else "") + ("_relu" if relu else "")
        name = f"conv_{shape_name(conv)}{epilogue}_{out.dtype}_{label(choice)}"
        arrays = (x, weight, out_bias, scale, residual if add_residual else out, out)
        p.emit(CONV, name, arrays, conv, tiled=True, quads=x.shape[2] // QUAD, out_channels=conv.out_channels,
               lanes=LANES, non_negative=NON_NEGATIVE, quantize=out.dtype == np.uint8, u8_max=U8_MAX,
               groups=conv.out_channels // choice.block, positions=conv.out_size * (conv.out_size // choice.rows),
               column_tiles=conv.out_size // choice.rows, kernel=conv.kernel, stride=conv.stride,
               padding=conv.padding, add_residual=add_residual, relu=relu, out_pad=out_border, rows=choice.rows,
               block=choice.block, sums=choice.rows * choice.block,
               pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
        return out

    # The unit of each block's input: the output of the block before it, or the stem's (max pooling keeps it).
    inputs = [stem.name] + [block.name for block in arch.blocks[:-1]]
    input_units = {block.name: units[name] for block, name in zip(arch.blocks, inputs, strict=True)}

    def bottleneck(x, block: Bottleneck, free):
        """Plan one block reading x, codes of its input's unit; `free` are the three buffers x is not in. Returns
        the output view."""
        b1, b2, b3 = free
        p.comment(block.name)
        x_unit = input_units[block.name]
        c1, c2, c3, down = block.conv1, block.conv2, block.conv3, block.downsample
        mid_unit, out_unit = units[c1.name], units[c2.name]
        mid = p.bordered(c1.out_size, c1.out_channels, c2.padding)  # conv2 reads it with its padding
        conv_step(x, c1, mid, None, relu=True, units=(x_unit, mid_unit, 0.0), out_border=c2.padding)
        out = conv_step(mid, c2, view(b2, c2.out_size, c2.out_channels), None, relu=True,
                        units=(mid_unit, out_unit, 0.0))
        # conv3 adds the shortcut as it stores its sums, so the shortcut comes first: values, without a ReLU.
        shortcut, shortcut_unit = x, x_unit
        if down:
            shortcut_view = view(b1, down.out_size, down.out_channels, np.float32)
            shortcut, shortcut_unit = conv_step(x, down, shortcut_view, None, relu=False, units=(x_unit, 1.0, 0.0)), 1.0
        return conv_step(out, c3, view(b3, c3.out_size, c3.out_channels), shortcut, relu=True,
                         units=(out_unit, units[block.name], shortcut_unit))

    p.emit(INPUT_CODES, f"input_codes_{stem.in_size}x{stem.in_channels}", (image, codes), unit=input_unit,
           inverse=1 / input_unit, zero_point=zero_point, size=stem.in_size, channels=stem.in_channels,
           padding=stem.padding, u8_max=U8_MAX)
    x = conv_step(codes, stem, view(buffers[0], stem.out_size, stem.out_channels), None, relu=True,
                  units=(input_unit, units[stem.name], 0.0))
    mp = arch.pool
    pooled = view(buffers[1], mp.out_size, mp.channels)
    p.emit(MAX_POOL, f"max_pool_{mp.in_size}x{mp.channels}", (x, pooled), in_size=mp.in_size,
           out_size=mp.out_size, channels=mp.channels, kernel=mp.kernel, stride=mp.stride, padding=mp.padding)
    x = rotate(arch, pooled, buffers, bottleneck)
    last = arch.blocks[-1].conv3
    p.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, features),
           size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
    weight, weight_scale, bias = pool["fc"]
    p.emit(FULLY_CONNECTED, f"fully_connected_{arch.fc.in_features}_{arch.fc.out_features}",
           (features, weight, bias, (units[arch.blocks[-1].name] * weight_scale).astype(np.float32), logits),
           groups=logits.size // LANES, quads=arch.fc.in_features // QUAD, lanes=LANES)
    return p.plan(image, logits[: arch.fc.out_features])


def stand_in(conv: Conv, choice: Choice):
    """(weight codes, scales, bias) as fold packs them for `choice`, written (pages never written all read one page
    of zeros): codes 1, scales 1 / the sums' length, so that the codes keep their size through the network."""
    size = conv.kernel * conv.kernel * quads(conv.in_channels) * conv.out_channels
    return (np.full(size, 0x01010101, np.int32), np.full(conv.out_channels, 1 / size, np.float32),
            np.zeros(conv.out_channels, np.float32))


def stand_in_fc(arch: ResNet50):
    return fold_fc(np.ones((arch.fc.out_features, arch.fc.in_features)), np.ones(arch.fc.out_features))


# Shown on the command line's first line, with the precision and how its sums are made.
SUMS = f"int32 sums by vpdpbusd ({VNNI_FEATURE})" if HAS_VNNI else "no VNNI on this CPU: plain integer sums, slow"
PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan, measure=measure,
              tuning=Tuning(Choice, candidates, stand_in, stand_in_fc, header=f"int8, {SUMS}; "))
Model = partial(Compiled, PARTS)
