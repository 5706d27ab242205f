"""The chapter "ResNet-50, before stage 1" (stages/README.md): its pictures and its generated text.

    python -m course.network            # draw stages/figures/*.png and fill stages/README.md's markers
    python -m course.network --check    # exit 1, naming every marker whose text is out of date

The chapter explains the network before any stage speeds it up, and every number in it is computed: each
shape and multiply-add count from common/architecture.py (through common/trace.py's list of layers, the one
`make stageN profile` reports), each worked example's result with numpy from the example's inputs below. So
the text cannot drift from the code it explains. The generated text lives between `<!-- network:NAME -->`
and `<!-- /network -->`; the text outside the markers is written by hand and left alone. A marker the
chapter lacks, or one this module does not know, is an error.
"""

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

from common.architecture import EXPANSION, VARIANTS, Bottleneck, Conv, ResNet50, resnet50
from common.errors import UserError
from common.export_weights import KERAS_BN_EPS
from common.paths import REPO
from common.trace import AVGPOOL, GROUPS, HEAD, STEM, Layer, layers

CHAPTER = REPO / "stages" / "README.md"
FIGURES = REPO / "stages" / "figures"
MARKER = re.compile(r"(<!-- network:([\w.-]+) -->\n)(.*?)(<!-- /network -->)", re.S)
# The weights `make weights` exports by default (npm, Keras) are ResNet v1 (common/export_weights.py): the
# chapter draws that variant and compares it with torchvision's v1.5 where they differ.
COURSE_VARIANT = "v1"
OTHER_VARIANT = next(v for v in VARIANTS if v != COURSE_VARIANT)
MEGA = 1_000_000
GIGA = 1_000_000_000
PERCENT = 100
NOTHING = "—"  # an empty table cell, as bench/results/latest.md writes it (tests/test_docs.py wants no blank one)

# --- the worked examples' inputs (small integers, so that every sum can be checked by hand) ---
EXAMPLE_IMAGE = np.array([[1, 2, 0, 3],
                          [4, 1, 2, 0],
                          [0, 3, 1, 2],
                          [2, 0, 4, 1]], dtype=np.float32)  # one channel, 4x4
EXAMPLE_KERNEL = np.array([[1, 0, -1],
                           [2, 0, -2],
                           [1, 0, -1]], dtype=np.float32)  # a vertical-edge detector (Sobel)
EXAMPLE_STRIDES = (1, 2)
SPELLED_OUT = (0, 1)  # the output position whose sum the chapter writes out term by term
# A 1x1 conv on a 2x2 image of 3 channels, with 2 output channels.
POINTWISE_IMAGE = np.array([[[1, 0, 2], [0, 1, 1]],
                            [[3, 1, 0], [1, 2, 1]]], dtype=np.float32)  # HWC
POINTWISE_WEIGHT = np.array([[1, 1, 1],
                             [1, 0, -1]], dtype=np.float32)  # (out, in): the kernel's 1x1 is dropped
# Batch norm on a 2x2 image of 2 channels, with the per-channel statistics a trained network stores.
NORM_IMAGE = np.array([[[2, 10], [4, 14]],
                       [[6, 18], [0, 6]]], dtype=np.float32)  # HWC
NORM_MEAN = np.array([3, 12], dtype=np.float32)
NORM_VAR = np.array([4, 16], dtype=np.float32)
NORM_GAMMA = np.array([1, 0.5], dtype=np.float32)
NORM_BETA = np.array([0, 1], dtype=np.float32)
RELU_IMAGE = np.array([[-2, 1, 0, -0.5],
                       [3, -1, 2, -4]], dtype=np.float32)
POOL_IMAGE = EXAMPLE_IMAGE
AVERAGE_IMAGE = np.array([[[1, 0, 5], [3, 2, 1]],
                          [[2, 4, 0], [6, 2, 2]]], dtype=np.float32)  # HWC, 2x2x3
FC_WEIGHT = np.array([[1, 0, -1],
                      [0.5, 2, 0]], dtype=np.float32)  # (out, in)
FC_BIAS = np.array([1, -2], dtype=np.float32)
MAIN_PATH = np.array([[-3, 1], [2, -1]], dtype=np.float32)  # one channel of F(x), 2x2
SHORTCUT = np.array([[1, 2], [0, 4]], dtype=np.float32)  # the block's input x, same shape
LAYOUT_SHAPE = (2, 3, 4)  # H, W, C of the drawn HWC example
LAYOUT_WEIGHT_SHAPE = (2, 3, 2, 2)  # O, I, H, W of the drawn weight example
LAYOUT_SHOWN = 8  # how many memory cells the text lists


# --- the ops, as the math is written (stage 1's loops compute the same; tests/test_network_chapter.py checks) ---

def pad(x: np.ndarray, padding: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, padding, constant_values=value)


def conv_single(x: np.ndarray, kernel: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """One channel in, one out: the kernel slides over the padded input, a sum of products at each stop."""
    k = kernel.shape[0]
    padded = pad(x, padding)
    size = (padded.shape[0] - k) // stride + 1
    return np.array([[np.sum(padded[i * stride:i * stride + k, j * stride:j * stride + k] * kernel)
                      for j in range(size)] for i in range(size)], dtype=np.float32)


def pool_single(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """Max over each window; the padding is minus infinity, so it never wins."""
    padded = pad(x, padding, -np.inf)
    size = (padded.shape[0] - kernel) // stride + 1
    return np.array([[padded[i * stride:i * stride + kernel, j * stride:j * stride + kernel].max()
                      for j in range(size)] for i in range(size)], dtype=np.float32)


def batch_norm(x: np.ndarray, gamma, beta, mean, var, eps: float) -> np.ndarray:
    return (gamma * (x - mean) / np.sqrt(var + eps) + beta).astype(np.float32)


# --- text helpers ---

def num(value: float) -> str:
    """A number as the chapter prints it: integers without a point, others with up to 3 decimals."""
    value = float(value)
    if value == -np.inf:
        return "-inf"
    return f"{value:.0f}" if value == round(value) else f"{value:.3f}".rstrip("0")


def signed(value: float) -> str:
    """A factor in a written-out sum: negative ones in parentheses."""
    return f"({num(value)})" if value < 0 else num(value)


def grid(a: np.ndarray, title: str) -> list[str]:
    """A 2-D array as right-aligned text columns under a title."""
    texts = [[num(v) for v in row] for row in a]
    width = max(len(t) for row in texts for t in row)
    return [title] + ["  ".join(t.rjust(width) for t in row) for row in texts]


def side_by_side(*blocks: list[str], gap: int = 6) -> str:
    """Text blocks (lists of lines) next to each other, in a fenced block."""
    height = max(len(b) for b in blocks)
    widths = [max(len(line) for line in b) for b in blocks]
    lines = []
    for i in range(height):
        parts = [(b[i] if i < len(b) else "").ljust(w) for b, w in zip(blocks, widths, strict=True)]
        lines.append((" " * gap).join(parts).rstrip())
    return "```\n" + "\n".join(lines) + "\n```\n"


def channels(x: np.ndarray, name: str) -> list[list[str]]:
    """An HWC array as one grid per channel."""
    return [grid(x[:, :, c], f"{name}[:, :, {c}]") for c in range(x.shape[2])]


def table(header: tuple[str, ...], rows: list[tuple], right_from: int = 1) -> str:
    """A Markdown table; columns from `right_from` on are right-aligned, an empty cell shows NOTHING."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) if str(c) else NOTHING for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def hwc(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def millions(macs: int) -> str:
    return f"{macs / MEGA:,.1f} M"


def share(part: int, whole: int) -> str:
    return f"{PERCENT * part / whole:.1f}%"


# --- the network, from common/architecture.py and common/trace.py ---

CONV_KINDS = ("stem 7x7", "1x1", "3x3", "fc")


def kind_of(layer: Layer, arch: ResNet50) -> str | None:
    """The conv kind of a layer that multiplies (None for the pools)."""
    if layer.kind == "fc":
        return "fc"
    if layer.kind != "conv":
        return None
    if layer.name == arch.stem.name:
        return "stem 7x7"
    kernel = next(c.kernel for c in arch.convs if c.name == layer.name)
    return f"{kernel}x{kernel}"


def mac_table(arch: ResNet50) -> dict[str, dict[str, int]]:
    """Multiply-adds by layer group (stem, layer1..4, head) and conv kind, from common/trace.py's layers."""
    counts = {group: dict.fromkeys(CONV_KINDS, 0) for group in GROUPS + (HEAD,)}
    for layer in layers(arch):
        kind = kind_of(layer, arch)
        if kind is not None:
            counts[layer.group][kind] += layer.macs
    return counts


def group_blocks(arch: ResNet50, group: str) -> list[Bottleneck]:
    return [b for b in arch.blocks if b.name.split(".")[0] == group]


def first_downsampling_block(arch: ResNet50) -> Bottleneck:
    """The first block whose stride is not 1: where v1 and v1.5 differ."""
    return next(b for b in arch.blocks if b.downsample is not None and b.downsample.stride != 1)


def conv_label(c: Conv) -> str:
    return f"{c.kernel}x{c.kernel}, {c.in_channels}->{c.out_channels}, stride {c.stride}"


# --- the generated text, one function per marker ---

def conv_text() -> str:
    arch = resnet50(COURSE_VARIANT)
    three = next(c for c in arch.convs if c.kernel == EXAMPLE_KERNEL.shape[0])
    padding = three.padding
    padded = pad(EXAMPLE_IMAGE, padding)
    blocks = [grid(EXAMPLE_IMAGE, f"input x ({hwc(EXAMPLE_IMAGE.shape)})"),
              grid(padded, f"x with padding {padding} (zeros)"), grid(EXAMPLE_KERNEL, "kernel w")]
    outputs = [grid(conv_single(EXAMPLE_IMAGE, EXAMPLE_KERNEL, s, padding), f"output, stride {s}")
               for s in EXAMPLE_STRIDES]
    i, j = SPELLED_OUT
    k = EXAMPLE_KERNEL.shape[0]
    window = padded[i:i + k, j:j + k]
    terms = " + ".join(f"{num(a)}*{signed(b)}" for a, b in zip(window.ravel(), EXAMPLE_KERNEL.ravel(), strict=True))
    value = conv_single(EXAMPLE_IMAGE, EXAMPLE_KERNEL, EXAMPLE_STRIDES[0], padding)[i, j]
    return (side_by_side(*blocks) + side_by_side(*outputs)
            + f"\nThe output at row {i}, column {j} (counting from 0, as numpy does) at stride {EXAMPLE_STRIDES[0]}: "
              f"the window of the padded input whose top left corner is at row {i * EXAMPLE_STRIDES[0]}, column "
              f"{j * EXAMPLE_STRIDES[0]}, times the kernel, cell by cell, summed:\n\n"
              f"    {terms} = {num(value)}\n\n"
              f"The padding {padding} and the 3x3 kernel are those of ResNet-50's 3x3 convs "
              f"(e.g. `{three.name}`: {conv_label(three)}, padding {padding}).\n")


def pointwise_text() -> str:
    out = np.einsum("hwi,oi->hwo", POINTWISE_IMAGE, POINTWISE_WEIGHT)
    pixels = POINTWISE_IMAGE.reshape(-1, POINTWISE_IMAGE.shape[2])
    product = pixels @ POINTWISE_WEIGHT.T
    return (side_by_side(*channels(POINTWISE_IMAGE, "x"), grid(POINTWISE_WEIGHT, "w (out x in)"))
            + side_by_side(*channels(out, "out"))
            + "\nThe same numbers as one matrix product, pixels as rows (x reshaped to "
              f"{hwc(pixels.shape)}) times w transposed ({hwc(POINTWISE_WEIGHT.T.shape)}):\n\n"
            + side_by_side(grid(pixels, "pixels"), grid(POINTWISE_WEIGHT.T, "w.T"), grid(product, "pixels @ w.T")))


def batchnorm_text() -> str:
    out = batch_norm(NORM_IMAGE, NORM_GAMMA, NORM_BETA, NORM_MEAN, NORM_VAR, KERAS_BN_EPS)
    stats = table(("channel", "mean", "var", "gamma", "beta"),
                  [(c, num(NORM_MEAN[c]), num(NORM_VAR[c]), num(NORM_GAMMA[c]), num(NORM_BETA[c]))
                   for c in range(len(NORM_MEAN))])
    c = len(NORM_MEAN) - 1
    first = NORM_IMAGE[0, 0, c]
    return (stats + f"\neps = {KERAS_BN_EPS:g} (the value the Keras weights were trained with).\n\n"
            + side_by_side(*channels(NORM_IMAGE, "x"), *channels(out, "y"))
            + f"\nFor example channel {c} at (0, 0): {num(NORM_GAMMA[c])} * ({num(first)} - {num(NORM_MEAN[c])}) "
              f"/ sqrt({num(NORM_VAR[c])} + {KERAS_BN_EPS:g}) + {num(NORM_BETA[c])} = {num(out[0, 0, c])}.\n")


def relu_text() -> str:
    return side_by_side(grid(RELU_IMAGE, "x"), grid(np.maximum(RELU_IMAGE, 0), "relu(x) = max(x, 0)"))


def maxpool_text() -> str:
    pool = resnet50(COURSE_VARIANT).pool
    out = pool_single(POOL_IMAGE, pool.kernel, pool.stride, pool.padding)
    return (side_by_side(grid(pad(POOL_IMAGE, pool.padding, -np.inf), f"x with padding {pool.padding} (-inf)"),
                         grid(out, f"max pool {pool.kernel}x{pool.kernel}, stride {pool.stride}"))
            + f"\nThe window, stride and padding are ResNet-50's own max pool's ({pool.kernel}x{pool.kernel}, "
              f"stride {pool.stride}, padding {pool.padding}): it halves the height and the width, "
              f"{pool.in_size}x{pool.in_size} to {pool.out_size}x{pool.out_size} in the network.\n")


def avgpool_text() -> str:
    out = fc_input()
    last = resnet50(COURSE_VARIANT).blocks[-1].conv3
    return (side_by_side(*channels(AVERAGE_IMAGE, "x"), grid(out[None, :], "mean per channel"))
            + f"\nIn the network it turns layer4's {last.out_size}x{last.out_size}x{last.out_channels} output "
              f"into {last.out_channels} numbers, one per channel.\n")


def fc_input() -> np.ndarray:
    """The fc example starts where the network's fc does: from the average pool's output."""
    return AVERAGE_IMAGE.mean(axis=(0, 1))


def fc_text() -> str:
    x = fc_input()
    out = FC_WEIGHT @ x + FC_BIAS
    fc = resnet50(COURSE_VARIANT).fc
    rows = [f"out[{o}] = " + " + ".join(f"{signed(w)}*{signed(v)}" for w, v in zip(FC_WEIGHT[o], x, strict=True))
            + f" + {signed(FC_BIAS[o])} = {num(out[o])}" for o in range(len(out))]
    return (side_by_side(grid(x[:, None], "x (the averages above)"), grid(FC_WEIGHT, "weight (out x in)"),
                         grid(FC_BIAS[:, None], "bias"), grid(out[:, None], "weight @ x + bias"))
            + "\n" + "".join(f"    {r}\n" for r in rows)
            + f"\nResNet-50's fc has a {fc.out_features}x{fc.in_features} weight: {fc.in_features} averages in, "
              f"{fc.out_features} class scores (logits) out, {millions(fc.macs)} multiply-adds.\n")


def add_text() -> str:
    total = MAIN_PATH + SHORTCUT
    return side_by_side(grid(MAIN_PATH, "F(x), the block's convs"), grid(SHORTCUT, "x, the shortcut"),
                        grid(total, "F(x) + x"), grid(np.maximum(total, 0), "relu(F(x) + x)"))


def layouts_text() -> str:
    height, width, chans = LAYOUT_SHAPE
    x = np.arange(np.prod(LAYOUT_SHAPE)).reshape(LAYOUT_SHAPE)
    steps = tuple(s // x.itemsize for s in x.strides)
    listed = ", ".join(f"x[{h},{w},{c}]" for h, w, c in np.ndindex(*LAYOUT_SHAPE))
    listed = ", ".join(listed.split(", ")[:LAYOUT_SHOWN])
    arch = resnet50(COURSE_VARIANT)
    conv = next(c for c in arch.convs if c.kernel > 1 and c != arch.stem)
    oihw = np.empty((conv.out_channels, conv.in_channels, conv.kernel, conv.kernel), dtype=np.float32)
    ohwi = np.ascontiguousarray(oihw.transpose(0, 2, 3, 1))
    rows = [(name, f"`{layout}`", hwc(a.shape), ", ".join(str(s // a.itemsize) for s in a.strides))
            for name, layout, a in (("activation x", "HWC", x), (f"`{conv.name}` weight, as exported", "OIHW", oihw),
                                    ("the same weight, transposed (stages 2 on)", "OHWI", ohwi))]
    return (f"An HWC array of shape {hwc(LAYOUT_SHAPE)} (`np.arange` numbers its cells in memory order) keeps "
            f"x[h, w, c] at offset h*{steps[0]} + w*{steps[1]} + c*{steps[2]}: the memory holds {listed}, ... "
            f"The channel index varies fastest, the row index slowest.\n\n"
            + table(("array", "layout", "shape", "step of each index in memory (floats)"), rows, right_from=4))


def stem_text() -> str:
    arch = resnet50(COURSE_VARIANT)
    stem, pool = arch.stem, arch.pool
    rows = [("input image", "", "", hwc((stem.in_size, stem.in_size, stem.in_channels)), ""),
            (f"`{stem.name}` + BN + ReLU", f"{stem.kernel}x{stem.kernel}, {stem.out_channels} filters",
             f"{stem.stride} / {stem.padding}", hwc((stem.out_size, stem.out_size, stem.out_channels)),
             millions(stem.macs)),
            (f"`{pool.name}`", f"{pool.kernel}x{pool.kernel} max", f"{pool.stride} / {pool.padding}",
             hwc((pool.out_size, pool.out_size, pool.channels)), "")]
    return table(("step", "kernel", "stride / padding", "output (HWC)", "multiply-adds"), rows, right_from=3)


def block_text() -> str:
    rows = []
    for variant in (COURSE_VARIANT, OTHER_VARIANT):
        block = first_downsampling_block(resnet50(variant))
        for c in block.convs:
            role = "projection shortcut" if c == block.downsample else c.name.rsplit(".", 1)[1]
            rows.append((variant, f"`{c.name}` ({role})", conv_label(c),
                         f"{shape_of(c, 'in')} -> {shape_of(c, 'out')}", millions(c.macs)))
        rows.append((variant, "**the block**", "", "", f"**{millions(sum(c.macs for c in block.convs))}**"))
    return table(("variant", "conv", "kernel, channels, stride", "input -> output (HWC)", "multiply-adds"),
                 rows, right_from=4)


def groups_text() -> str:
    rows = []
    for variant in (COURSE_VARIANT, OTHER_VARIANT):
        arch = resnet50(variant)
        for group in GROUPS[1:]:
            blocks = group_blocks(arch, group)
            first, last = blocks[0], blocks[-1]
            macs = sum(c.macs for b in blocks for c in b.convs)
            rows.append((variant, group, len(blocks), first.conv2.out_channels,
                         hwc((first.conv1.in_size, first.conv1.in_size, first.conv1.in_channels)),
                         hwc((last.conv3.out_size, last.conv3.out_size, last.conv3.out_channels)),
                         f"`{first.name}`: {'conv1' if first.conv1.stride != 1 else 'conv2'}"
                         if first.downsample.stride != 1 else "none (stride 1)", millions(macs)))
    return table(("variant", "group", "blocks", "width (3x3 channels)", "input", "output",
                  "stride 2 in", "multiply-adds"), rows, right_from=2)


def macs_text() -> str:
    arch, other = resnet50(COURSE_VARIANT), resnet50(OTHER_VARIANT)
    counts, other_counts = mac_table(arch), mac_table(other)
    rows = [(group, *(millions(counts[group][k]) if counts[group][k] else "" for k in CONV_KINDS),
             millions(sum(counts[group].values())), share(sum(counts[group].values()), arch.macs),
             millions(sum(other_counts[group].values())))
            for group in counts]
    totals = {k: sum(counts[g][k] for g in counts) for k in CONV_KINDS}
    rows.append(("**all**", *(f"**{millions(totals[k])}**" for k in CONV_KINDS), f"**{millions(arch.macs)}**",
                 "100%", f"**{millions(other.macs)}**"))
    rows.append(("share", *(share(totals[k], arch.macs) for k in CONV_KINDS), "", "", ""))
    header = ("group", *(f"{k} ({COURSE_VARIANT})" for k in CONV_KINDS), f"all ({COURSE_VARIANT})", "share",
              f"all ({OTHER_VARIANT})")
    return table(header, rows)


def macs_summary_text() -> str:
    arch, other = resnet50(COURSE_VARIANT), resnet50(OTHER_VARIANT)
    counts = mac_table(arch)
    totals = {k: sum(counts[g][k] for g in counts) for k in CONV_KINDS}
    count = {k: sum(1 for layer in layers(arch) if kind_of(layer, arch) == k) for k in CONV_KINDS}
    size = arch.stem.in_size
    return (f"ResNet-50 {COURSE_VARIANT} does {arch.macs / GIGA:.2f} billion multiply-adds per {size}x{size} image "
            f"({other.macs / GIGA:.2f} billion in {OTHER_VARIANT}). Its {count['1x1']} 1x1 convs do "
              f"{share(totals['1x1'], arch.macs)} of them, its {count['3x3']} 3x3 convs "
              f"{share(totals['3x3'], arch.macs)}, the stem {share(totals['stem 7x7'], arch.macs)} and the fc "
              f"layer {share(totals['fc'], arch.macs)}; batch norm, ReLU, the pools and the adds multiply "
              f"nothing worth counting next to them.\n")


def overview_text() -> str:
    arch = resnet50(COURSE_VARIANT)
    size = arch.stem.in_size
    return (f"ResNet-50 (He et al., \"Deep Residual Learning for Image Recognition\", 2015) takes a colour photo "
            f"scaled to {size}x{size} pixels, {hwc((size, size, arch.stem.in_channels))} numbers, and returns "
            f"{arch.fc.out_features} scores, one per class of the ImageNet collection of labelled photos.\n")


def facts_text() -> str:
    arch = resnet50(COURSE_VARIANT)
    projections = [b.downsample for b in arch.blocks if b.downsample is not None]
    longest_path = [arch.stem, *(c for b in arch.blocks for c in (b.conv1, b.conv2, b.conv3)), arch.fc]
    last = arch.blocks[-1].conv3
    repeats = ", ".join(str(len(group_blocks(arch, g))) for g in GROUPS[1:])
    return (f"In all it has {len(arch.convs)} convolutions (the stem, three in each of the {len(arch.blocks)} "
            f"bottleneck blocks, and {len(projections)} projection shortcuts) and one fully connected layer. The "
            f"layer groups have {repeats} blocks. The \"50\" counts the layers with weights on the longest path "
            f"from the photo to the answer: the stem, the blocks' three convs each and the fc, {len(longest_path)} "
            f"(the shortcuts are beside it; {len(arch.convs) + 1} layers with weights in all). Height and width "
            f"shrink from {arch.stem.in_size}x{arch.stem.in_size} to {last.out_size}x{last.out_size} on the way, "
            f"while the channels grow from {arch.stem.in_channels} to {last.out_channels}.\n")

def bottleneck_steps_text() -> str:
    arch = resnet50(COURSE_VARIANT)
    block = next(b for b in arch.blocks if b.downsample is None)
    c1, c2, c3 = block.conv1, block.conv2, block.conv3
    return (f"1. a 1x1 conv that reduces the channels to the block's *width* (in `{block.name}`, "
            f"{c1.in_channels} to {c1.out_channels}): the bottleneck;\n"
            f"2. a {c2.kernel}x{c2.kernel} conv at that width ({c2.in_channels} to {c2.out_channels}), the only one "
            f"that looks at neighbouring pixels;\n"
            f"3. a 1x1 conv that expands the channels back to {EXPANSION}x the width ({c3.in_channels} to "
            f"{c3.out_channels});\n")


def convs_text() -> str:
    arch = resnet50(COURSE_VARIANT)
    rows = []
    for layer in layers(arch):
        kind = kind_of(layer, arch)
        conv = next((c for c in arch.convs if c.name == layer.name), None)
        detail = conv_label(conv) if conv else (f"{layer.in_shape[0]} -> {layer.out_shape[0]}" if kind == "fc" else "")
        rows.append((f"`{layer.name}`", layer.group, kind or layer.kind, detail, hwc(layer.in_shape),
                     hwc(layer.out_shape), millions(layer.macs) if layer.macs else ""))
    return ("<details><summary>All layers of ResNet-50 " + COURSE_VARIANT + ", in forward order (from "
            "<code>common/trace.py</code>'s <code>layers()</code>, the list <code>make stageN profile</code> "
            "reports)</summary>\n\n"
            + table(("layer", "group", "kind", "kernel, channels, stride", "input", "output", "multiply-adds"),
                    rows, right_from=6)
            + "\n</details>\n")


def why_text() -> str:
    """The bottleneck's saving: its three convs against one 3x3 conv over all of the block's channels."""
    arch = resnet50(COURSE_VARIANT)
    block = next(b for b in arch.blocks if b.downsample is None)
    wide = block.conv3.out_channels
    plain = Conv("plain", "", wide, wide, block.conv2.kernel, 1, block.conv2.padding, block.conv2.in_size,
                 block.conv2.out_size)
    bottleneck = sum(c.macs for c in block.convs)
    rows = [(f"`{c.name}`", conv_label(c), millions(c.macs)) for c in block.convs]
    rows.append(("**the bottleneck block**", "", f"**{millions(bottleneck)}**"))
    rows.append((f"one {plain.kernel}x{plain.kernel} conv on all {wide} channels instead", conv_label(plain),
                 millions(plain.macs)))
    return (f"The 1x1 convs divide the channels by {EXPANSION} on the way in and multiply them by {EXPANSION} "
            f"on the way out, so the 3x3 conv has {EXPANSION}x fewer channels in and {EXPANSION}x fewer out: "
            f"1/{EXPANSION ** 2} of the multiply-adds. In `{block.name}`:\n\n"
            + table(("conv", "kernel, channels, stride", "multiply-adds"), rows, right_from=2)
            + f"\nAt {plain.out_size}x{plain.out_size}, one {plain.kernel}x{plain.kernel} conv over the block's "
              f"{wide} channels would cost {plain.macs / bottleneck:.1f}x the whole bottleneck block; the \"basic\" "
              f"block of the shallower ResNet-18 and ResNet-34 has two 3x3 convs.\n")


SECTIONS: dict[str, Callable[[], str]] = {
    "conv": conv_text, "pointwise": pointwise_text, "batchnorm": batchnorm_text, "relu": relu_text,
    "maxpool": maxpool_text, "avgpool": avgpool_text, "fc": fc_text, "add": add_text, "layouts": layouts_text,
    "facts": facts_text, "stem": stem_text, "block": block_text, "groups": groups_text, "macs": macs_text,
    "macs-summary": macs_summary_text, "convs": convs_text, "why": why_text, "overview": overview_text,
    "bottleneck-steps": bottleneck_steps_text,
}


# --- the pictures ---

DPI = 110
WIDTH = 9.0  # inches: about 1000 pixels at DPI, a little wider than GitHub's README column, which scales it down
FONT = 9
SMALL = 7.5
KIND_COLOURS = {"stem 7x7": "#8c564b", "1x1": "#1f77b4", "3x3": "#ff7f0e", "fc": "#2ca02c"}
GROUP_COLOURS = {STEM: "#e7d4c9", "layer1": "#cfe3f3", "layer2": "#d5ecd0", "layer3": "#fbe0c3",
                 "layer4": "#e6d6ee", HEAD: "#eeeeee"}
HIGHLIGHTS = ("#d62728", "#1f77b4")  # the two windows drawn on the conv picture
# The output positions (row, column) whose windows the conv picture draws, per stride.
EXAMPLE_WINDOWS = {1: ((0, 1), (2, 2)), 2: ((0, 0), (0, 1))}
WINDOW_INSETS = (0.06, 0.16)  # so that two windows sharing a column show both edges
BOX_EDGE = "0.25"


def save(fig: Figure, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def cells(ax, a: np.ndarray, x0: float, y0: float, title: str, colours=None):
    """Draw a 2-D array as a grid of unit squares with its numbers, top left corner at (x0, y0), rows going
    down; `colours` (one per cell) fills them."""
    rows, cols = a.shape
    for i in range(rows):
        for j in range(cols):
            face = colours[i][j] if colours is not None else "white"
            ax.add_patch(Rectangle((x0 + j, y0 - i - 1), 1, 1, facecolor=face, edgecolor=BOX_EDGE, linewidth=0.8))
            ax.text(x0 + j + 0.5, y0 - i - 0.5, num(a[i, j]), ha="center", va="center", fontsize=FONT)
    ax.text(x0 + cols / 2, y0 + 0.35, title, ha="center", va="bottom", fontsize=FONT)


def blank(fig: Figure):
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_aspect("equal")
    return ax


def conv_figure(directory: Path) -> Path:
    """The padded input with two windows drawn in, the kernel, and the outputs the windows give, per stride."""
    arch = resnet50(COURSE_VARIANT)
    padding = next(c for c in arch.convs if c.kernel == EXAMPLE_KERNEL.shape[0]).padding
    k = EXAMPLE_KERNEL.shape[0]
    padded = pad(EXAMPLE_IMAGE, padding)
    n = padded.shape[0]
    fig = Figure(figsize=(WIDTH, WIDTH * 0.62))
    ax = blank(fig)
    gap = 2.0
    for row, stride in enumerate(EXAMPLE_STRIDES):
        top = -row * (n + gap)
        out = conv_single(EXAMPLE_IMAGE, EXAMPLE_KERNEL, stride, padding)
        windows = EXAMPLE_WINDOWS[stride]
        colours = [["0.88" if not (padding <= i < n - padding and padding <= j < n - padding) else "white"
                    for j in range(n)] for i in range(n)]
        cells(ax, padded, 0, top, f"input, zero padding {padding} (grey), stride {stride}", colours)
        out_colours = [["white"] * out.shape[1] for _ in range(out.shape[0])]
        for (i, j), colour, inset in zip(windows, HIGHLIGHTS, WINDOW_INSETS, strict=True):
            ax.add_patch(Rectangle((j * stride + inset, top - i * stride - k + inset), k - 2 * inset, k - 2 * inset,
                                   fill=False, edgecolor=colour, linewidth=2.5))
            out_colours[i][j] = colour + "55"
        cells(ax, EXAMPLE_KERNEL, n + 1.5, top, f"kernel ({k}x{k})")
        ax.text(n + 1.5 + k + 0.9, top - k / 2, "=", fontsize=FONT * 2, ha="center", va="center")
        cells(ax, out, n + k + 3, top, f"output ({hwc(out.shape)})", out_colours)
        for (i, j), colour in zip(windows, HIGHLIGHTS, strict=True):
            ax.text(n + k + 3 + out.shape[1] + 0.4, top - 0.5 - windows.index((i, j)) * 1.2,
                    f"({i},{j}): window from row {i * stride}, column {j * stride}", color=colour,
                    fontsize=FONT, va="center")
        ax.text(n + 1.5 + k / 2, top - k - 0.9, f"multiply cell by cell,\nadd the {k * k} products",
                ha="center", va="top", fontsize=SMALL)
    ax.set_xlim(-0.5, n + k + 3 + out.shape[1] + 9)
    ax.set_ylim(-(len(EXAMPLE_STRIDES) - 1) * (n + gap) - n - 0.5, 1.2)
    return save(fig, directory, "conv")


CHANNEL_COLOURS = ("#fdd49e", "#a6dba0", "#9ecae1", "#d4b9da")  # one per channel of the layout examples
STRIP_CELL = 0.62  # width of one memory cell in the layout picture, in grid units


def strip(ax, y: float, entries: list[tuple[str, str]], title: str, groups: list[tuple[int, int, str]] = ()):
    """One row of memory cells (label, colour) from address 0 on, with brackets under named runs of cells."""
    for n, (label, colour) in enumerate(entries):
        ax.add_patch(Rectangle((n * STRIP_CELL, y - 1), STRIP_CELL, 1, facecolor=colour, edgecolor=BOX_EDGE,
                               linewidth=0.6))
        ax.text((n + 0.5) * STRIP_CELL, y - 0.5, label, ha="center", va="center", fontsize=SMALL, rotation=90)
        ax.text((n + 0.5) * STRIP_CELL, y + 0.1, str(n), ha="center", va="bottom", fontsize=SMALL - 1, color="0.4")
    ax.text(0, y + 0.75, title, ha="left", va="bottom", fontsize=FONT)
    for start, stop, name in groups:
        x0, x1 = start * STRIP_CELL + 0.05, stop * STRIP_CELL - 0.05
        ax.plot([x0, x0, x1, x1], [y - 1.15, y - 1.3, y - 1.3, y - 1.15], color="0.3", linewidth=0.8)
        ax.text((x0 + x1) / 2, y - 1.4, name, ha="center", va="top", fontsize=SMALL)


def layouts_figure(directory: Path) -> Path:
    """HWC: the tensor's channel planes numbered by memory address, then the memory itself; OIHW and OHWI:
    the same weights in memory in both orders, coloured by input channel."""
    height, width, chans = LAYOUT_SHAPE
    address = np.arange(np.prod(LAYOUT_SHAPE)).reshape(LAYOUT_SHAPE)
    fig = Figure(figsize=(WIDTH, WIDTH * 0.78))
    ax = blank(fig)
    for c in range(chans):
        plane = address[:, :, c]
        cells(ax, plane, c * (width + 1), 0, f"channel c={c}", [[CHANNEL_COLOURS[c]] * width] * height)
    ax.text(chans * (width + 1), -height / 2, f"HWC activation, H={height}, W={width}, C={chans}:\n"
            "each cell shows its address in memory\n(rows h down, columns w across)", fontsize=FONT, va="center")
    hwc_cells = [(f"{h},{w},{c}", CHANNEL_COLOURS[c]) for h, w, c in np.ndindex(*LAYOUT_SHAPE)]
    pixels = [(p * chans, (p + 1) * chans, f"pixel ({p // width},{p % width})") for p in range(height * width)]
    top = -height - 2.2
    strip(ax, top, hwc_cells, "HWC in memory (label h,w,c): the channel index c varies fastest, "
          "then w, then h; one pixel's channels sit side by side", pixels)
    o_count, i_count, kh_count, kw_count = LAYOUT_WEIGHT_SHAPE
    taps = kh_count * kw_count
    oihw = [(f"{o},{i},{a},{b}", CHANNEL_COLOURS[i]) for o, i, a, b in np.ndindex(*LAYOUT_WEIGHT_SHAPE)]
    ohwi = [(f"{o},{a},{b},{i}", CHANNEL_COLOURS[i])
            for o, a, b, i in np.ndindex(o_count, kh_count, kw_count, i_count)]
    per_o = i_count * taps
    strip(ax, top - 4.2, oihw, f"OIHW weights, O={o_count}, I={i_count}, {kh_count}x{kw_count} kernel (label o,i,h,w; "
          "colour: input channel i): a whole kernel plane per input channel",
          [(o * per_o + i * taps, o * per_o + (i + 1) * taps, f"o={o}, i={i}")
           for o in range(o_count) for i in range(i_count)])
    strip(ax, top - 8.4, ohwi, "OHWI, the same weights (label o,h,w,i): the input channels of one kernel tap "
          "side by side, as in HWC", [(o * per_o + t * i_count, o * per_o + (t + 1) * i_count,
                                       f"o={o}, tap {t // kw_count},{t % kw_count}")
                                      for o in range(o_count) for t in range(taps)])
    ax.set_xlim(-0.3, max(len(hwc_cells), len(oihw)) * STRIP_CELL + 0.3)
    ax.set_ylim(top - 10.2, 1.2)
    return save(fig, directory, "layouts")


STRIDE_EDGE = "#d62728"  # the conv that halves the image is outlined in this colour


def box(ax, x: float, y: float, w: float, h: float, text: str, face: str = "white", edge: str = BOX_EDGE,
        fontsize: float = FONT, linewidth: float = 1.0):
    """A rounded box centred on (x, y) with its text."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=face, edgecolor=edge, linewidth=linewidth))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def arrow(ax, start: tuple[float, float], end: tuple[float, float], label: str = "", style: str = "-|>"):
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": style, "color": "0.2", "linewidth": 1.0,
                                                       "shrinkA": 0, "shrinkB": 0})
    if label:
        ax.text((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2, label, ha="left", va="center",
                fontsize=SMALL, color="0.3")


def shape_of(c: Conv, side: str) -> str:
    return hwc((c.in_size, c.in_size, c.in_channels) if side == "in" else (c.out_size, c.out_size, c.out_channels))


def conv_box_text(c: Conv, relu: bool) -> str:
    return (f"{c.kernel}x{c.kernel} conv, {c.in_channels} -> {c.out_channels}\nstride {c.stride}, "
            f"+ BN{' + ReLU' if relu else ''}")


def draw_block(ax, x: float, block: Bottleneck, title: str):
    """One bottleneck block as a column: the main path down the middle, the shortcut to its right."""
    main_w, box_h, step = 2.0, 0.62, 1.25
    shortcut_x = x + 1.8
    y = 0.0
    ax.text(x + 0.25, y + 0.55, title, ha="center", va="bottom", fontsize=FONT, fontweight="bold")
    ax.text(x, y, f"input {shape_of(block.conv1, 'in')}", ha="center", va="center", fontsize=FONT)
    previous, label = y - 0.2, ""
    for c, relu in ((block.conv1, True), (block.conv2, True), (block.conv3, False)):
        y -= step
        arrow(ax, (x, previous), (x, y + box_h / 2), label)
        edge, width = (STRIDE_EDGE, 2.0) if c.stride != 1 else (BOX_EDGE, 1.0)
        box(ax, x, y, main_w, box_h, conv_box_text(c, relu), GROUP_COLOURS[block.name.split(".")[0]], edge,
            linewidth=width)
        previous, label = y - box_h / 2, shape_of(c, "out")
    y -= step * 0.8
    radius = 0.18
    arrow(ax, (x, previous), (x, y + radius), label)
    ax.add_patch(Circle((x, y), radius, facecolor="white", edgecolor="0.2"))
    ax.text(x, y, "+", ha="center", va="center", fontsize=FONT + 2)
    shortcut_top = -0.2
    ax.plot([x + 0.95, shortcut_x, shortcut_x], [0.0, 0.0, shortcut_top], color="0.2", linewidth=1.0)
    if block.downsample is not None:
        d = block.downsample
        middle = (shortcut_top + y) / 2
        arrow(ax, (shortcut_x, shortcut_top), (shortcut_x, middle + box_h))
        edge, width = (STRIDE_EDGE, 2.0) if d.stride != 1 else (BOX_EDGE, 1.0)
        box(ax, shortcut_x, middle, 1.05, box_h * 2, f"projection\n{d.kernel}x{d.kernel} conv\n{d.in_channels} -> "
            f"{d.out_channels}\nstride {d.stride}, + BN", "white", edge, fontsize=SMALL, linewidth=width)
        ax.plot([shortcut_x, shortcut_x], [middle - box_h, y], color="0.2", linewidth=1.0)
    else:
        ax.plot([shortcut_x, shortcut_x], [shortcut_top, y], color="0.2", linewidth=1.0)
        ax.text(shortcut_x + 0.08, (shortcut_top + y) / 2, "identity:\nx itself", ha="left", va="center",
                fontsize=SMALL)
    arrow(ax, (shortcut_x, y), (x + radius, y))
    y_out = y - step * 0.75
    arrow(ax, (x, y - radius), (x, y_out + 0.15), "ReLU")
    ax.text(x, y_out, f"output {shape_of(block.conv3, 'out')}", ha="center", va="center", fontsize=FONT)
    return y_out


def bottleneck_figure(directory: Path) -> Path:
    """The first downsampling block in both variants, and the identity block that follows it."""
    course, other = resnet50(COURSE_VARIANT), resnet50(OTHER_VARIANT)
    first = first_downsampling_block(course)
    following = course.blocks[course.blocks.index(first) + 1]
    columns = ((first, f"{first.name}, {COURSE_VARIANT}"),
               (first_downsampling_block(other), f"{first.name}, {OTHER_VARIANT}"),
               (following, f"{following.name} (both variants)"))
    spacing = 4.0
    fig = Figure(figsize=(WIDTH, WIDTH * 0.72))
    ax = blank(fig)
    bottom = min(draw_block(ax, i * spacing, block, title) for i, (block, title) in enumerate(columns))
    ax.text(spacing, bottom - 0.55, "red outline: the conv with stride 2, which halves height and width",
            ha="center", va="center", fontsize=SMALL, color=STRIDE_EDGE)
    ax.set_xlim(-1.2, (len(columns) - 1) * spacing + 2.5)
    ax.set_ylim(bottom - 0.8, 1.0)
    return save(fig, directory, "bottleneck")


def block_box_text(block: Bottleneck) -> str:
    convs = "\n".join(f"{c.kernel}x{c.kernel}, {c.out_channels}" for c in (block.conv1, block.conv2, block.conv3))
    return f"{block.name}\n{convs}" + ("\n+ projection" if block.downsample is not None else "")


def network_figure(directory: Path) -> Path:
    """The whole network, one row per part: stem, the four layer groups block by block, the head."""
    arch = resnet50(COURSE_VARIANT)
    stem, pool, fc = arch.stem, arch.pool, arch.fc
    last = arch.blocks[-1].conv3
    box_w, box_h, gap, label_w = 1.05, 1.25, 0.22, 1.55
    rows = [[(f"image\n{shape_of(stem, 'in')}", "white", False),
             (f"{stem.name}\n{stem.kernel}x{stem.kernel} conv, {stem.out_channels}\nstride {stem.stride}\n+ BN + ReLU",
              GROUP_COLOURS[STEM], True),
             (f"{pool.name}\n{pool.kernel}x{pool.kernel} max,\nstride {pool.stride}", GROUP_COLOURS[STEM], True)]]
    labels = [f"stem\nout {hwc((pool.out_size, pool.out_size, pool.channels))}"]
    for group in GROUPS[1:]:
        blocks = group_blocks(arch, group)
        rows.append([(block_box_text(b), GROUP_COLOURS[group], any(c.stride != 1 for c in b.convs)) for b in blocks])
        labels.append(f"{group}\nout {shape_of(blocks[-1].conv3, 'out')}")
    rows.append([(f"{AVGPOOL}\nglobal average\n{shape_of(last, 'out')}\n-> {last.out_channels}", GROUP_COLOURS[HEAD],
                  False),
                 (f"{fc.name}\n{fc.in_features} -> {fc.out_features}", GROUP_COLOURS[HEAD], False),
                 (f"{fc.out_features} logits:\none score\nper class", "white", False)])
    labels.append("head")
    longest = max(len(r) for r in rows)
    row_step = box_h + 0.55
    fig = Figure(figsize=(WIDTH, WIDTH * 0.95))
    ax = blank(fig)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = -r * row_step
        ax.text(0, y, label, ha="left", va="center", fontsize=FONT, fontweight="bold")
        for i, (text, face, halves) in enumerate(row):
            x = label_w + i * (box_w + gap) + box_w / 2
            edge, width = (STRIDE_EDGE, 2.0) if halves else (BOX_EDGE, 1.0)
            box(ax, x, y, box_w, box_h, text, face, edge, fontsize=SMALL, linewidth=width)
            if i:
                arrow(ax, (x - box_w / 2 - gap, y), (x - box_w / 2, y))
        if r + 1 < len(rows):
            right = label_w + (len(row) - 1) * (box_w + gap) + box_w
            first = label_w + box_w / 2
            mid = y - box_h / 2 - (row_step - box_h) / 2
            ax.plot([right, right + gap / 2, right + gap / 2, first, first], [y, y, mid, mid, mid],
                    color="0.2", linewidth=1.0)
            arrow(ax, (first, mid), (first, y - row_step + box_h / 2))
    ax.text(label_w, -len(rows) * row_step + box_h / 2 - 0.15,
            f"ResNet-50 {COURSE_VARIANT}; red outline: halves height and width (stride 2). "
            "Block boxes list their three convs (kernel, output channels).", fontsize=SMALL, va="top")
    ax.set_xlim(-0.1, label_w + longest * (box_w + gap) + 0.2)
    ax.set_ylim(-len(rows) * row_step + 0.2, box_h / 2 + 0.15)
    return save(fig, directory, "network")


def macs_figure(directory: Path) -> Path:
    """Multiply-adds per layer group, stacked by conv kind, both variants; and per conv kind over the network."""
    variants = (COURSE_VARIANT, OTHER_VARIANT)
    counts = {v: mac_table(resnet50(v)) for v in variants}
    groups = list(counts[COURSE_VARIANT])
    fig = Figure(figsize=(WIDTH, WIDTH * 0.45))
    by_group, by_kind = fig.subplots(1, 2, gridspec_kw={"width_ratios": (2.0, 1.3)})
    bar = 0.38
    for v_index, variant in enumerate(variants):
        offset = (v_index - 0.5) * bar
        bottoms = np.zeros(len(groups))
        for kind in CONV_KINDS:
            values = np.array([counts[variant][g][kind] for g in groups]) / MEGA
            by_group.bar(np.arange(len(groups)) + offset, values, bar, bottom=bottoms, color=KIND_COLOURS[kind],
                         alpha=1.0 if variant == COURSE_VARIANT else 0.55, edgecolor="white", linewidth=0.5,
                         label=kind if v_index == 0 else None)
            bottoms += values
        for g_index, total in enumerate(bottoms):
            by_group.text(g_index + offset, total, f"{total:.0f}\n{variant}", ha="center", va="bottom",
                          fontsize=SMALL - 1)
    by_group.set_xticks(np.arange(len(groups)), groups, fontsize=FONT)
    by_group.set_ylabel("millions of multiply-adds", fontsize=FONT)
    by_group.set_title(f"per layer group (left bar {COURSE_VARIANT}, right bar {OTHER_VARIANT}, paler)",
                       fontsize=FONT)
    by_group.set_ylim(0, max(sum(counts[v][g].values()) for v in variants for g in groups) / MEGA * 1.22)
    by_group.legend(fontsize=SMALL, loc="upper left", title="conv kind", title_fontsize=SMALL)
    by_group.tick_params(labelsize=SMALL)
    for v_index, variant in enumerate(variants):
        totals = np.array([sum(counts[variant][g][k] for g in groups) for k in CONV_KINDS]) / MEGA
        offset = (v_index - 0.5) * bar
        by_kind.bar(np.arange(len(CONV_KINDS)) + offset, totals, bar, color=[KIND_COLOURS[k] for k in CONV_KINDS],
                    alpha=1.0 if variant == COURSE_VARIANT else 0.55)
        for k_index, total in enumerate(totals):
            by_kind.text(k_index + offset, total, f"{total:.0f}\n{variant}", ha="center", va="bottom",
                         fontsize=SMALL - 1)
    by_kind.set_xticks(np.arange(len(CONV_KINDS)), CONV_KINDS, fontsize=FONT)
    by_kind.set_title("per conv kind, whole network", fontsize=FONT)
    by_kind.set_ylim(0, max(sum(counts[v][g][k] for g in groups) for v in variants for k in CONV_KINDS) / MEGA * 1.15)
    by_kind.tick_params(labelsize=SMALL)
    for ax in (by_group, by_kind):
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return save(fig, directory, "macs")


FIGURES_DRAWN: dict[str, Callable[[Path], Path]] = {
    "conv": conv_figure, "layouts": layouts_figure, "bottleneck": bottleneck_figure, "network": network_figure,
    "macs": macs_figure,
}


def draw_all(directory: Path) -> list[Path]:
    matplotlib.use("Agg")  # files only, no display
    return [draw(directory) for draw in FIGURES_DRAWN.values()]


# --- filling and checking the chapter ---

def generated() -> dict[str, str]:
    return {name: make() for name, make in SECTIONS.items()}


def markers(text: str) -> dict[str, str]:
    """The body of every marker in the chapter, by name."""
    found = {}
    for match in MARKER.finditer(text):
        name = match.group(2)
        if name not in SECTIONS:
            raise UserError(f"unknown marker network:{name}; course/network.py generates {', '.join(SECTIONS)}")
        if name in found:
            raise UserError(f"marker network:{name} appears twice")
        found[name] = match.group(3)
    missing = [name for name in SECTIONS if name not in found]
    if missing:
        raise UserError(f"missing marker(s): {', '.join('network:' + m for m in missing)}")
    return found


def stale(text: str, bodies: dict[str, str]) -> list[str]:
    """The markers whose text differs from what would be generated."""
    return [name for name, body in markers(text).items() if body != bodies[name]]


def fill(text: str, bodies: dict[str, str]) -> str:
    markers(text)
    return MARKER.sub(lambda m: f"{m.group(1)}{bodies[m.group(2)]}{m.group(4)}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.network", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the chapter's text is up to date")
    parser.add_argument("--chapter", type=Path, default=CHAPTER, help=argparse.SUPPRESS)
    parser.add_argument("--figures", type=Path, default=FIGURES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        text = args.chapter.read_text()
        bodies = generated()
        if args.check:
            out_of_date = stale(text, bodies)
            if out_of_date:
                print(f"{args.chapter}: out of date: {', '.join('network:' + n for n in out_of_date)}; "
                      f"run `python -m course.network`", file=sys.stderr)
                return 1
            return 0
        for path in draw_all(args.figures):
            print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
        filled = fill(text, bodies)
        if filled != text:
            args.chapter.write_text(filled)
            print(f"updated {args.chapter.relative_to(REPO) if args.chapter.is_relative_to(REPO) else args.chapter}")
    except (OSError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
