"""Stage 14's picture, bfloat16: a weight's bits rounded by to_bf16, one vdpbf16ps, the bfloat16 layouts of the
packed weights and of the activations, and a conv's output loop, drawn for a CPU with AVX512_BF16. It reads real
numbers, as rounding is only seen on them: the stem's weights as `make weights` exports them by default (v1) and
one pixel of a photo of pics/, through the stage's fold, to_bf16 and plain_pairs (compiled by numba, which takes a
second).
"""

from dataclasses import dataclass

import numba
import numpy as np
from matplotlib.patches import Rectangle

from common.architecture import Conv, resnet50
from common.errors import UserError
from common.image import load_image
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.stages import find_stage, stage_module, stage_number
from common.target import vector_registers
from common.tiles import first_of_each_shape, register_tiles
from common.weights import load_manifest, load_tensor
from course.pictures.shared import (
    ACC_COLOUR,
    BF16_PHOTO,
    BF16_PIXEL,
    CODE_FONT,
    COURSE_VARIANT,
    GAP,
    MARGIN,
    PALE,
    SMALL,
    W_COLOUR,
    WEIGHT_DISPLAY,
    X86,
    X_COLOUR,
    Sheet,
    bracket,
    example_conv,
    input_strip,
    lane_columns,
    packed_steps,
    paragraph,
    planned,
    previous,
    require,
    step_chain,
    weight_strip,
)
from tests.amx_emulator import from_bits

# The CPU its vdpbf16ps is drawn for, named to LLVM: Intel's first with AVX512_BF16 (2020)
BF16_TARGET = ("AVX-512 BF16", "cooperlake")
SIGN_COLOUR = "#fbb4ae"  # the sign bit; the exponent bits are X_COLOUR, the mantissa's W_COLOUR


def bf16_target(module):
    """(name, LLVM CPU name, bits, registers, lanes, tiles) of BF16_TARGET, as the stage would size them there."""
    name, cpu = BF16_TARGET
    bits, registers = vector_registers(X86, cpu, "")
    if bits != 512:  # HAS_BF16's condition: vdpbf16ps on 256-bit vectors needs AVX-512 too
        raise AssertionError(f"{cpu}: {bits}-bit vectors, where the stage's vdpbf16ps takes 512")
    lanes = bits // module.FLOAT32_BITS
    return name, cpu, bits, registers, lanes, register_tiles(registers, lanes)


def kernel_rounding(module):
    """The stage's to_bf16 on an array of float32s: an intrinsic, it only runs in compiled code, so in a loop
    compiled here by numba. The picture's roundings are its, checked against the stage's numpy twin bf16_bits."""
    to_bf16 = module.to_bf16

    @numba.njit
    def rounded(values, out):
        for i in range(values.size):
            out[i] = to_bf16(values[i])

    def call(values):
        flat = np.ascontiguousarray(values, np.float32).reshape(-1)
        out = np.empty(flat.size, np.uint16)
        rounded(flat, out)
        if not np.array_equal(out, module.bf16_bits(flat)):
            raise AssertionError("to_bf16 and bf16_bits round differently")
        return out.reshape(np.shape(values))

    return call


@dataclass
class Stem:
    """The stem conv of stage 14's picture: its real weights folded by the stage's fold, and one output pixel of it
    on a real photo, computed as its tile kernel computes it, step by step, by the stage's plain_pairs."""

    conv: Conv
    folded: np.ndarray  # OIHW float32: the folded weights as bf16_bits takes them (fold's float64, to float32)
    packed: np.ndarray  # fold's weight pairs, int32, [group][kh][kw][ci / 2][block][2] bfloat16s
    bias: np.ndarray  # fold's bias
    image: np.ndarray  # the photo's HWC float32 values
    channel_order: str  # of the image's channels, as the weights were trained ("BGR")
    x: np.ndarray  # the stem's input as the plan's first kernel fills it: HWC bfloat16 bits, border and 4th channel 0
    step: tuple  # (kh, kw, p) of the step drawn
    at: int  # where its weights start in packed, in int32s
    before: np.ndarray  # the lanes' float32 sums before that step
    after: np.ndarray  # and after it
    sums: np.ndarray  # after the last step: the sums the output loop reads


def stem_pixel(module, choice, lanes: int) -> Stem:
    """BF16_PIXEL of the stem on BF16_PHOTO, with the course's weights: lanes' output channels of group 0 (v = 0),
    through every (kh, kw, p) step as the conv template orders them; the drawn step is the centre tap's p = 0."""
    manifest = load_manifest(WEIGHTS_DIR)
    if manifest["variant"] != COURSE_VARIANT:
        raise UserError(f"{WEIGHTS_DIR}: {manifest['variant']} weights; stage 14's picture draws the course's "
                        f"{COURSE_VARIANT} weights: run `make weights` (SOURCE=npm) to export them")
    conv = resnet50(COURSE_VARIANT).stem

    def tensors(name):
        return load_tensor(name, manifest, WEIGHTS_DIR)

    packed, bias = module.fold(conv, tensors, manifest["bn_eps"], choice)
    gamma, var = tensors(f"{conv.bn}.weight"), tensors(f"{conv.bn}.running_var")
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + manifest["bn_eps"])
    folded_weight = (tensors(f"{conv.name}.weight").astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    k, pair, pairs = conv.kernel, module.PAIR, module.pairs(conv.in_channels)
    groups, block = conv.out_channels // choice.block, choice.block
    unpacked = packed.view(np.uint16).reshape(groups, k, k, pairs, block, pair).transpose(0, 4, 3, 5, 1, 2)
    rounding = kernel_rounding(module)
    if not np.array_equal(unpacked.reshape(conv.out_channels, pairs * pair, k, k)[:, : conv.in_channels],
                          rounding(folded_weight)):
        raise AssertionError("fold's weights are not the folded weights rounded by to_bf16")
    image = load_image(PICS_DIR / BF16_PHOTO, manifest["preprocessing"])
    x = np.zeros((conv.in_size + 2 * conv.padding,) * 2 + (pairs * pair,), np.uint16)
    x[conv.padding: conv.padding + conv.in_size, conv.padding: conv.padding + conv.in_size, : conv.in_channels] = \
        rounding(image)
    ho, wo = BF16_PIXEL
    drawn = (k // 2, k // 2, 0)
    sums = np.zeros(lanes, np.float32)
    for kh in range(k):
        for kw in range(k):
            for p in range(pairs):
                at = ((kh * k + kw) * pairs + p) * block  # group 0
                if (kh, kw, p) == drawn:
                    before, drawn_at = sums.copy(), at
                pair_bits = x.view(np.int32)[ho * conv.stride + kh, wo * conv.stride + kw, p]
                for v in range(0, lanes, module.LANES):
                    module.plain_pairs(sums, v, pair_bits, packed, at + v)
                if (kh, kw, p) == drawn:
                    after = sums.copy()
    window = x[ho * conv.stride: ho * conv.stride + k, wo * conv.stride: wo * conv.stride + k, : conv.in_channels]
    weights = unpacked.reshape(conv.out_channels, -1, k, k)[:lanes, : conv.in_channels]
    exact = np.einsum("ochw,hwc->o", from_bits(weights).astype(np.float64), from_bits(window).astype(np.float64))
    if not np.allclose(sums, exact, rtol=1e-5, atol=1e-6):
        raise AssertionError("plain_pairs' sums are not the sums of the bfloat16 products")
    return Stem(conv, folded_weight, packed, bias, image, manifest["preprocessing"]["channel_order"], x, drawn,
                drawn_at, before, after, sums)


def bit_row(sheet: Sheet, x, y, bits: int, count: int, cell: float, h: float, faces, bold=()):
    """count bits of `bits`, the highest first, as cells from (x, y); faces per bit, bold the bits in `bold`
    (positions from the left); the digits of PALE cells grey."""
    for i in range(count):
        face = faces[i]
        sheet.box(x + i * cell, y, cell, h, face=face, edge="0.6")
        sheet.text(x + (i + 0.5) * cell, y - h / 2, str(bits >> (count - 1 - i) & 1), size=SMALL - 1, ha="center",
                   color="0.55" if face == PALE else "0.1", weight="bold" if i in bold else "normal")
    sheet.box(x, y, count * cell, h, face="none", edge="0.15")


def bf16_rounding(sheet: Sheet, module, s: Stem, lanes: int, rounding):
    """One real weight's float32 bits, to_bf16's addition and the bfloat16 it keeps; the photo's values rounded.
    Returns the (output channel, input channel) drawn, the first of the drawn step's weights that rounds up."""
    kh, kw, p = s.step
    pair, shift = module.PAIR, module.BF16_SHIFT
    exponent_bits, mantissa_bits = np.finfo(np.float32).nexp, np.finfo(np.float32).nmant
    kept = module.FLOAT32_BITS - shift - 1 - exponent_bits  # mantissa bits a bfloat16 keeps
    bias = 2 ** (exponent_bits - 1) - 1
    weights = s.folded[:lanes, p * pair:(p + 1) * pair, kh, kw]
    rounded = rounding(weights)
    up = [(co, ci) for co in range(lanes) for ci in range(pair)
          if int(rounded[co, ci]) << shift > int(weights[co, ci].view(np.uint32))]
    co, ci = up[0]
    value = weights[co, ci]
    bits = int(value.view(np.uint32))
    lowest = bits >> shift & 1
    addend = module.HALF_ULP + lowest
    total = (bits + addend) & (2**module.FLOAT32_BITS - 1)
    kept_bits = int(rounded[co, ci])
    if total >> shift != kept_bits:
        raise AssertionError("the drawn addition is not to_bf16's rounding")
    paragraph(sheet, f"A bfloat16 is a float32's top BF16_SHIFT = {shift} bits: its sign, its {exponent_bits} exponent "
              f"bits and {kept} of its {mantissa_bits} mantissa bits. to_bf16 (in the kernels) and bf16_bits (its "
              f"numpy twin, in fold) round a float32 to one: add HALF_ULP = 0x{module.HALF_ULP:X} and the lowest kept "
              f"bit (bit {shift}), then drop the low {shift} bits. Drawn: a real weight, the stem's ({s.conv.name}) "
              f"for output channel {co}, input channel {p * pair + ci} at tap ({kh}, {kw}), its batch norm folded in "
              "(fold folds in float64; bf16_bits takes float32s):", gap=3.8)
    label_w, cell, h = 24.0, 2.05, 2.2
    x0 = MARGIN + label_w
    top = sheet.y
    field = [SIGN_COLOUR] + [X_COLOUR] * exponent_bits + [W_COLOUR] * kept
    dropped = [PALE] * shift
    edges = (0, 1, 1 + exponent_bits, module.FLOAT32_BITS)
    for (a, b), text in zip(zip(edges, edges[1:], strict=False),
                            ("sign", f"exponent: {exponent_bits} bits",
                             f"mantissa: {mantissa_bits} bits, {kept} kept and {shift} dropped"), strict=True):
        bracket(sheet, x0 + a * cell, x0 + b * cell, top + 0.4, text, below=False, size=SMALL - 1)
    changed = [i for i in range(module.FLOAT32_BITS - shift)
               if (bits ^ total) >> (module.FLOAT32_BITS - 1 - i) & 1]
    rows = ((f"w, float32: {value:.9f}", bits, field + dropped, ()),
            (f"+ 0x{module.HALF_ULP:X} + bit {shift} ({lowest})", addend, ["white"] * module.FLOAT32_BITS, ()),
            ("=", total, field + dropped, changed))
    y = top
    for label, row_bits, faces, bold in rows:
        sheet.text(x0 - 1, y - h / 2, label, size=SMALL - 0.5, ha="right")
        bit_row(sheet, x0, y, row_bits, module.FLOAT32_BITS, cell, h, faces, bold)
        sheet.text(x0 + module.FLOAT32_BITS * cell + 0.8, y - h / 2, f"0x{row_bits:08X}", size=SMALL - 1,
                   family="monospace")
        y -= h
    y -= 0.8
    bf16_value = float(from_bits(kept_bits))
    sheet.text(x0 - 1, y - h / 2, f"bfloat16: the top {shift} (>> {shift})", size=SMALL - 0.5, ha="right")
    bit_row(sheet, x0, y, kept_bits, module.FLOAT32_BITS - shift, cell, h, field, changed)
    sheet.text(x0 + (module.FLOAT32_BITS - shift) * cell + 0.8, y - h / 2,
               f"0x{kept_bits:04X} = {bf16_value!r}", size=SMALL - 1, family="monospace")
    split = x0 + (module.FLOAT32_BITS - shift) * cell
    sheet.ax.plot([split, split], [top + 0.2, y + 0.8 - 0.2], color="#d62728", linewidth=1.0, linestyle=(0, (3, 2)))
    sheet.y = y - h - 1.6
    exponent = (bits >> mantissa_bits & (2**exponent_bits - 1)) - bias
    mantissa = bits & (2**mantissa_bits - 1)
    kept_exponent = (kept_bits >> kept & (2**exponent_bits - 1)) - bias
    kept_mantissa = kept_bits & (2**kept - 1)
    error = abs(bf16_value - float(value)) / abs(float(value))
    low_co, low_ci = next((c, i) for c in range(lanes) for i in range(pair) if (c, i) not in up)
    low_bits = int(weights[low_co, low_ci].view(np.uint32))
    paragraph(sheet, f"float32: 2^({exponent + bias} - {bias}) x (1 + {mantissa:,} / 2^{mantissa_bits}) = 2^{exponent} "
              f"x {1 + mantissa / 2**mantissa_bits:.7f}; bfloat16: 2^{kept_exponent} x (1 + {kept_mantissa} / "
              f"2^{kept}) = 2^{kept_exponent} x {1 + kept_mantissa / 2**kept:g}, relative error {error:.1e}: at most "
              f"2^-{kept + 1} = {2.0 ** -(kept + 1):.1e} for any value, half the last kept bit, which is 2^-{kept} of "
              f"the leading one. The dropped bits, 0x{bits & 0xFFFF:04X}, are more than half of bit {shift} (0x8000): "
              f"the kept bits go up by 1 (bold: the bits that changed). Below half nothing carries (output channel "
              f"{low_co}'s input channel {p * pair + low_ci}: 0x{low_bits:08X} -> 0x{low_bits >> shift:04X}). "
              f"A tie, exactly 0x8000, carries only when bit {shift} is 1: the kept bits end in 0, even.",
              size=SMALL, gap=1.4)
    hi, wi = (BF16_PIXEL[0] * s.conv.stride + kh - s.conv.padding, BF16_PIXEL[1] * s.conv.stride + kw
              - s.conv.padding)
    photo = s.image[hi, wi]
    values = from_bits(s.x[hi + s.conv.padding, wi + s.conv.padding, : s.conv.in_channels])
    steps = [2.0 ** (int(np.floor(np.log2(abs(v)))) - kept) for v in photo]
    paragraph(sheet, f"The photo is rounded by to_bf16 too, as the plan's first kernel stores it: pics/{BF16_PHOTO}'s "
              f"pixel ({hi}, {wi}), {', '.join(s.channel_order)} = "
              f"{', '.join(f'{v:.3f}' for v in photo)}, becomes {', '.join(f'{v:g}' for v in values)}: "
              f"{kept + 1} significant bits, steps of {', '.join(f'{d:g}' for d in steps)} at these sizes.",
              size=SMALL, gap=GAP)
    return co, p * pair + ci


def vdpbf16ps(sheet: Sheet, module, s: Stem, target, marked: tuple, quad: int):
    """One vdpbf16ps: the broadcast pair, the lanes' weights, each lane's 2 products added to its float32 sum; the
    weight `marked` (output channel, input channel) framed; quad: stage 13's QUAD, vpdpbusd's products a lane."""
    name, cpu, bits, _, lanes, _ = target
    conv, pair = s.conv, module.PAIR
    kh, kw, p = s.step
    ho, wo = BF16_PIXEL
    hi, wi = ho * conv.stride + kh, wo * conv.stride + kw  # in the bordered input, as the kernel indexes it
    channels = range(p * pair, (p + 1) * pair)
    weights = from_bits(s.packed[s.at: s.at + lanes].view(np.uint16).reshape(lanes, pair))  # [lane][half]
    x = from_bits(s.x[hi, wi, p * pair:(p + 1) * pair])
    products = (x[None, :].astype(np.float64) * weights).sum(axis=1)
    pairs = module.pairs(conv.in_channels)
    steps = conv.kernel**2 * pairs
    done = (kh * conv.kernel + kw) * pairs + p
    paragraph(sheet, f"One vdpbf16ps (dot_pairs) on {name} ({cpu}, {bits}-bit vectors): in each of its {lanes} "
              f"float32 lanes, PAIR = {pair} products of a bfloat16 input and a bfloat16 weight are added to the "
              f"lane's float32 sum. Drawn: the stem ({conv.kernel}x{conv.kernel}, {conv.in_channels} -> "
              f"{conv.out_channels} channels, stride {conv.stride}) at output pixel ({ho}, {wo}) of pics/{BF16_PHOTO}, "
              f"step kh = {kh}, kw = {kw}, p = {p} of its {steps} ({conv.kernel**2} taps x pairs({conv.in_channels}) = "
              f"{pairs} pairs, p = 1 holding channel 2 and a 4th that is 0), group 0, v = 0, computed by plain_pairs "
              "(dot_pairs without AVX512_BF16):", gap=2.6)
    h, wh = 2.3, 3.0
    x0, w, top = lane_columns(sheet, lanes)
    qx = x0 - 9.5
    sheet.text(MARGIN, top - wh, f"pair = x[{hi}, {wi}, {p}]:\nthe bfloat16s of one\npixel's channels "
               f"{channels[0]}-{channels[-1]}\n(one int32), broadcast\nto every lane", size=SMALL - 1, va="center")
    for k, ci in enumerate(channels):
        y = top - k * wh
        sheet.box(qx, y, 4.6, wh, face=X_COLOUR)
        sheet.text(qx + 2.3, y - wh / 2, f"{x[k]:g}", size=SMALL, ha="center")
        sheet.text(qx + 5.0, y - wh / 2, f"ci {ci}  x", size=SMALL - 1.5, va="center", color="0.3")
        sheet.cells(x0, y, lanes, w, wh, [W_COLOUR if j % 2 == 0 else "#fdd0a2" for j in range(lanes)],
                    [f"{v * WEIGHT_DISPLAY:.3g}" for v in weights[:, k]], size=SMALL - 1)
    co, ci = marked
    sheet.ax.add_patch(Rectangle((x0 + co * w, top - (ci - channels[0] + 1) * wh), w, wh, facecolor="none",
                                 edgecolor="#d62728", linewidth=1.8))
    sheet.text(x0 + lanes * w, top - pair * wh - 0.25, f"bfloat16 weights x {WEIGHT_DISPLAY}, to 3 digits: lane j's "
               f"int32 holds output channel co j's of input channels {channels[0]} and {channels[-1]} (framed: the "
               "weight above)",
               size=SMALL - 1.5, ha="right", va="top", color="0.3")
    y = top - pair * wh - 1.9
    rows = ((f"sum before ({done} steps)", [f"{v:.4f}" for v in s.before], "white"),
            (f"+ the {pair} products", [f"{v:.4f}" for v in products], PALE),
            ("= the lane's float32 sum", [f"{v:.4f}" for v in s.after], ACC_COLOUR))
    for label, values, face in rows:
        sheet.text(x0 - 1, y - h / 2, label, size=SMALL - 0.5, ha="right")
        sheet.cells(x0, y, lanes, w, h, face, values, size=SMALL - 1.5)
        y -= h
    sheet.y = y - 1.2
    fma = bits // module.FLOAT32_BITS
    terms = " + ".join(f"{a:g} x {b:.7g}" for a, b in zip(x, weights[0], strict=True))
    significant = np.finfo(np.float32).nmant + 1, module.FLOAT32_BITS - module.BF16_SHIFT - np.finfo(np.float32).nexp
    paragraph(sheet, f"Lane 0: {terms} = {products[0]:.7g}, added to {s.before[0]:.7g}: {s.after[0]:.7g}. A product "
              f"of two bfloat16s has at most {2 * significant[1]} significant bits, which a float32 "
              f"({significant[0]}) holds exactly: only the "
              "additions round. vdpbf16ps adds the 2 products to the sum one at a time, the odd channel's first; "
              "plain_pairs adds their sum: the two can differ in a sum's last bit."
              f"\nPer instruction: {lanes} lanes x PAIR {pair} = {lanes * pair} multiply-adds; a float32 FMA: "
              f"{bits} / FLOAT32_BITS {module.FLOAT32_BITS} = {fma} lanes x 1 = {fma}: {lanes * pair // fma}x "
              f"(stage 13's vpdpbusd: {lanes} x QUAD {quad} = {lanes * quad}, on bytes); per cycle, it is how many "
              "of each the CPU issues (bench/peak.py measures both). Without AVX512_BF16 "
              "(an AVX2 CPU, or an AVX-512 one without it: HAS_BF16 is false) dot_pairs is plain_pairs: correct, "
              "slow.",
              size=SMALL, gap=GAP)


def bf16_layouts(sheet: Sheet, module, conv: Conv, choice, x, target):
    """fold's packed weights and the HWC bfloat16 activations x (as the plan passes them) as the kernel's int32
    pairs, a bfloat16 (2 bytes) a cell, with each index's step."""
    _, _, _, _, lanes, _ = target
    pair, block = module.PAIR, choice.block
    cell, h = 2.9, 2.2  # a bfloat16 as wide as 2 of stage 13's bytes
    value_bytes = x.dtype.itemsize
    packed_size = conv.kernel**2 * module.pairs(conv.in_channels) * conv.out_channels
    paragraph(sheet, f"The weights of {conv.name} ({conv.kernel}x{conv.kernel}, {conv.in_channels} -> "
              f"{conv.out_channels} channels) as fold packs them for its {module.label(choice)} tile: "
              f"[group][kh][kw][ci/{pair}][block][{pair}] bfloat16s, one flat int32 array of {packed_size:,} (a cell: "
              f"one bfloat16, {value_bytes} bytes; in it, its input channel ci):", gap=4.4)
    weight_strip(sheet, lanes, block, pair, cell, h, "bfloat16s",
                 f"one vdpbf16ps's {lanes} pairs, {lanes * pair * value_bytes} bytes (v = 0)",
                 packed_steps(module, conv, choice, pair, np.int16))
    pairs_view = x.view(np.int32)
    size, _, channel_pairs = pairs_view.shape
    paragraph(sheet, f"Its input, as plan passes it: HWC bfloat16 bits (uint16), {size}x{size}x"
              f"{channel_pairs * pair} with a border of {conv.padding}, which the kernel views as int32 pairs "
              f"x[h][w][ci/{pair}] ({size}x{size}x{channel_pairs}): a pair's low half is the even channel, which "
              "vdpbf16ps multiplies by the weight pair's low half:", gap=4.4)
    input_strip(sheet, pairs_view, pair, "pair", "bfloat16s", ("bfloat16", x.strides[-1]), cell, h)


def bf16_output_chain(sheet: Sheet, module, s: Stem, rounding, counts: dict):
    """The conv template's output loop for channel 0 of the drawn pixel: float32 sum to the next tensor's bfloat16."""
    acc = np.float32(s.sums[0]) + s.bias[0]
    relu = max(acc, np.float32(0.0))
    bits = int(rounding(np.float32(relu)))
    steps = ((f"float32 sum\n(all {s.conv.kernel**2 * module.pairs(s.conv.in_channels)} steps)",
              f"{s.sums[0]:.6f}", ACC_COLOUR),
             ("+ bias[c]", f"+ {s.bias[0]:.6f}\n= {acc:.6f}", PALE),
             ("+ from_bf16(residual)", "a conv3's: the stem\nhas none", "white"),
             ("ReLU:\nmax(acc, 0)", f"{relu:.6f}", PALE),
             (f"to_bf16: + 0x{module.HALF_ULP:X}\n+ bit {module.BF16_SHIFT}, >> {module.BF16_SHIFT}",
              f"0x{int(np.float32(relu).view(np.uint32)):08X}\n-> 0x{bits:04X}", PALE),
             ("the next tensor's\nbfloat16", f"{float(from_bits(bits))!r}", X_COLOUR))
    paragraph(sheet, "The conv template's output loop, for channel 0 of the drawn pixel: float32 from the sums to the "
              "store, where to_bf16 rounds once:", gap=1.6)
    step_chain(sheet, steps)
    paragraph(sheet, f"In the network (plan): all {counts['convs']} convs write bfloat16 bits, the "
              f"{counts['no relu']} downsample convs without ReLU (a negative value is no special case); the "
              f"{counts['residual']} conv3s add a residual, widened from bfloat16. The max pool compares the bits as "
              "int16 (bfloat16s that are not negative order as their bits do); the average pool sums in float32 and "
              "rounds once; fc, dot_pairs too, writes float32 logits.", gap=GAP)


def stage14(stage, sheet: Sheet):
    module = stage_module(stage)
    int8 = stage_module(find_stage(str(stage_number(stage) - 1)))
    arch = resnet50(COURSE_VARIANT)
    target = bf16_target(module)
    name, cpu, _, _, lanes, tiles = target
    first = first_of_each_shape(arch.convs)
    choices = {shape: module.candidates(conv, tiles)[0] for shape, conv in first.items()}
    plan = planned(stage, choices)
    convs = [step for step in plan.steps if step.conv is not None]
    if any(step.arrays[4].dtype != np.uint16 for step in convs):
        raise AssertionError("a conv of the plan does not write bfloat16 bits")
    if any(not step.constants["relu"] and "downsample" not in step.conv.name for step in convs):
        raise AssertionError("a conv other than a downsample conv has no ReLU")
    counts = {"convs": len(convs), "no relu": sum(not step.constants["relu"] for step in convs),
              "residual": sum(step.constants["add_residual"] for step in convs)}
    example = example_conv(arch)
    (example_step,) = [step for step in convs if step.conv == example]
    require(module.CONV, "sums = stack_floats({sums})", "x.view(np.int32)",
            "pair = pairs[ho * {stride} + kh, (wo0 + r) * {stride} + kw, p]",
            "dot_pairs(sums, r * {block} + v, pair, weight, at + v)", "acc[r, c] += bias[group * {block} + c]",
            "acc[r, c] += from_bf16(residual[ho, wo0 + r, group * {block} + c])",
            "max(acc[r, c], np.float32(0.0))", "= to_bf16(acc[r, c])")
    require(module.MAX_POOL, "x.view(np.int16)")
    require(module.GLOBAL_AVG_POOL, "total += from_bf16(x[h, w, c])", "out[c] = to_bf16(total")
    require(module.FULLY_CONNECTED, "dot_pairs(", "out[group * {lanes} + i] = sums[i] + bias")
    require(module.INPUT_BF16, "= to_bf16(image[h, w, c])")
    rounding = kernel_rounding(module)
    stem = stem_pixel(module, choices[module.shape_name(arch.stem)], lanes)
    pair = module.PAIR
    candidates = " or ".join(module.label(module.Choice(*tile)) for tile in tiles)
    sheet.code([
        (f"rows, block = choices[shape_name(conv)]    # stage 12's tuned tile: {candidates} on {name} ({cpu}), "
         "float32 sums", False),
        (f"weight, bias = fold(conv, ...)             # bfloat16 pairs [group][kh][kw][ci/{pair}][block][{pair}]: "
         "no scales, no codes", True),
        ("for tile in prange(groups * positions):    # stage 12's tile kernel, for every conv: no Winograd", False),
        ("    sums[rows][block] = 0                  # float32 (stack_floats): in registers", True),
        (f"    for kh, kw, p in range(ci/{pair}): for r in range(rows): pair = x[ho*s + kh, (wo0 + r)*s + kw, p]  "
         f"# {pair} bfloat16s", True),
        (f"        for v in range(0, block, {lanes}): dot_pairs(sums, r * block + v, pair, weight, at + v)   "
         "# one vdpbf16ps", True),
        ("    acc = sums + bias[c]; acc += from_bf16(residual); acc = max(acc, 0)   # float32; a downsample: no "
         "ReLU", True),
        ("    out = to_bf16(acc)                     # rounded once, as it is stored: the next tensor's bfloat16 "
         "bits", True),
        ("photo: to_bf16(image) into the stem's input (INPUT_BF16): no unit, no zero point, no calibration", True),
    ], f"a conv ({previous(stage)})", size=CODE_FONT - 0.5)
    marked = bf16_rounding(sheet, module, stem, lanes, rounding)
    vdpbf16ps(sheet, module, stem, target, marked, int8.QUAD)
    bf16_layouts(sheet, module, example, choices[module.shape_name(example)], example_step.arrays[0], target)
    bf16_output_chain(sheet, module, stem, rounding, counts)
