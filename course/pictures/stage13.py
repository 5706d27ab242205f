"""Stage 13's picture, int8: one vpdpbusd, the byte layouts of the packed weights and of the activations, an
activation's and a weight's codes, the photo's codes and a conv's output loop, drawn for a CPU with AVX-512 VNNI.
Nothing calibrated is drawn: a synthetic conv, seeded, with stand-in ranges.
"""

from dataclasses import dataclass

import numpy as np

from common.architecture import Conv, resnet50
from common.calibration import tensor_names
from common.export_weights import CAFFE_PREPROCESSING, KERAS_BN_EPS
from common.intrinsics import FLOAT32_BITS
from common.stages import stage_module
from common.target import vector_registers
from common.tiles import first_of_each_shape, register_tiles
from course.pictures.shared import (
    ACC_COLOUR,
    CODE_FONT,
    COURSE_VARIANT,
    EDGE,
    GAP,
    MARGIN,
    PALE,
    SMALL,
    SPAN,
    W_COLOUR,
    X86,
    X_COLOUR,
    Sheet,
    example_conv,
    folded,
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

# The CPU its vpdpbusd and tile are drawn for, named to LLVM: Intel's first with AVX-512 VNNI (2019)
VNNI_TARGET = ("AVX-512 VNNI", "cascadelake")
QUANTIZED_SEED = 13  # of the synthetic conv whose weights stage 13's picture folds, and of its codes
SYNTHETIC_QUADS = 2  # that conv's input channels, in quads: the vpdpbusd drawn is its second step
# Stand-ins for the calibrated ranges of a conv's input, output and residual (calibration's differ per photo set)
STAND_IN_RANGES = (4.0, 6.0, 8.0)
WEIGHTS_SHOWN = 8  # one output channel's weights drawn with their codes


def vnni_target(module):
    """(name, LLVM CPU name, bits, registers, lanes, tiles) of VNNI_TARGET, as the stage would size them there."""
    name, cpu = VNNI_TARGET
    bits, registers = vector_registers(X86, cpu, "")
    if bits not in module.VNNI:
        raise AssertionError(f"{cpu}: {bits}-bit vectors, which have no vpdpbusd in the stage's VNNI table")
    lanes = bits // FLOAT32_BITS
    return name, cpu, bits, registers, lanes, register_tiles(registers, lanes)


def stand_in_measured(module) -> dict:
    """What the stage's plan reads beside the weights, as its measure() gives it, but nothing calibrated: every
    activation's unit that of the stand-in range STAND_IN_RANGES[0], and the photo's unit and zero point from
    input_code on the preprocessing of the course's weights (their manifest's)."""
    units = {name: STAND_IN_RANGES[0] / module.U8_MAX for name in tensor_names(COURSE_VARIANT)}
    return {module.UNITS: units, module.INPUT_CODE: module.input_code(CAFFE_PREPROCESSING)}


@dataclass
class Quantized:
    """The synthetic conv of stage 13's picture (a 1x1 conv of SYNTHETIC_QUADS quads of input channels to one
    tile's block of output channels), folded by the stage, and one output pixel of it computed as its kernel does."""

    conv: Conv
    weight: np.ndarray  # OIHW float64, batch norm folded in (as fold computes it, to draw the rounding)
    codes: np.ndarray  # fold's weight codes as [ci / 4][block][4] s8
    weight_scale: np.ndarray
    bias_shift: np.ndarray  # what fold's bias loses when the input is the photo's codes
    x: np.ndarray  # one pixel's u8 input codes, HWC
    sums: list  # the lanes' int32 sums after each quad, plain_quads' (one vpdpbusd each)
    scale: np.ndarray  # the plan's multipliers of the sums (out channels), then of the residual
    bias: np.ndarray  # and its bias, in the output's units
    residual: np.ndarray  # a residual's u8 codes, HWC


def quantized(module, choice, lanes: int) -> Quantized:
    """The synthetic conv, folded for `choice`, its sums on `lanes` lanes and its output loop's arrays as the stage's
    requantization makes them for the stand-in ranges of its input, output and residual."""
    rng = np.random.default_rng(QUANTIZED_SEED)
    quad, block = module.QUAD, choice.block
    conv = Conv("synthetic", "synthetic_bn", SYNTHETIC_QUADS * quad, block, 1, 1, 0, 1, 1)
    raw = rng.normal(0.0, 0.05, (block, conv.in_channels, 1, 1))
    batch_norm = (rng.uniform(0.5, 1.5, block), rng.normal(0.0, 0.1, block), rng.normal(0.0, 0.1, block),
                  rng.uniform(0.5, 1.5, block))
    packed, weight_scale, bias = folded(module, conv, raw, choice, batch_norm)
    unit, zero_point = module.input_code(CAFFE_PREPROCESSING)
    shifted = folded(module, conv, raw, choice, batch_norm, zero_point=zero_point, unit=unit)[2]
    gamma, _, _, var = batch_norm
    weight = raw * (gamma / np.sqrt(var + KERAS_BN_EPS))[:, None, None, None]
    codes = packed.view(np.int8).reshape(SYNTHETIC_QUADS, block, quad)
    if not np.array_equal(np.rint(weight[:, :, 0, 0] / weight_scale[:, None]),
                          codes.transpose(1, 0, 2).reshape(block, -1)):
        raise AssertionError("fold's codes are not the folded weights rounded to their scale")
    x = rng.integers(0, module.U8_MAX + 1, (1, 1, conv.in_channels)).astype(np.uint8)
    sums, steps = np.zeros(lanes, np.int32), []
    for q in range(SYNTHETIC_QUADS):  # the tile kernel's steps for its first pixel and vector: dot_quads' fallback
        for v in range(0, lanes, module.LANES):
            module.plain_quads.py_func(sums, v, x.view(np.int32)[0, 0, q], packed, q * block + v)
        steps.append(sums.copy())
    products = x[0, 0].astype(np.int64).reshape(SYNTHETIC_QUADS, 1, quad) * codes[:, :lanes]
    if not np.array_equal(steps[-1], products.sum(axis=(0, 2))):
        raise AssertionError("plain_quads' sums are not the sums of the codes' products")
    residual = rng.integers(0, module.U8_MAX + 1, (1, 1, block)).astype(np.uint8)
    # the output loop's arrays for this conv, as the kernel gets them, with the stand-in ranges
    x_unit, out_unit, residual_unit = units = tuple(r / module.U8_MAX for r in STAND_IN_RANGES)
    out_bias, scale = module.requantization(weight_scale, bias, units)
    if not (np.allclose(scale, np.append(x_unit * weight_scale, residual_unit) / out_unit)
            and np.allclose(out_bias, bias / out_unit)):
        raise AssertionError("the plan's multipliers and bias are not s_x x s_w / s_out, s_res / s_out and "
                             "bias / s_out, as drawn")
    return Quantized(conv, weight, codes, weight_scale, bias - shifted, x, steps, scale, out_bias, residual)


def output_loop(module, q: Quantized, c: int) -> list[float]:
    """Channel c of the output pixel through the conv template's output loop, in float32 as it runs: the sum, then
    x scale + bias, + residual x its scale, ReLU, + 0.5, the u8 code."""
    block = q.conv.out_channels
    acc = np.float32(q.sums[-1][c]) * q.scale[c] + q.bias[c]
    with_residual = acc + np.float32(q.residual[0, 0, c]) * q.scale[block]
    relu = max(with_residual, np.float32(0.0))
    rounded = relu + np.float32(0.5)
    return [int(q.sums[-1][c]), float(acc), float(with_residual), float(relu), float(rounded),
            int(np.uint8(min(rounded, np.float32(module.U8_MAX))))]


def vpdpbusd(sheet: Sheet, module, q: Quantized, target):
    """One vpdpbusd: the broadcast quad, the lanes' weight codes, each lane's 4 products added to its int32 sum."""
    name, cpu, bits, _, lanes, _ = target
    quad, step = module.QUAD, SYNTHETIC_QUADS - 1
    channels = range(step * quad, (step + 1) * quad)
    before, after = q.sums[-2], q.sums[-1]
    codes = q.codes[step, :lanes]  # [lane][byte]
    x = q.x[0, 0, step * quad:(step + 1) * quad]
    paragraph(sheet, f"One vpdpbusd (dot_quads) on {name} ({cpu}, {bits}-bit vectors): in each of its {lanes} int32 "
              f"lanes, QUAD = {quad} products of a u8 input code and an s8 weight code are added to the lane's sum. "
              f"Drawn: step q = {step} of a synthetic 1x1 conv ({q.conv.in_channels} -> {q.conv.out_channels} "
              "channels, seeded weights folded by the stage's fold), for one output pixel:", gap=2.6)
    h = 2.3
    x0, w, top = lane_columns(sheet, lanes)
    qx = x0 - 8.5
    sheet.text(MARGIN, top - 2 * h, f"quad = x[h, w, {step}]:\nthe u8 codes of one\npixel's channels "
               f"{channels[0]}-{channels[-1]}\n(one int32), broadcast\nto every lane", size=SMALL - 0.5, va="center")
    for k, ci in enumerate(channels):
        y = top - k * h
        sheet.box(qx, y, 4.2, h, face=X_COLOUR)
        sheet.text(qx + 2.1, y - h / 2, str(x[k]), size=SMALL, ha="center")
        sheet.text(qx + 4.6, y - h / 2, f"ci {ci}  x", size=SMALL - 1.5, va="center", color="0.3")
        sheet.cells(x0, y, lanes, w, h, [W_COLOUR if j % 2 == 0 else "#fdd0a2" for j in range(lanes)],
                    [str(c) for c in codes[:, k]], size=SMALL - 0.5)
    sheet.text(x0 + lanes * w, top - quad * h - 0.25, "s8 weight codes: byte k of lane j, of input channel ci and "
               "output channel co j", size=SMALL - 1.5, ha="right", va="top", color="0.3")
    y = top - quad * h - 1.9
    rows = ((f"sum before (step {step - 1}'s)", before, "white"), (f"+ the {quad} products", after - before, PALE),
            ("= the lane's int32 sum", after, ACC_COLOUR))
    for label, values, face in rows:
        sheet.text(x0 - 1, y - h / 2, label, size=SMALL - 0.5, ha="right")
        sheet.cells(x0, y, lanes, w, h, face, [f"{v}" for v in values], size=SMALL - 1)
        y -= h
    sheet.y = y - 1.2
    fma = bits // FLOAT32_BITS
    terms = " + ".join(f"{a} x {b}" for a, b in zip(x, codes[0], strict=True))
    widest = max(resnet50(COURSE_VARIANT).convs, key=lambda c: c.kernel**2 * c.in_channels)
    longest = widest.kernel**2 * widest.in_channels
    largest = longest * module.U8_MAX * module.INT8_MAX
    other = min(module.VNNI)
    paragraph(sheet, f"Lane 0: {terms} = {after[0] - before[0]}, added to {before[0]}: {after[0]}.\n"
              f"Per instruction: {lanes} lanes x QUAD {quad} = {lanes * quad} multiply-adds; a float32 FMA: {bits} / "
              f"FLOAT32_BITS {FLOAT32_BITS} = {fma} lanes x 1 = {fma}: {lanes * quad // fma}x (AVX-VNNI, "
              f"{other} bits: {other // FLOAT32_BITS * quad} vs {other // FLOAT32_BITS})."
              f"\nNo sum overflows: the longest, {longest:,} products ({widest.name}: {widest.kernel}x{widest.kernel}"
              f" x {widest.in_channels}), is at most {longest:,} x {module.U8_MAX} x {module.INT8_MAX} = "
              f"{largest:,} < 2^31.", size=SMALL, gap=GAP)


def int8_layouts(sheet: Sheet, module, conv: Conv, choice, x, target):
    """fold's packed weights and the HWC u8 activations x (as the plan passes them) as the kernel's int32 quads,
    byte by byte, with each index's step."""
    _, _, _, _, lanes, _ = target
    quad, block = module.QUAD, choice.block
    cell, h = 1.45, 2.2
    packed_size = conv.kernel**2 * module.quads(conv.in_channels) * quad * conv.out_channels
    paragraph(sheet, f"The weights of {conv.name} ({conv.kernel}x{conv.kernel}, {conv.in_channels} -> "
              f"{conv.out_channels} channels) as fold packs them for its {module.label(choice)} tile: "
              f"[group][kh][kw][ci/{quad}][block][{quad}] bytes, one flat int32 array of "
              f"{packed_size // quad:,} (in a byte: its input channel ci):", gap=4.4)
    weight_strip(sheet, lanes, block, quad, cell, h, "bytes", f"one vpdpbusd's {lanes * quad} bytes (v = 0)",
                 packed_steps(module, conv, choice, quad))
    codes, quads_view = x.view(np.uint8), x.view(np.int32)
    size, _, channel_quads = quads_view.shape
    paragraph(sheet, f"Its input, as plan passes it: HWC u8 codes, {size}x{size}x{channel_quads * quad} "
              f"with a border of {conv.padding}, which the kernel views as int32 quads x[h][w][ci/{quad}] "
              f"({size}x{size}x{channel_quads}):", gap=4.4)
    input_strip(sheet, quads_view, quad, "quad", "bytes", ("byte", codes.strides[-1]), cell, h)


def number_line(sheet: Sheet, x0, x1, y, low: int, high: int, ticks, marks, colour):
    """An axis of codes from low to high between x0 and x1 at y, its ticks labelled, marks (values) drawn on it;
    returns the function from a code to its x."""
    def at(value):
        return x0 + (float(value) - low) / (high - low) * (x1 - x0)

    sheet.ax.plot([x0, x1], [y, y], color=EDGE, linewidth=1.0)
    for t in ticks:
        sheet.ax.plot([at(t)] * 2, [y + 0.4, y - 0.4], color=EDGE, linewidth=1.0)
        sheet.text(at(t), y - 0.7, str(t), size=SMALL - 1, ha="center", va="top")
    for value in marks:
        sheet.ax.plot([at(value)], [y], marker="o", markersize=4.5, color=colour, markeredgecolor="0.2",
                      markeredgewidth=0.6)
    return at


def quantization(sheet: Sheet, module, q: Quantized, chain: list):
    """One value's code: an activation's (u8, from the output loop's rounding), a weight's (s8, symmetric)."""
    half = (SPAN - 2 * MARGIN - GAP) / 2
    top = sheet.y
    u8, s8 = module.U8_MAX, module.INT8_MAX
    # an activation
    x0 = MARGIN + half + GAP  # the weight's side
    paragraph(sheet, f"An activation (a ReLU's output): x = s_x x q, q = 0..{u8} (u8), s_x = its tensor's "
              f"calibrated range / {u8}", width=half - 4, gap=3.6)
    left = sheet.y
    sheet.y = top
    paragraph(sheet, f"A weight (batch norm folded in): w = s_w[o] x q, q = -{s8}..{s8} (s8), s_w[o] = max "
              f"|w[o]| / {s8}: symmetric, the weight 0 is the code 0", x=x0, width=half, gap=3.6)
    y = min(left, sheet.y)
    clip = 0.17 * half
    at = number_line(sheet, MARGIN + 1, MARGIN + half - clip, y, 0, u8, (0, 64, 128, 192, u8), [chain[3]],
                     ACC_COLOUR)
    sheet.box(MARGIN + half - clip + 0.4, y + 0.8, clip - 0.9, 1.6, face="white", edge="#d62728", hatch="///")
    sheet.text(MARGIN + half - clip / 2, y + 1.1, f"x > range:\n{u8}, clipped", size=SMALL - 1.5, ha="center",
               va="bottom", color="#d62728")
    sheet.text(MARGIN + 1, y + 1.0, "q = x / s_x; the code 0 is the value 0", size=SMALL - 1, va="bottom",
               color="0.3")
    value, rounded, code = chain[3], chain[4], chain[5]
    sheet.arrow((at(value) + 2.5, y - 3.4), (at(value) + 0.2, y - 0.6), colour="0.4")
    sheet.y = y - 3.4
    paragraph(sheet, f"Rounded as the output loop rounds (the chain below): x / s_x = {value:.2f}, + 0.5 = "
              f"{rounded:.2f}, to u8 (truncating): q = {code}. Every x within s_x / 2 of {code} s_x gets that code.",
              x=MARGIN + 1, width=half - 2, size=SMALL)
    bottom = sheet.y
    # a weight
    ws = q.weight_scale[0]
    weights = q.weight[0, :WEIGHTS_SHOWN, 0, 0]
    codes = q.codes.transpose(1, 0, 2).reshape(q.conv.out_channels, -1)[0, :WEIGHTS_SHOWN]
    number_line(sheet, x0 + 1, x0 + half - 1, y, -s8, s8, (-s8, -64, 0, 64, s8), list(codes), W_COLOUR)
    sheet.text(x0 + 1, y + 1.0, "q = w / s_w[0], rounded: output channel 0 of the synthetic conv", size=SMALL - 1,
               va="bottom", color="0.3")
    label_w = 9.0
    w = (half - label_w) / WEIGHTS_SHOWN
    ty = y - 3.2
    for label, values, face in (("w[0, ci]", [f"{v:.4f}" for v in weights], "white"),
                                ("w / s_w[0]", [f"{v / ws:.2f}" for v in weights], "white"),
                                ("q = rint", [str(c) for c in codes], W_COLOUR)):
        sheet.text(x0, ty - 1.0, label, size=SMALL - 1)
        sheet.cells(x0 + label_w, ty, WEIGHTS_SHOWN, w, 2.0, face, values, size=SMALL - 2)
        ty -= 2.0
    sheet.y = ty - 0.7
    paragraph(sheet, f"s_w[0] = {np.abs(q.weight[0]).max():.4f} / {s8} = {ws:.6f} (fold's scale): rounding moves "
              "a weight by at most s_w[0] / 2.", x=x0, width=half, size=SMALL)
    sheet.y = min(sheet.y, bottom) - GAP + 1.0


def photo_codes(sheet: Sheet, module, q: Quantized, unit: float, zero_point: int):
    """The photo's codes: a zero point, and the stem bias's share of it."""
    u8 = module.U8_MAX
    paragraph(sheet, f"The photo can be negative: x = unit x (q - zero point), from input_code on the weights' "
              f"preprocessing: unit = {unit:.4f}, zero point = {zero_point}, so q = 0 is {unit * (0 - zero_point):.1f}"
              f" and q = {u8} is {unit * (u8 - zero_point):.1f} (the border, q = {zero_point}, is 0). The stem's sums "
              "then hold zero point x (the sum of each output channel's codes) too; fold takes its share off the "
              "stem's bias, zero point x unit x s_w[o] x that sum: for channel 0 of the synthetic conv "
              f"{zero_point} x {unit:.4f} x {q.weight_scale[0]:.6f} x {int(q.codes[:, 0].sum())} = "
              f"{q.bias_shift[0]:.3f}.", gap=GAP)


def output_chain(sheet: Sheet, module, q: Quantized, chain: list, counts: dict):
    """The conv template's output loop for one channel: int32 sum to the next tensor's u8 code, with its numbers."""
    block = q.conv.out_channels
    residual = int(q.residual[0, 0, 0])
    paragraph(sheet, "One conv's output loop, as the template computes it, for channel 0 of the synthetic conv's "
              f"pixel, with stand-in ranges {', '.join(f'{r:g}' for r in STAND_IN_RANGES)} for its input, output "
              "and residual (calibrated ranges differ per photo set):", gap=1.6)
    steps = (("int32 sum", f"{chain[0]}", ACC_COLOUR),
             ("float32(sum) x scale[c]\n+ bias[c]", f"{chain[0]} x {q.scale[0]:.6f}\n+ {q.bias[0]:.3f} = "
              f"{chain[1]:.2f}", PALE),
             (f"+ residual x scale[co]\n(co = {block}: s_res / s_out)", f"+ {residual} x {q.scale[block]:.4f}\n= "
              f"{chain[2]:.2f}", PALE),
             ("ReLU:\nmax(acc, 0)", f"{chain[3]:.2f}", PALE),
             (f"+ 0.5, min(., {module.U8_MAX}),\nto u8 (truncating)", f"{chain[4]:.2f} -> {chain[5]}", PALE),
             ("the next tensor's\nu8 code q", f"{chain[5]}", X_COLOUR))
    step_chain(sheet, steps)
    paragraph(sheet, f"scale[c] = s_x x s_w[c] / s_out and bias[c] / s_out: in the output's codes (requantization). In "
              f"the network (plan): {counts['u8']} of the {counts['convs']} convs write u8 codes; the "
              f"{counts['float32']} downsample convs write float32 values (no ReLU: they can be negative; s_out = 1);"
              f" the {counts['residual']} conv3s add a residual, {counts['u8 residual']} as u8 codes, "
              f"{counts['float32 residual']} as a downsample's float32 (scale[co] = 1 / s_out).", gap=GAP)


def stage13(stage, sheet: Sheet):
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    target = vnni_target(module)
    name, cpu, _, _, lanes, tiles = target
    first = first_of_each_shape(arch.convs)
    choices = {shape: module.candidates(conv, tiles)[0] for shape, conv in first.items()}
    plan = planned(stage, choices, stand_in_measured(module))
    convs = [step for step in plan.steps if step.conv is not None]
    residuals = [step.arrays[4].dtype for step in convs if step.constants["add_residual"]]
    counts = {"convs": len(convs), "u8": sum(step.constants["quantize"] for step in convs),
              "float32": sum(not step.constants["quantize"] for step in convs), "residual": len(residuals),
              "u8 residual": residuals.count(np.uint8), "float32 residual": residuals.count(np.float32)}
    (photo,) = [step.constants for step in plan.steps if step.kernel.startswith("input_codes")]
    example = example_conv(arch)
    (example_step,) = [step for step in convs if step.conv == example]
    require(module.CONV, "sums = stack_ints({sums})", "x.view(np.int32)",
            "dot_quads(sums, r * {block} + v, quad, weight, at + v)",
            "np.float32(sums[r * {block} + c]) * scale[group * {block} + c] + bias[group * {block} + c]",
            "residual[ho, wo0 + r, group * {block} + c] * scale[{out_channels}]",
            "min(acc[r, c] + np.float32(0.5), np.float32({u8_max}))")
    q = quantized(module, module.Choice(*tiles[0]), lanes)
    chain = output_loop(module, q, 0)
    quad = module.QUAD
    candidates = " or ".join(module.label(module.Choice(*tile)) for tile in tiles)
    sheet.code([
        (f"rows, block = choices[shape_name(conv)]    # stage 12's tuned tile: {candidates} on {name} ({cpu}), "
         "int32 sums", False),
        (f"weight, scale_w, bias = fold(conv, ...)    # s8 codes -{module.INT8_MAX}..{module.INT8_MAX} per output "
         f"channel, [group][kh][kw][ci/{quad}][block][{quad}]", True),
        ("for tile in prange(groups * positions):    # stage 12's tile kernel, for every conv: no Winograd", False),
        ("    sums[rows][block] = 0                  # int32 (stack_ints): in registers", True),
        (f"    for kh, kw, q in range(ci/{quad}): for r in range(rows): quad = x[ho*s + kh, (wo0 + r)*s + kw, q]  "
         f"# {quad} u8 codes", True),
        (f"        for v in range(0, block, {lanes}): dot_quads(sums, r * block + v, quad, weight, at + v)   "
         "# one vpdpbusd", True),
        ("    acc = float32(sums) * scale[c] + bias[c]; acc += residual * scale[co]; acc = max(acc, 0)   "
         "# the output's units", True),
        (f"    out = u8(min(acc + 0.5, {module.U8_MAX}))   # the next tensor's codes; a downsample conv: float32 acc,"
         " no ReLU", True),
        ("photo: codes image / unit + zero point (input_code); fold takes the zero point's share off the stem's "
         "bias", True),
    ], f"a conv ({previous(stage)})", size=CODE_FONT - 0.5)
    vpdpbusd(sheet, module, q, target)
    int8_layouts(sheet, module, example, choices[module.shape_name(example)], example_step.arrays[0], target)
    quantization(sheet, module, q, chain)
    photo_codes(sheet, module, q, photo["unit"], photo["zero_point"])
    output_chain(sheet, module, q, chain, counts)
