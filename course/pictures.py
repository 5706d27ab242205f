"""One picture per stage: the stage's conv loop nest, and a drawing of what its one idea changes.

    python -m course.pictures [STAGE ...]           # stages/<stage>/picture.png, every stage by default
    python -m course.pictures --out DIR --dpi 40 8  # stage 8's picture into DIR, at a low resolution

A picture has two parts. At the top, the loop nest of the stage's convolution (for stage 10 and 11 its
Winograd steps) as a few lines of pseudo-code, the lines that changed from the stage before highlighted.
Below, a drawing of what the idea changes: how memory is walked, the vector lanes, the weight pool, the
rotating buffers, the generated source, the split over threads, the fused passes, the register tile, the
tile order, Winograd's data flow, the tuning's candidate tiles and rounds, int8's vpdpbusd, byte layouts and
quantization, bfloat16's bits, rounding and vdpbf16ps, AMX's tiles, tdpbf16ps and the stem's row taps.

Every number in a picture comes from the code it explains: from the stage's module (its constants, its
functions, its templates), from common/architecture.py (the shapes) and common/target.py (the vector
registers of the CPU numba compiles for: the tile of stages 8-11 is drawn as this CPU gets it; stage 12's
candidates are drawn for two CPUs named to LLVM, AVX-512 and AVX2, stage 13's vpdpbusd for one with AVX-512
VNNI, stage 14's vdpbf16ps for one with AVX512_BF16 and stage 15's tiles for one with AMX, planned and packed as
there (no tile instruction runs: numpy does them), so their pictures are the same on every machine; nothing
measured is drawn, as the tuning's choices differ from CPU to CPU, nor calibrated: stage 13's units are
stand-ins). Where a stage decides something layer by layer (which buffer a layer writes, which kernels are
generated, the tile order, the Winograd size), the stage's own planning code decides it: `planned` runs
`Model.plan()` on stand-in weights that have the real shapes but hold nothing, so no weights are read and nothing
is compiled. Two pictures read real numbers, as rounding is only seen on them: stage 14's, the stem's weights as
`make weights` exports them by default (v1) and one pixel of a photo of pics/, through the stage's fold, to_bf16
and plain_pairs (compiled by numba, which takes a second); stage 15's, the stem's and layer1.0.conv2's weights
and the same photo through its fold and the statements of its generated AMX kernel, run with numpy's tiles.
"""

import argparse
import ast
import contextlib
import re
import sys
import textwrap
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numba
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from common.architecture import Conv, ResNet50, resnet50, tensor_shapes
from common.calibration import tensor_names
from common.errors import UserError, run_reporting_errors
from common.export_weights import CAFFE_PREPROCESSING, KERAS_BN_EPS
from common.image import load_image
from common.paths import PICS_DIR, REPO, WEIGHTS_DIR
from common.stages import STAGES, find_stage, stage_module, stage_number
from common.target import AVX2_TARGET, vector_registers
from common.tuning import PASSES, TIMING_SECONDS, TUNING_SECONDS, choice_path
from common.weights import load_manifest, load_tensor

# The weights `make weights` exports by default (npm, Keras) are ResNet v1 (common/export_weights.py).
COURSE_VARIANT = "v1"
FLOAT32_BYTES = 4
FLOAT32_BITS = 32
MEGA = 1_000_000
LARGEST_DENOMINATOR = 100  # matrix entries are drawn as fractions: Winograd's G holds sixths and twenty-fourths

# --- the sheet: one axes over the whole figure, in units of a tenth of an inch ---
WIDTH = 10.0  # inches
SPAN = 100.0  # units across the width
POINTS_PER_UNIT = WIDTH * 72 / SPAN
DPI = 110  # 1100 pixels wide: readable at GitHub's README width
TITLE_FONT = 12.5
TITLE_CHARACTERS = 84  # a title line's length at TITLE_FONT, bold, across WIDTH
FONT = 10
SMALL = 8.5
CODE_FONT = 9.5
LINE = 1.5 * CODE_FONT / POINTS_PER_UNIT  # a code line's height, in units
MARGIN = 1.0
GAP = 3.0  # between the parts of a picture
EDGE = "0.3"
CHANGED = "#fff0a0"  # the highlight of changed code lines
PALE = "#f2f2f2"
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
X_COLOUR, W_COLOUR, ACC_COLOUR = "#9ecae1", "#fdae6b", "#a1d99b"
BORDER_COLOUR = "0.8"
PIXEL_MAJOR, GROUP_MAJOR = "#b07aa1", "#76b7b2"  # stage 9's two tile orders

# --- what the pictures draw (choices of the drawing, not of the stages) ---
STEPS_SHOWN = 4  # stage 1: inner-loop steps numbered in the memory walk
IMAGES_SHOWN = 3  # stage 3: forward passes on the time line
THREADS_DRAWN = (2, 3)  # stage 6: this machine's 2 cores, and a count that does not divide the channels
MANY_THREADS = 4  # stage 9: a 4-core laptop, more threads than a 64-channel conv has groups of 32 channels
BLOCKS_SHOWN = 3  # stage 4: bottleneck blocks drawn in the buffer rotation
FORWARD_LINES = 9  # stage 5: lines of the generated forward pass shown
TILE_WIDTH = 46.0  # stage 8: units across the drawn tile of sums, whatever BLOCK is
RUNS_SHOWN = 4  # stage 8: input channels drawn in the packed weights
CORNER = 3  # stage 8: extra columns drawn in the corner of the bordered buffer, past the tile's windows
# stage 12: the CPUs its candidates are drawn for, named to LLVM (common.target), so that the picture is the same on
# every machine; nothing measured is drawn, as what wins differs from CPU to CPU
X86 = "x86_64-unknown-linux-gnu"
TUNED_TARGETS = (("AVX-512", "skylake-avx512"), ("AVX2", AVX2_TARGET["NUMBA_CPU_NAME"]))
SUM_COLOURS = (ACC_COLOUR, "#c7e9c0")  # the sums of a tile's even and odd channel vectors
ORDINALS = ("first", "second", "third", "fourth")  # a tuning round's candidates
# stage 13: the CPU its vpdpbusd and tile are drawn for, named to LLVM: Intel's first with AVX-512 VNNI (2019)
VNNI_TARGET = ("AVX-512 VNNI", "cascadelake")
QUANTIZED_SEED = 13  # of the synthetic conv whose weights stage 13's picture folds, and of its codes
SYNTHETIC_QUADS = 2  # that conv's input channels, in quads: the vpdpbusd drawn is its second step
# Stand-ins for the calibrated ranges of a conv's input, output and residual (calibration's differ per photo set)
STAND_IN_RANGES = (4.0, 6.0, 8.0)
CHARACTER_EMS = 0.54  # a wrapped paragraph's characters, wide ones and spaces taken together, per point of its font
LINE_SPACING = 1.25
INT32_SHOWN = 3  # int32s drawn at the start of a run of a byte strip, before "..."
WEIGHTS_SHOWN = 8  # stage 13: one output channel's weights drawn with their codes
# stage 14: the CPU its vdpbf16ps is drawn for, named to LLVM: Intel's first with AVX512_BF16 (2020)
BF16_TARGET = ("AVX-512 BF16", "cooperlake")
BF16_PHOTO = "cat.png"  # of pics/ (make explain's default): the photo whose stem pixel stage 14's picture computes
BF16_PIXEL = (56, 56)  # that output pixel of the stem (112x112), near the photo's centre
WEIGHT_DISPLAY = 1000  # stage 14 draws the stem's weights (0.0001 to 0.01) times this, to fit its lanes' cells
SIGN_COLOUR = "#fbb4ae"  # stage 14's sign bit; its exponent bits are X_COLOUR, its mantissa's W_COLOUR
# stage 15: the CPU its tiles are drawn for, named to LLVM: Intel's first with AMX (2023), planned and packed as on it
AMX_TARGET = ("AMX", "sapphirerapids")
AMX_SEED = 15  # of the stand-in input of the conv whose tdpbf16ps stage 15's picture draws
AMX_EXAMPLE_TILE = (28, 28)  # that conv's tile of output pixels drawn: (ho, wo0), group 0
AMX_STEP = (1, 1, 1)  # its step drawn: (kh, kw, k), the centre tap's second chunk of 32 input channels


def short(name: str) -> str:
    """layer1.0.conv2 -> 1.0 conv2; layer1.0.downsample.0 -> 1.0 down."""
    return name.removeprefix("layer").replace(".downsample.0", " down").replace(".conv", " conv")


def fraction(value: float) -> str:
    f = Fraction(value).limit_denominator(LARGEST_DENOMINATOR)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def example_conv(arch: ResNet50, kernel: int = 3):
    """The network's first conv of a kernel size: layer1.0.conv2 for 3x3."""
    return next(c for c in arch.convs if c.kernel == kernel)


def group_of(name: str) -> str:
    return name.split(".")[0] if name.startswith("layer") else "stem"


class Sheet:
    """A figure WIDTH inches wide, drawn top down in units of SPAN across; its height follows the drawing."""

    def __init__(self, title: str):
        self.fig = Figure()
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_axis_off()
        self.y = -MARGIN
        lines = textwrap.wrap(title, TITLE_CHARACTERS)
        self.text(MARGIN, self.y, "\n".join(lines), size=TITLE_FONT, weight="bold", va="top")
        self.y -= TITLE_FONT * (1.25 * len(lines) + 0.35) / POINTS_PER_UNIT

    def caption(self, s):
        """A wrapped paragraph below what is drawn so far, which ends the drawing."""
        self.text(MARGIN, self.y, s, va="top", wrap=True)
        self.y -= 2 * GAP

    def text(self, x, y, s, size=FONT, **kwargs):
        kwargs.setdefault("va", "center")
        return self.ax.text(x, y, s, fontsize=size, **kwargs)

    def box(self, x, y, w, h, face="white", edge=EDGE, **kwargs):
        """A rectangle with its top left corner at (x, y)."""
        self.ax.add_patch(Rectangle((x, y - h), w, h, facecolor=face, edgecolor=edge, linewidth=0.8, **kwargs))

    def arrow(self, start, end, colour=EDGE, style="-|>", **kwargs):
        self.ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=colour,
                                          linewidth=1.1, shrinkA=0, shrinkB=0, **kwargs))

    def code(self, lines: list[tuple[str, bool]], caption: str, x=MARGIN, width=SPAN - 2 * MARGIN, size=CODE_FONT):
        """A box of monospace lines (text, changed); changed lines highlighted, with a + in the gutter."""
        line = LINE * size / CODE_FONT
        self.text(x, self.y, caption, size=SMALL, va="top", color="0.25")
        self.y -= SMALL * 1.5 / POINTS_PER_UNIT
        top = self.y
        height = line * (len(lines) + 0.6)
        self.box(x, top, width, height, face="#fbfbfb")
        for i, (text, changed) in enumerate(lines):
            y = top - line * (i + 0.8)
            if changed:
                self.box(x + 0.15, y + line / 2, width - 0.3, line, face=CHANGED, edge="none")
            self.text(x + 0.4, y, ("+ " if changed else "  ") + text, size=size, family="monospace")
        self.y = top - height - GAP

    def cells(self, x, y, count, w, h, faces, labels=(), size=SMALL, edge=EDGE):
        """count cells in a row from (x, y) (top left), each w x h, with faces and labels (or none)."""
        for i in range(count):
            self.box(x + i * w, y, w, h, face=faces[i] if isinstance(faces, (list, tuple)) else faces, edge=edge)
            if i < len(labels) and labels[i]:
                self.text(x + (i + 0.5) * w, y - h / 2, labels[i], size=size, ha="center")

    def matrix(self, x, y, rows, title, cell=2.6, size=SMALL):
        """A matrix of numbers as a grid, top left at (x, y), its name above it."""
        self.text(x, y + 0.9, title, size=size, va="bottom")
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                self.box(x + j * cell, y - i * cell, cell, cell, face="white" if value else PALE)
                self.text(x + (j + 0.5) * cell, y - (i + 0.5) * cell, fraction(value), size=size - 1, ha="center")
        return x + len(rows[0]) * cell, y - len(rows) * cell

    def save(self, path: Path, dpi: int) -> Path:
        bottom = self.y + GAP - MARGIN
        self.ax.set_xlim(0, SPAN)
        self.ax.set_ylim(bottom, 0)
        self.fig.set_size_inches(WIDTH, WIDTH * -bottom / SPAN)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(path, dpi=dpi, metadata={"Software": None})
        return path


def title(stage: str) -> str:
    """The stage package's docstring: "Stage 8, tiled: a register-tiled conv kernel ..."."""
    text = sys.modules[f"stages.{stage}"].__doc__.strip().rstrip(".")
    if not text.startswith(f"Stage {stage_number(stage)},"):  # a package copied from the stage before, say
        raise UserError(f"stages/{stage}/__init__.py: its docstring, the picture's title, is not stage "
                        f"{stage_number(stage)}'s: {text!r}")
    return text


def previous(stage: str) -> str:
    return f"highlighted: changed from stage {stage_number(stage) - 1}"


# --- a stage's plan, run on stand-in weights ---

class StandInPool(dict):
    """The weight pool a stage's plan() looks up, with arrays of the right number of floats that hold nothing
    (zero strides, no memory). It answers every stage's names: torchvision's tensor names (stages 1-6), a
    conv's name as (weight, bias) (stage 7 on) and "fc"; `names` tells which name an array answers."""

    def __init__(self, arch: ResNet50):
        super().__init__()
        self.shapes = tensor_shapes(arch)
        self.out_channels = {c.name: c.out_channels for c in arch.convs}
        self.names = {}

    def tensor(self, name: str, shape=None) -> np.ndarray:
        array = np.broadcast_to(np.float32(0), shape or self.shapes[name])
        self.names[id(array)] = name
        return array

    def __missing__(self, name):
        if name in self.out_channels:
            value = (self.tensor(f"{name}.weight"), self.tensor(f"{name}.bias", (self.out_channels[name],)))
        elif name == "fc":
            value = (self.tensor("fc.weight"), self.tensor("fc.bias"))
        else:
            value = self.tensor(name)
        self[name] = value  # kept, so that the arrays' ids stay theirs
        return value


@dataclass
class Emitted:
    conv: object  # the Conv being planned, or None
    kernel: str
    constants: dict


@dataclass
class Plan:
    model: object
    pool: StandInPool
    emitted: list[Emitted] = field(default_factory=list)

    def kernel_calls(self) -> list[str]:
        return [line.strip() for line in self.model.lines if not line.strip().startswith("#")]

    def of(self, conv_name: str) -> list[Emitted]:
        return [e for e in self.emitted if e.conv is not None and e.conv.name == conv_name]


def planned(stage: str, choices: dict | None = None, plan=None, **attributes) -> Plan:
    """The stage's Model (stage 4 on) with its forward pass planned as Model() plans it, on a StandInPool,
    recording every kernel the plan emits (stage 5 on) and the conv it was emitted for. A stage that tunes itself
    (12 on) plans with `choices`, its Choice by layer shape; `attributes` set (or replace) what else a stage's
    Model() would have set before planning, and `plan(model)`, if given, plans instead of model.plan() (stage 13:
    its own planning on stand-in weights)."""
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    model = object.__new__(module.Model)
    pool = StandInPool(arch)
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    stem = arch.stem
    vars(model).update(
        manifest={"variant": COURSE_VARIANT, "bn_eps": KERAS_BN_EPS}, arch=arch, eps=np.float32(KERAS_BN_EPS),
        pool=pool, buffers=[np.empty(largest, np.float32) for _ in range(module.NUM_BUFFERS)], bordered={},
        scratch={}, features=np.empty(arch.fc.in_features, np.float32),
        logits=np.empty(arch.fc.out_features, np.float32), steps=[], kernel_sources={}, lines=[], arrays=[],
        calls=[], tile_signatures={})
    if choices is not None:
        model.choices = choices
    if hasattr(model, "bordered_buffer"):
        model.input = model.bordered_buffer(stem.in_size, stem.in_channels, stem.padding)
    else:
        model.input = np.empty((stem.in_size, stem.in_size, stem.in_channels), np.float32)
    vars(model).update(attributes)
    result = Plan(model, pool)
    planning = [None]
    if hasattr(model, "emit"):
        emit = model.emit

        def recording_emit(template, name, arrays, **constants):
            result.emitted.append(Emitted(planning[-1], name, constants))
            emit(template, name, arrays, **constants)

        model.emit = recording_emit
    for method in ("conv_bn", "conv"):
        if hasattr(model, method):
            setattr(model, method, recording(getattr(model, method), planning))
    if plan is None:
        model.plan()
    else:
        plan(model)
    result.pool = model.pool
    return result


def recording(plan_conv, planning: list):
    """plan_conv (a Model's conv or conv_bn), with the Conv it plans on top of `planning` while it runs."""
    def recording_conv(x, conv, *args, **kwargs):
        planning.append(conv)
        try:
            return plan_conv(x, conv, *args, **kwargs)
        finally:
            planning.pop()

    return recording_conv


# --- the stages ---

def stage1(stage, sheet: Sheet):
    conv = example_conv(resnet50(COURSE_VARIANT))
    taps = conv.kernel * conv.kernel
    sheet.code([
        ("for co in range(out_channels):                  # output channel: the outermost loop", False),
        ("    for ho in range(out_size):                  # output row", False),
        ("        for wo in range(out_size):              # output column", False),
        ("            acc = 0", False),
        ("            for kh, kw in the kernel window:    # taps in the padding are skipped", False),
        ("                for ci in range(in_channels):   # input channel: the innermost loop", False),
        ("                    acc += x[hi, wi, ci] * weight[co, ci, kh, kw]   # x: HWC, weight: OIHW", False),
        ("            out[ho, wo, co] = acc               # out: a new array, every call", False),
        ("then batch_norm(out), relu(out): a pass each; weights read from disk, layer by layer", False),
    ], "conv2d, the math as written (the starting point: nothing to compare with yet)")
    cells = STEPS_SHOWN * taps
    w = (SPAN - 2 * MARGIN) / cells
    h = 3.2
    for name, layout, stride, colour in (("x", "HWC: x[hi, wi, ci]", 1, X_COLOUR),
                                         ("weight", "OIHW: weight[co, ci, kh, kw]", taps, W_COLOUR)):
        apart = "neighbours" if stride == 1 else f"{stride} floats apart (kh x kw = {conv.kernel}x{conv.kernel})"
        sheet.text(MARGIN, sheet.y, f"{name} in memory ({layout}, a float per cell): the inner loop's steps "
                   f"ci = {', '.join(str(i) for i in range(STEPS_SHOWN))} are {apart}", va="top")
        sheet.y -= 2.4
        touched = {i * stride: str(i) for i in range(STEPS_SHOWN)}
        sheet.cells(MARGIN, sheet.y, cells, w, h, [colour if i in touched else "white" for i in range(cells)],
                    [touched.get(i, "") for i in range(cells)], size=FONT)
        for i in range(STEPS_SHOWN - 1):
            a, b = i * stride, (i + 1) * stride
            sheet.arrow(((a + 0.5) * w + MARGIN, sheet.y - h - 0.2), ((b + 0.5) * w + MARGIN, sheet.y - h - 0.2),
                        connectionstyle="arc3,rad=0.25" if stride > 1 else "arc3,rad=0.6")
        sheet.y -= h + GAP + 1.5
    sheet.caption(f"Example: {conv.name}, {conv.kernel}x{conv.kernel}, {conv.in_channels} -> "
               f"{conv.out_channels} channels on {conv.in_size}x{conv.in_size}. With co outermost, the loops walk the "
               f"whole {conv.in_size}x{conv.in_size}x{conv.in_channels} input once per output channel, "
               f"{conv.out_channels} times.")


def stage2(stage, sheet: Sheet):
    conv = example_conv(resnet50(COURSE_VARIANT))
    bits, _ = vector_registers()
    lanes = bits // FLOAT32_BITS
    sheet.code([
        ("@njit(fastmath=True)                            # the sum may be reordered, a*b+c fused", True),
        ("for co in range(out_channels):", False),
        ("    for ho in range(out_size):", False),
        ("        for wo in range(out_size):", False),
        ("            acc = 0", False),
        ("            for kh, kw in the kernel window:", False),
        ("                for ci in range(in_channels):   # now contiguous in both arrays", False),
        ("                    acc += x[hi, wi, ci] * weight[co, kh, kw, ci]   # weight: OHWI", True),
        ("            out[ho, wo, co] = acc", False),
    ], f"conv2d ({previous(stage)})")
    n = conv.in_channels
    vectors = n // lanes
    label = 8.0
    x0 = MARGIN + label
    w = (SPAN - MARGIN - x0) / n
    h = 2.6
    faces = [COLOURS[(i // lanes) % 2] + "55" for i in range(n)]
    sheet.text(MARGIN, sheet.y, f"x[hi, wi, 0:{n}] (HWC) and weight[co, kh, kw, 0:{n}] (OHWI): the same {n} input "
               f"channels, contiguous in both ({conv.name})", va="top")
    sheet.y -= 3.2
    for v in range(vectors):
        sheet.text(x0 + v * lanes * w, sheet.y + 0.2, f"ci = {v * lanes}", size=SMALL - 1, va="bottom")
    for name in ("x", "weight"):
        sheet.text(MARGIN, sheet.y - h / 2, name, size=SMALL)
        sheet.cells(x0, sheet.y, n, w, h, faces)
        sheet.y -= h + 0.6
    top = sheet.y
    acc_y = top - 6
    acc_w = lanes * w
    acc_x = x0 + (SPAN - MARGIN - x0) / 2 - acc_w / 2
    for v in range(vectors):
        left = x0 + v * lanes * w
        sheet.ax.plot([left + 0.2, left + 0.2, left + lanes * w - 0.2, left + lanes * w - 0.2],
                      [top, top - 0.5, top - 0.5, top], color=EDGE, linewidth=0.9)
        sheet.text(left + lanes * w / 2, top - 1.2, f"FMA {v + 1}: {lanes} lanes", size=SMALL, ha="center")
        sheet.arrow((left + lanes * w / 2, top - 2), (acc_x + acc_w / 2, acc_y + 0.2), colour="0.55")
    sheet.cells(acc_x, acc_y, lanes, w, h, ACC_COLOUR)
    sheet.text(acc_x - 1, acc_y - h / 2, "acc", size=SMALL, ha="right")
    sheet.text(acc_x + acc_w + 1, acc_y - h / 2, f"one vector register of {lanes} sums\n"
               f"({bits}-bit registers on this CPU: common/target.py)", size=SMALL)
    sheet.y = acc_y - h - 1.5
    sheet.caption(f"Per (kh, kw): {vectors} vector FMAs of {lanes} multiply-adds each instead of {n} "
               f"scalar ones, then the {lanes} lanes are added into out[ho, wo, co]. Which width LLVM picks for this "
               f"loop (it may use half-width vectors) is what `make stage2 asm` shows.")


def stage3(stage, sheet: Sheet):
    arch = resnet50(COURSE_VARIANT)
    shapes = tensor_shapes(arch)
    files = len(shapes)
    megabytes = sum(int(np.prod(s)) for s in shapes.values()) * FLOAT32_BYTES / MEGA
    conv = example_conv(arch)
    o, i, kh, kw = shapes[f"{conv.name}.weight"]
    sheet.code([
        ("pool = load_pool()         # when the model is built: every weight, in OHWI", True),
        ("...", False),
        ("w = pool[f'{conv.name}.weight']   # in the forward pass: a look-up, no file", True),
        ("for co in range(out_channels):", False),
        ("    for ho, wo in the output, for kh, kw in the window, for ci in range(in_channels):", False),
        ("        acc += x[hi, wi, ci] * w[co, kh, kw, ci]", False),
    ], f"conv_bn ({previous(stage)}); the kernels are stage 2's")
    read, compute, step = 26.0, 7.0, 1.0
    h = 3.4
    rows = (("stages 1-2", True), (f"stage {stage_number(stage)}", False))
    for label, per_image in rows:
        sheet.text(MARGIN, sheet.y - h / 2, label, weight="bold")
        x = MARGIN + 12
        if not per_image:
            sheet.box(x, sheet.y, read, h, face=W_COLOUR)
            sheet.text(x + read / 2, sheet.y - h / 2, f"load the pool once: {files} files", size=SMALL, ha="center")
            x += read + step
        for image in range(IMAGES_SHOWN):
            if per_image:
                width = read * 0.55
                sheet.box(x, sheet.y, width, h, face=W_COLOUR)
                sheet.text(x + width / 2, sheet.y - h / 2, f"read {files} files", size=SMALL, ha="center")
                x += width
            sheet.box(x, sheet.y, compute, h, face=X_COLOUR)
            sheet.text(x + compute / 2, sheet.y - h / 2, f"image {image + 1}", size=SMALL, ha="center")
            x += compute + step
        sheet.y -= h + 1.5
    sheet.arrow((MARGIN + 12, sheet.y), (SPAN - MARGIN, sheet.y))
    sheet.text(SPAN - MARGIN, sheet.y - 1.2, "time (not to scale)", size=SMALL, ha="right", va="top")
    sheet.y -= 3.5
    sheet.caption(f"Orange: reading weights ({files} .npy files, {megabytes:.0f} MB, and stage 2's "
               f"transposes); blue: computing. From stage {stage_number(stage)} on the forward pass opens no file: "
               f"pool['{conv.name}.weight'] is already a ({o}, {kh}, {kw}, {i}) OHWI array.")


def stage4(stage, sheet: Sheet):
    module = stage_module(stage)
    plan = planned(stage)
    model = plan.model
    sheet.code([
        (f"buffers = [np.empty(largest) for _ in range(NUM_BUFFERS)]   # NUM_BUFFERS = {module.NUM_BUFFERS}, "
         "when built", True),
        ("steps = plan()             # (kernel, arguments), every buffer view and weight bound", True),
        ("conv2d(x, weight, stride, padding, out)   # out: a view of one of the buffers", True),
        ("    for co, ho, wo, kh, kw, ci: ... out[ho, wo, co] = acc         # the loops are stage 3's", False),
        ("batch_norm(out, ..., out); relu(out, out)   # in place", True),
    ], f"the forward pass ({previous(stage)})")
    writes = []  # (step name, buffer index)
    for kernel, args in model.steps:
        if kernel.__name__ not in ("conv2d", "max_pool"):
            continue
        out = args[-1]
        buffer = next(i for i, b in enumerate(model.buffers) if np.shares_memory(out, b))
        name = plan.pool.names[id(args[1])].removesuffix(".weight") if kernel.__name__ == "conv2d" else "maxpool"
        writes.append(("stem" if name == model.arch.stem.name else name, buffer))
    shown_blocks = {b.name for b in model.arch.blocks[:BLOCKS_SHOWN]}
    writes = [(n, b) for n, b in writes if not n.startswith("layer") or ".".join(n.split(".")[:2]) in shown_blocks]
    columns = len(writes)
    label_w = 11.0
    w = (SPAN - 2 * MARGIN - label_w) / columns
    h = 4.0
    largest = model.buffers[0].size
    stem = model.arch.stem
    sheet.text(MARGIN, sheet.y, f"What each of the {module.NUM_BUFFERS} buffers holds after each step (coloured: "
               f"written by that step), the first {BLOCKS_SHOWN} blocks; each buffer is {largest:,} floats, the "
               f"largest activation (the stem's {stem.out_size}x{stem.out_size}x{stem.out_channels})", va="top",
               wrap=True)
    sheet.y -= 9.5
    header_y = sheet.y
    for c, (name, _) in enumerate(writes):
        sheet.text(MARGIN + label_w + (c + 0.5) * w, header_y, short(name), size=SMALL, rotation=40,
                   ha="left", va="bottom", rotation_mode="anchor")
    sheet.y -= 0.8
    held = [""] * module.NUM_BUFFERS
    for c, (name, buffer) in enumerate(writes):
        held[buffer] = name
        for b in range(module.NUM_BUFFERS):
            x, y = MARGIN + label_w + c * w, sheet.y - b * h
            fresh = b == buffer
            colour = COLOURS[0 if held[b] in ("stem", "maxpool") else 1] if held[b] else "white"
            sheet.box(x, y, w, h, face=colour if fresh else (colour + "30" if held[b] else "white"))
            if held[b]:
                sheet.text(x + w / 2, y - h / 2, short(held[b]).replace(" ", "\n"), size=SMALL - 1, ha="center",
                           color="black" if fresh else "0.45")
    for b in range(module.NUM_BUFFERS):
        sheet.text(MARGIN, sheet.y - (b + 0.5) * h, f"buffer {b}", size=SMALL)
    sheet.y -= module.NUM_BUFFERS * h + 1.5
    sheet.caption("A block needs its input (kept for the shortcut), two intermediates and its output at "
               "once; the residual add and ReLU run in place in conv3's buffer, the next block's input: the roles "
               "rotate from block to block. No array is allocated while the network runs.")


def stage5(stage, sheet: Sheet):
    plan = planned(stage)
    conv = example_conv(plan.model.arch)
    kernel = next(e for e in plan.of(conv.name) if e.kernel.startswith("conv"))
    c = kernel.constants
    sheet.code([
        ("CONV = '''                                    # a template: one kernel per layer shape", True),
        ("def {name}(x, weight, out):", True),
        ("    for co in range({out_channels}):", True),
        ("        for ho in range({out_size}):", True),
        ("            for wo in range({out_size}):          ...  for kh in range({kernel}): ...", True),
        ("                        for ci in range({in_channels}):", True),
        ("                            acc += x[hi, wi, ci] * weight[co, kh, kw, ci]'''", False),
    ], f"the conv kernel, now a template ({previous(stage)}): the loops are stage 4's")
    template_lines = stage_module(stage).CONV.strip("\n").splitlines()
    source_lines = plan.model.kernel_sources[kernel.kernel].strip("\n").splitlines()
    text = textwrap.dedent("\n".join(source_lines)).splitlines()
    unfilled = [t.strip().replace("{{", "{").replace("}}", "}") for t in template_lines]
    sheet.code([(line, line.strip() != t) for line, t in zip(text, unfilled, strict=True)],
               f"generated for {conv.name} ({conv.in_size}x{conv.in_size}x{conv.in_channels}, {c['kernel']}x"
               f"{c['kernel']}, stride {c['stride']}, padding {c['padding']}): every shape a literal "
               f"(highlighted: the lines the generator filled in)", size=CODE_FONT - 1)
    calls = plan.kernel_calls()
    lines = [line.strip("\n") for line in plan.model.lines[:FORWARD_LINES]]
    sheet.code([("def forward(a):", False)] + [(line, False) for line in lines] + [("    ...", False)],
               f"the generated forward pass: {len(calls)} calls of {len(plan.model.kernel_sources)} distinct "
               f"kernels, a comment per block (a[i]: the i-th array the plan bound)", size=CODE_FONT - 1)


def stage6(stage, sheet: Sheet):
    plan = planned(stage)
    conv = example_conv(plan.model.arch)
    channels = conv.out_channels
    sheet.code([
        ("@njit(..., parallel=True)", True),
        (f"def {next(e.kernel for e in plan.of(conv.name) if e.kernel.startswith('conv'))}(x, weight, out):", False),
        (f"    for co in prange({channels}):            # numba's threads: each a contiguous range of co", True),
        (f"        for ho in range({conv.out_size}):", False),
        (f"            for wo in range({conv.out_size}):  ...  acc += x[hi, wi, ci] * weight[co, kh, kw, ci]", False),
        ("            out[ho, wo, co] = acc", False),
    ], f"the generated conv kernel, for {conv.name} ({previous(stage)})")
    w = (SPAN - 2 * MARGIN - 14 - 9) / channels
    h = 3.0
    sheet.text(MARGIN, sheet.y, f"Which thread computes each of the {channels} output channels of {conv.name} "
               f"(every thread: all {conv.out_size}x{conv.out_size} pixels of its channels)", va="top")
    sheet.y -= 3.0
    rows = [(f"{t} threads", [i for i, part in enumerate(np.array_split(np.arange(channels), t)) for _ in part], t)
            for t in THREADS_DRAWN]
    dropped_threads = max(THREADS_DRAWN)
    each = channels // dropped_threads
    rows.append((f"C++ original,\n{dropped_threads} threads", [i // each if i < each * dropped_threads else None
                                                                for i in range(channels)], dropped_threads))
    for label, owner, threads in rows:
        sheet.text(MARGIN, sheet.y - h / 2, label, size=SMALL)
        faces = [COLOURS[o] + "99" if o is not None else "white" for o in owner]
        sheet.cells(MARGIN + 14, sheet.y, channels, w, h, faces, edge="white")
        for t in range(threads):
            members = [i for i, o in enumerate(owner) if o == t]
            sheet.box(MARGIN + 14 + members[0] * w, sheet.y, len(members) * w, h, face="none")
            middle = MARGIN + 14 + (members[0] + len(members) / 2) * w
            sheet.text(middle, sheet.y - h / 2, f"thread {t}: co {members[0]}-{members[-1]}", size=SMALL,
                       ha="center", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5})
        missing = [i for i, o in enumerate(owner) if o is None]
        if missing:
            x = MARGIN + 14 + missing[0] * w
            sheet.box(x, sheet.y, len(missing) * w, h, face="white", edge="#d62728", hatch="///")
            sheet.text(x + len(missing) * w + 0.5, sheet.y - h / 2, f"{len(missing)} dropped", size=SMALL,
                       color="#d62728")
        sheet.y -= h + 1.2
    sheet.y -= 0.8
    sheet.caption(f"numba splits the range into one contiguous chunk per thread and covers every channel "
               f"(with {max(THREADS_DRAWN)} threads, {channels} = "
               f"{' + '.join(str(len(p)) for p in np.array_split(np.arange(channels), max(THREADS_DRAWN)))}); the "
               f"C++ original gave each thread {channels} // {dropped_threads} = {each} and dropped the rest.")


def block_steps(plan: Plan, block, fused: bool) -> list[str]:
    """The labels of a block's kernel calls in the planned order: 'conv1', 'batch norm', 'relu', 'add', or for the
    fused stage 'conv1 + bias, relu'."""
    lines = plan.model.lines
    start = lines.index(f"    # {block.name}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("#")), len(lines))
    names = [line.strip().split("(")[0] for line in lines[start + 1:end]]
    convs = iter(e.conv for e in plan.emitted if e.conv is not None and e.conv.name.startswith(block.name + ".")
                 and e.kernel.startswith("conv"))
    labels = []
    for name in names:
        if name.startswith("conv"):
            role = short(next(convs).name).split(" ")[-1]
            if fused:
                role += " + bias" + (" + add" if "_add" in name else "") + (", relu" if name.endswith("_relu") else "")
            labels.append(role)
        else:
            labels.append({"batch": "batch norm"}.get(name.split("_")[0], name.split("_")[0]))
    return labels


def stage7(stage, sheet: Sheet):
    plan, before = planned(stage), planned(STAGES[STAGES.index(stage) - 1])
    block = next(b for b in plan.model.arch.blocks if b.downsample)
    sheet.code([
        ("weight, bias = fold(conv)   # at load: weight * scale, beta - mean * scale; scale = gamma / sqrt(var + eps)",
         True),
        ("for co in prange(out_channels):", False),
        ("    for ho, wo in the output:", False),
        ("        acc = bias[co]", True),
        ("        for kh, kw, ci: acc += x[hi, wi, ci] * weight[co, kh, kw, ci]", False),
        ("        if add_residual: acc += residual[ho, wo, co]      # constants of the generated kernel", True),
        ("        if relu: acc = max(acc, 0)", True),
        ("        out[ho, wo, co] = acc                             # written once, read once", False),
    ], f"the generated conv kernel ({previous(stage)}); no batch-norm, ReLU or add kernels are left")
    h = 4.2
    for label, steps in ((f"stage {stage_number(stage) - 1}", block_steps(before, block, False)),
                         (f"stage {stage_number(stage)}", block_steps(plan, block, True))):
        sheet.text(MARGIN, sheet.y - h / 2, label, weight="bold")
        x0 = MARGIN + 10
        width = SPAN - MARGIN - x0
        w = width / len(steps)
        for i, step in enumerate(steps):
            face = X_COLOUR if step.startswith(("conv", "down")) else W_COLOUR
            sheet.box(x0 + i * w + 0.4, sheet.y, w - 1.6, h, face=face)
            sheet.text(x0 + i * w + 0.4 + (w - 1.6) / 2, sheet.y - h / 2, step.replace("batch norm", "batch\nnorm"),
                       size=SMALL, ha="center")
            if i:
                sheet.arrow((x0 + i * w - 1.2, sheet.y - h / 2), (x0 + i * w + 0.4, sheet.y - h / 2))
        sheet.y -= h + 1.8
    calls_before, calls = len(before.kernel_calls()), len(plan.kernel_calls())
    sheet.caption(f"The kernel calls of block {block.name}, in the order they run; each reads and writes "
               f"whole activations in memory. In the whole network {calls_before} kernel calls became {calls}: "
               f"{calls_before - calls} passes over activations are gone. The shortcut "
               f"({short(block.downsample.name)}) now runs before conv3, which adds it as it stores its sums.")


def tile_registers(sheet: Sheet, module, conv):
    """The register tile: ROWS pixels x BLOCK channels of sums, the weight vectors and the broadcast input."""
    rows, block, lanes = module.ROWS, module.BLOCK, module.LANES
    vectors = block // lanes
    cell = min(2.0, TILE_WIDTH / block)
    h = 2.3
    x0 = MARGIN + 22
    top = sheet.y
    sheet.text(x0, top, f"weight[group, kh, kw, ci, 0:{block}]: {vectors} vector load{'s' * (vectors > 1)}",
               size=SMALL, va="bottom")
    sheet.cells(x0, top - 0.3, block, cell, h, [W_COLOUR if (i // lanes) % 2 == 0 else "#fdd0a2"
                                                  for i in range(block)], edge="white")
    y = top - 0.3 - h - 1.4
    sheet.text(MARGIN, y + 0.6, f"x[.., wo0 + r, ci], r < {rows}:\neach broadcast to\n{lanes} lanes",
               size=SMALL, va="top")
    for r in range(rows):
        sheet.box(MARGIN + 14, y - r * h, 4, h, face=X_COLOUR)
        sheet.text(MARGIN + 16, y - (r + 0.5) * h, f"r={r}", size=SMALL - 1, ha="center")
        for v in range(vectors):
            sheet.box(x0 + v * lanes * cell, y - r * h, lanes * cell, h,
                      face=ACC_COLOUR if v % 2 == 0 else "#c7e9c0")
            sheet.text(x0 + (v + 0.5) * lanes * cell, y - (r + 0.5) * h, f"{lanes} sums", size=SMALL - 1,
                       ha="center")
    right = x0 + block * cell + 2
    used = rows * vectors + vectors + 1
    sheet.text(right, y - 0.2, f"acc: {rows} x {block} = {rows * block} sums\nin {rows * vectors} vector registers "
               f"of {module.VECTOR_BITS} bits\n\nper (kh, kw, ci):\n{vectors} weight load{'s' * (vectors > 1)} "
               f"and {rows} broadcasts\nfeed {rows * vectors} FMAs\n\nregisters in use:\n{rows * vectors} "
               f"+ {vectors} + 1 = {used} of {module.VECTOR_REGISTERS}", size=SMALL, va="top")
    sheet.y = y - rows * h - GAP - 3.5


def packed_weights(sheet: Sheet, module, conv, x0, width):
    block, lanes = module.BLOCK, module.LANES
    runs = RUNS_SHOWN
    cell = width / (runs * block)
    h = 2.3
    top = sheet.y
    sheet.text(x0, top, f"packed weights [group][kh][kw][ci][{block}]: for each ci,\nthe {block} output channels of "
               f"a group in one run", size=SMALL, va="bottom")
    for r in range(runs):
        faces = [COLOURS[r % len(COLOURS)] + ("99" if (i // lanes) % 2 == 0 else "55") for i in range(block)]
        sheet.cells(x0 + r * block * cell, top - 0.4, block, cell, h, faces, edge="none")
        sheet.text(x0 + (r + 0.5) * block * cell, top - 0.4 - h / 2, f"ci={r}", size=SMALL, ha="center")
    stride = conv.kernel * conv.kernel * conv.in_channels
    sheet.text(x0, top - 0.4 - h - 0.8, f"each run: {block // lanes} whole-vector load{'s' * (block > lanes)}. In "
               f"stage 7's OHWI\nthe same {block} weights were {stride:,} floats apart\n({conv.name}: "
               f"{conv.kernel}x{conv.kernel}x{conv.in_channels} per output channel).", size=SMALL, va="top")


def bordered(sheet: Sheet, module, conv, x0, width):
    rows = module.ROWS
    pad = conv.padding
    columns = rows + conv.kernel - 1 + CORNER
    shown_rows = conv.kernel + CORNER
    cell = min(width / columns, 2.2)
    top = sheet.y
    size = conv.in_size + 2 * pad
    sheet.text(x0, top, f"{conv.name}'s input: {size}x{size}x{conv.in_channels}, zero border {pad} "
               f"(grey),\nwritten once; the corner of one channel:", size=SMALL, va="bottom")
    y0 = top - 0.4
    for i in range(shown_rows):
        for j in range(columns):
            border = i < pad or j < pad
            sheet.box(x0 + j * cell, y0 - i * cell, cell, cell, face=BORDER_COLOUR if border else "white")
            if border:
                sheet.text(x0 + (j + 0.5) * cell, y0 - (i + 0.5) * cell, "0", size=SMALL - 2, ha="center",
                           color="0.4")
    stride = conv.stride
    for r in (0, rows - 1):
        sheet.ax.add_patch(Rectangle((x0 + r * stride * cell + 0.15, y0 - conv.kernel * cell + 0.15),
                                     conv.kernel * cell - 0.3, conv.kernel * cell - 0.3, fill=False,
                                     edgecolor=COLOURS[3 if r else 0], linewidth=1.8))
    sheet.text(x0, y0 - shown_rows * cell - 0.8, f"the windows of a tile's first and last pixel (r = 0, {rows - 1}): "
               f"\nno test for the edge, the border is the padding", size=SMALL, va="top")
    sheet.y = y0 - shown_rows * cell - 0.8 - 2 * SMALL * 1.3 / POINTS_PER_UNIT - GAP


def stage8(stage, sheet: Sheet):
    module = stage_module(stage)
    conv = example_conv(resnet50(COURSE_VARIANT))
    rows, block = module.ROWS, module.BLOCK
    sheet.code([
        (f"for group in prange(out_channels // {block}):          # BLOCK = {block} output channels", True),
        (f"    for each tile of {rows} pixels of an output row:    # ROWS = {rows}", True),
        (f"        acc[{rows}][{block}] = bias                           # in registers: a stack array",
         True),
        ("        for kh, kw, ci:                               # no padding tests: zero border", True),
        (f"            for r in range({rows}): xv = x[ho*s + kh, (wo0 + r)*s + kw, ci]", True),
        (f"                for c in range({block}): acc[r, c] += xv * weight[group, kh, kw, ci, c]", True),
        ("        acc += residual; acc = relu(acc); out[ho, wo0:wo0 + ROWS, group] = acc   # stored once", True),
    ], f"the tile kernel ({previous(stage)}); {module.TILE_CHOICE} on this CPU")
    tile_registers(sheet, module, conv)
    top = sheet.y
    half = (SPAN - 2 * MARGIN - GAP) / 2
    packed_weights(sheet, module, conv, MARGIN, half - 2)
    sheet.y = top
    bordered(sheet, module, conv, MARGIN + half + GAP, half)


def thread_grid(sheet: Sheet, x0, top, width, owner, rows, columns, label, column_lines=False):
    """A rows x columns grid of tiles coloured by the thread that computes each (None: nobody)."""
    cell_w, cell_h = width / columns, min(0.55, 20.0 / rows)
    sheet.text(x0, top + 0.3, label, size=SMALL, va="bottom")
    for j in range(columns):  # one rectangle per run of tiles of one thread down a column: no seams between tiles
        start = 0
        for i in range(1, rows + 1):
            if i == rows or owner[i][j] != owner[start][j]:
                o = owner[start][j]
                sheet.box(x0 + j * cell_w, top - start * cell_h, cell_w, (i - start) * cell_h,
                          face=COLOURS[o] if o is not None else "white", edge="none")
                start = i
    if column_lines:
        for j in range(1, columns):
            sheet.ax.plot([x0 + j * cell_w] * 2, [top, top - rows * cell_h], color="white", linewidth=1.2)
    sheet.box(x0, top, width, rows * cell_h, face="none")
    return top - rows * cell_h


def stage9(stage, sheet: Sheet):
    module = stage_module(stage)
    plan = planned(stage)
    arch = plan.model.arch
    sheet.code([
        ("for tile in prange(groups * positions):           # every thread: a contiguous range of tiles", True),
        ("    if pixels_first: group, position = tile % groups, tile // groups", True),
        ("    else:            group, position = tile // positions, tile % positions", True),
        ("    ho, wo0 = the position's output row and first column", True),
        (f"    acc[{module.ROWS}][{module.BLOCK}] = bias; for kh, kw, ci: ...      # the tile: stage 8's", False),
        ("pixels_first = x.nbytes > weight.nbytes          # chosen per conv, when the source is generated", True),
    ], f"the tile kernel's outer loop ({previous(stage)})")
    order = {}
    for conv in arch.convs:
        (emitted,) = [e for e in plan.of(conv.name) if e.kernel.startswith("conv")]
        order[conv.name] = emitted.constants
    threads = MANY_THREADS
    wide = example_conv(arch)
    c = order[wide.name]
    groups, positions, per_row = c["groups"], c["positions"], c["column_tiles"]
    assert c["pixels_first"]
    deep = next(conv for conv in arch.convs if conv.kernel == 3 and not order[conv.name]["pixels_first"]
                and order[conv.name]["groups"] > threads)
    d = order[deep.name]
    sheet.text(MARGIN, sheet.y, f"Which of {threads} threads computes each output tile ({module.ROWS} pixels x "
               f"{module.BLOCK} channels); white: no thread", va="top")
    sheet.y -= 4.5
    top = sheet.y
    panel = (SPAN - 2 * MARGIN - 4 * GAP) / 4
    rows_drawn = positions // per_row

    def owners(numbering, count):
        owner = {}
        for t, part in enumerate(np.array_split(np.arange(count), threads)):
            for tile in part:
                owner[numbering(int(tile))] = t
        return owner

    stage8_owner = {(g, p): (g if g < threads else None) for g in range(groups) for p in range(positions)}
    pixel_owner = owners(lambda t: (t % groups, t // groups), groups * positions)
    x = MARGIN
    bottoms = []
    for owner, label in ((stage8_owner, f"stage {stage_number(stage) - 1}: prange over {groups} groups"),
                         (pixel_owner, "pixel-major")):
        for g in range(groups):
            grid = [[owner.get((g, r * per_row + j)) for j in range(per_row)] for r in range(rows_drawn)]
            bottoms.append(thread_grid(sheet, x + g * (panel / groups), top, panel / groups - 0.8, grid, rows_drawn,
                                       per_row, f"{label}\ngroups 0-{groups - 1}, left to right" if g == 0 else ""))
        x += panel + GAP
    group_owner = owners(lambda t: (t // d["positions"], t % d["positions"]), d["groups"] * d["positions"])
    grid = [[group_owner[(g, p)] for g in range(d["groups"])] for p in range(d["positions"])]
    bottoms.append(thread_grid(sheet, x, top, panel, grid, d["positions"], d["groups"],
                               f"group-major: {deep.name}\n{d['groups']} groups (across) x {d['positions']} tiles",
                               column_lines=True))
    x += panel + GAP
    sheet.text(x, top + 0.3, "threads", size=SMALL, va="bottom")
    for t in range(threads):
        sheet.box(x, top - t * 2.2, 2, 1.6, face=COLOURS[t])
        sheet.text(x + 2.6, top - t * 2.2 - 0.8, f"thread {t}", size=SMALL)
    idle = [str(t) for t in range(threads) if t >= groups]
    idle_text = f"threads {', '.join(idle)} idle" if idle else "no thread idle on this CPU's tile"
    sheet.text(MARGIN, min(bottoms) - 0.6, f"left: {wide.name}, {wide.out_size}x{wide.out_size}x{wide.out_channels}"
               f" ({rows_drawn} output rows x {per_row} tiles per group), in stage {stage_number(stage) - 1} "
               f"({idle_text}) and here; right: {deep.name}, {d['groups']} groups of {d['positions']} tiles",
               size=SMALL, va="top")
    sheet.y = min(bottoms) - 3.5
    sheet.text(MARGIN, sheet.y, "The order of each of the network's convs, in order (x.nbytes > weight.nbytes: "
               "pixel-major):", va="top")
    sheet.y -= 4.6
    w = (SPAN - 2 * MARGIN) / len(arch.convs)
    h = 2.4
    for i, conv in enumerate(arch.convs):
        first = order[conv.name]["pixels_first"]
        sheet.box(MARGIN + i * w, sheet.y, w, h, face=PIXEL_MAJOR if first else GROUP_MAJOR, edge="white")
        if i == 0 or group_of(conv.name) != group_of(arch.convs[i - 1].name):
            below = i > 0
            sheet.ax.plot([MARGIN + i * w] * 2, [sheet.y + (0.4 if below else 1.6),
                                                 sheet.y - h - (0.4 if below else 0)], color="black", linewidth=1)
            sheet.text(MARGIN + i * w + 0.3, sheet.y - h - 0.9 if below else sheet.y + 0.3, group_of(conv.name),
                       size=SMALL, va="top" if below else "bottom")
    sheet.y -= h + 3.2
    sheet.box(MARGIN, sheet.y, 2, 1.5, face=PIXEL_MAJOR)
    sheet.text(MARGIN + 2.6, sheet.y - 0.75, "pixel-major: a thread keeps to its part of the image", size=SMALL)
    sheet.box(MARGIN + 45, sheet.y, 2, 1.5, face=GROUP_MAJOR)
    sheet.text(MARGIN + 47.6, sheet.y - 0.75, "group-major: a thread's tiles share one group's weights", size=SMALL)
    sheet.y -= 1.5 + GAP


def winograd_check(b_t, g, a_t, m: int):
    """Winograd's Y = A^T [(G g G^T) * (B^T d B)] A must equal the direct 3x3 correlation of a patch d."""
    rng = np.random.default_rng(0)
    kernel = len(g[0])
    d, k = rng.standard_normal((m + kernel - 1,) * 2), rng.standard_normal((kernel, kernel))
    b_t, g, a_t = np.array(b_t, float), np.array(g, float), np.array(a_t, float)
    y = a_t @ ((g @ k @ g.T) * (b_t @ d @ b_t.T)) @ a_t.T
    direct = np.array([[np.sum(d[i:i + kernel, j:j + kernel] * k) for j in range(m)] for i in range(m)])
    if not np.allclose(y, direct):
        raise AssertionError(f"the F({m}x{m}, 3x3) matrices drawn do not compute a 3x3 convolution")


def docstring_matrix(template: str, name: str):
    """A matrix written as `name = [[...]]` in a template's docstring."""
    match = re.search(re.escape(name) + r" = (\[\[.*?\]\])", template)
    return ast.literal_eval(match.group(1))


def winograd_flow(sheet: Sheet, m: int, b_t, g, a_t, rows: int, block: int):
    """Winograd F(m x m, 3x3) on one tile: the three transforms and the batched products, left to right."""
    n = m + 2
    points = n * n
    patch, cell, g_cell, out_cell, gap = 1.4, 2.2, 3.4, 1.6, 4.0
    widths = [(n + m) * patch, n * cell, 9.0, None, n * cell, max(m * out_cell, 7.0)]
    widths[3] = SPAN - 2 * MARGIN - sum(w for w in widths if w) - gap * (len(widths) - 1)
    lefts = [MARGIN + sum(widths[:i]) + gap * i for i in range(len(widths))]
    top = sheet.y - 1.5
    height = n * cell
    middle = top - height / 2
    # two neighbouring input patches, m apart
    region = lefts[0]
    for i in range(n):
        for j in range(n + m):
            sheet.box(region + j * patch, top - i * patch, patch, patch, face=X_COLOUR if j < n else "white",
                      edge="0.6")
    sheet.ax.add_patch(Rectangle((region + m * patch, top - n * patch), n * patch, n * patch, fill=False,
                                 edgecolor=COLOURS[3], linewidth=1.6, linestyle="--"))
    sheet.text(region, top + 0.9, f"input patch d: {n}x{n}", size=SMALL, va="bottom")
    sheet.text(region, top - max(height, n * patch) - 0.8, f"dashed: the next patch, {m} pixels further: neighbouring "
               "patches overlap by 2", size=SMALL, va="top")
    sheet.matrix(lefts[1], top, b_t, "B^T: V = B^T d B", cell=cell)
    sheet.box(lefts[2], top, widths[2], height, face=X_COLOUR + "88")
    sheet.text(lefts[2] + widths[2] / 2, middle, f"V[k, tile, ci]\n{points} points k", size=SMALL, ha="center")
    sheet.box(lefts[3], top, widths[3], height, face=ACC_COLOUR + "88")
    sheet.text(lefts[3] + widths[3] / 2, middle, f"{points} matrix products\nM[k] = V[k] @ U[k]\n(tiles x in) @ "
               f"(in x out)\nregister tile {rows} x {block}", size=SMALL, ha="center")
    sheet.matrix(lefts[4], top, a_t, "A^T: out = A^T M A", cell=cell)
    for i in range(m):
        for j in range(m):
            sheet.box(lefts[5] + j * out_cell, top - i * out_cell, out_cell, out_cell, face=ACC_COLOUR)
    sheet.text(lefts[5], top + 0.9, f"out: {m}x{m}", size=SMALL, va="bottom")
    sheet.text(lefts[5], top - m * out_cell - 0.8, "+ bias, ReLU", size=SMALL, va="top")
    ends = [lefts[0] + widths[0], lefts[1] + widths[1], lefts[2] + widths[2], lefts[3] + widths[3],
            lefts[4] + widths[4]]
    for end, start in zip(ends, lefts[1:], strict=True):
        sheet.arrow((end + 0.4, middle), (start - 0.4, middle))
    # the weights, transformed once, below
    wy = top - max(height, n * patch) - 7
    kx = lefts[1]
    k = len(g[0])
    sheet.text(kx, wy + 0.9, f"{k}x{k} kernel g", size=SMALL, va="bottom")
    for i in range(k):
        for j in range(k):
            sheet.box(kx + j * out_cell, wy - i * out_cell, out_cell, out_cell, face=W_COLOUR)
    right, bottom = sheet.matrix(kx + k * out_cell + gap, wy, g, "G: U = G g G^T", cell=g_cell)
    arrow_y = wy - k / 2 * out_cell
    sheet.arrow((kx + k * out_cell + 0.4, arrow_y), (kx + k * out_cell + gap - 0.4, arrow_y))
    sheet.text(right + 1.5, wy - 0.5, f"U[k, ci, co]: {points} points,\ncomputed once, when the weights\nare "
               "loaded (fold)", size=SMALL, va="top")
    sheet.arrow((right + 12, wy + 0.4), (lefts[3] + widths[3] / 2, top - height - 0.4), colour="0.4")
    sheet.y = bottom - GAP


def layer_use(sheet: Sheet, arch, choose, label):
    """Per layer group, the 3x3 convs' output size and what `choose` picks for them."""
    sheet.text(MARGIN, sheet.y, label, va="top")
    sheet.y -= 2.4
    seen = {}
    for conv in arch.convs:
        if conv.kernel == 3:
            seen.setdefault(group_of(conv.name), []).append(conv)
    x = MARGIN
    w = (SPAN - 2 * MARGIN) / len(seen)
    picks = list(dict.fromkeys(choose(convs[0]) for convs in seen.values() if choose(convs[0])))
    for group, convs in seen.items():
        conv = convs[0]
        picked = choose(conv)
        sheet.box(x, sheet.y, w - 1, 4.6, face=(ACC_COLOUR, W_COLOUR)[picks.index(picked)] if picked else PALE)
        sheet.text(x + (w - 1) / 2, sheet.y - 2.3, f"{group}: {len(convs)} x 3x3 on {conv.out_size}x{conv.out_size}"
                   f"x{conv.out_channels}\n{picked or 'direct tile kernel'}", size=SMALL, ha="center")
        x += w
    sheet.y -= 4.6 + GAP


def stage10(stage, sheet: Sheet):
    module = stage_module(stage)
    b_t = docstring_matrix(module.WINOGRAD_INPUT, "B^T")
    a_t = docstring_matrix(module.WINOGRAD_OUTPUT, "A^T")
    g = module.WINOGRAD_G.tolist()
    m, n = module.WINOGRAD_OUT, module.WINOGRAD_IN
    winograd_check(b_t, g, a_t, m)
    arch = resnet50(COURSE_VARIANT)
    sheet.code([
        (f"if uses_winograd(conv):            # a 3x3 stride-1 conv whose {m}x{m} tiles come in multiples of ROWS",
         True),
        (f"    V[k, tile, ci] = (B^T d B)[k]  # every {n}x{n} input patch d; additions only", True),
        (f"    for k in range({module.WINOGRAD_POINTS}): M[k] = V[k] @ U[k]   # U = G g G^T, at load time; the "
         "register tile", True),
        (f"    out[{m}x{m} block] = relu(A^T M A + bias)", True),
        ("else:", True),
        ("    the tile kernel of stage 9", False),
    ], f"a conv ({previous(stage)}): Winograd F({m}x{m}, 3x3), three generated kernels")
    winograd_flow(sheet, m, b_t, g, a_t, module.ROWS, module.BLOCK)
    layer_use(sheet, arch, lambda c: f"F({m}x{m}, 3x3)" if module.uses_winograd(c) else None,
              f"Where it is used (uses_winograd): {n * n} multiplies per {m}x{m} block of outputs, "
              f"{n * n / (m * m):g} per output and input channel instead of {example_conv(arch).kernel ** 2}")


def stage11(stage, sheet: Sheet):
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    sizes = module.WINOGRAD_TILES
    for m in sizes:
        winograd_check(module.WINOGRAD_B_T[m], module.WINOGRAD_G[m].tolist(), module.WINOGRAD_A_T[m], m)
    big, small = max(sizes), min(sizes)
    sheet.code([
        (f"m = winograd_tile(conv)           # the biggest of {sizes} whose m x m tiles fit, ROWS at a time", True),
        ("if m:", False),
        ("    V[k, tile, ci] = (B^T d B)[k]  # every (m+2)x(m+2) patch d: sums generated from B^T's rows", True),
        ("    for k in range((m + 2) ** 2): M[k] = V[k] @ U[k]", True),
        ("    out[m x m block] = relu(A^T M A + bias)", False),
        ("else: the tile kernel", False),
    ], f"a conv ({previous(stage)})")
    line = next(text for text in module.transform_source(big)["input_column"].splitlines() if "v[" in text)
    winograd_flow(sheet, big, module.WINOGRAD_B_T[big], module.WINOGRAD_G[big].tolist(), module.WINOGRAD_A_T[big],
                  module.ROWS, module.BLOCK)
    sheet.code([(line.strip(), False)], "one row of B^T as a line of the generated input transform "
               "(transform_source)")
    layer_use(sheet, arch, lambda c: f"F({module.winograd_tile(c)}x{module.winograd_tile(c)}, 3x3)"
              if module.winograd_tile(c) else None,
              f"Where each size is used (winograd_tile): multiplies per output and input channel: direct "
              f"{example_conv(arch).kernel ** 2}, "
              f"F({small}x{small}) {(small + 2) ** 2 / small ** 2:g}, F({big}x{big}) "
              f"{(big + 2) ** 2 / big ** 2:g}")


def target_candidates(module, conv, tiles) -> list:
    """The stage's candidates(conv) for a target's tiles (register_tiles) in place of this CPU's TILES."""
    saved = module.TILES
    module.TILES = tiles
    try:
        return module.candidates(conv)
    finally:
        module.TILES = saved


def register_file(sheet: Sheet, x0, y, registers: int, rows: int, vectors: int, cell: float, h: float):
    """The vector registers as a row of cells: a tile's rows x vectors sums, its weight vectors, its broadcast
    input, the rest free."""
    faces = [SUM_COLOURS[i % vectors % 2] for i in range(rows * vectors)] + [W_COLOUR] * vectors + [X_COLOUR]
    labels = [""] * rows * vectors + [f"w{v}" for v in range(vectors)] + ["x"]
    sheet.cells(x0, y, registers, cell, h, faces + ["white"] * (registers - len(faces)), labels, size=SMALL - 2)


def tile_candidates(sheet: Sheet, module):
    """register_tiles on each of TUNED_TARGETS, drawn in its register file; returns {target name: tiles}."""
    found = {}
    label_w, cell, h = 13.0, 1.75, 2.0
    x0 = MARGIN + label_w
    sheet.text(MARGIN, sheet.y, "The candidates (register_tiles): the tiles of channel_vectors(registers) channel "
               f"vectors and ROW_CHOICES = {module.ROW_CHOICES} rows whose sums, weight vectors and broadcast input "
               "fit the vector registers, one cell a register:", va="top", wrap=True)
    sheet.y -= 5.2
    legend = ((SUM_COLOURS[0], "sums (acc), a vector of channels each"), (W_COLOUR, "weight vectors, loaded"),
              (X_COLOUR, "input, broadcast"), ("white", "free"))
    x = x0
    for face, text in legend:
        sheet.box(x, sheet.y, 2, 1.5, face=face)
        sheet.text(x + 2.6, sheet.y - 0.75, text, size=SMALL)
        x += 4 + len(text) * 0.72
    sheet.y -= 3.3
    for name, cpu in TUNED_TARGETS:
        bits, registers = vector_registers(X86, cpu, "")
        lanes = bits // module.FLOAT32_BITS
        tiles = module.register_tiles(registers, lanes)
        vectors = module.channel_vectors(registers)
        found[name] = tiles
        sheet.text(MARGIN, sheet.y, f"{name} ({cpu}): {registers} registers of {bits} bits, {lanes} lanes: "
                   f"{vectors} channel vector{'s' * (vectors > 1)}, tiles of {vectors * lanes} channels",
                   size=SMALL, va="top", weight="bold")
        sheet.y -= 2.0
        for rows, block in tiles:
            used = rows * vectors + vectors + 1
            sheet.text(MARGIN + 1, sheet.y - h / 2, f"{rows}x{block}", size=FONT)
            register_file(sheet, x0, sheet.y, registers, rows, vectors, cell, h)
            loads = f"{vectors} weight load{'s feed' if vectors > 1 else ' feeds'} {rows * vectors} FMAs"
            sheet.text(x0 + registers * cell + 1.5, sheet.y - h / 2, f"{rows} x {vectors} + {vectors} + 1 = {used} of "
                       f"{registers} registers\n{loads}, per (kh, kw, ci)", size=SMALL)
            sheet.y -= h + 1.4
        sheet.y -= 1.2
    sheet.y -= GAP - 1.2
    return found


def tuning_flow(sheet: Sheet, stage, rounds: list[tuple[str, int]]):
    """common.tuning.tune: the rounds planned and compiled, their passes timed in turns, the fastest kept."""
    module = stage_module(stage)
    sheet.text(MARGIN, sheet.y, "At the first run on a CPU (common.tuning.tune), on stand-in weights (network):",
               va="top")
    sheet.y -= 2.8
    top, h, gap = sheet.y, 6.6, 2.0
    w = (SPAN - 2 * MARGIN - gap * (len(rounds) - 1)) / len(rounds)
    for r, (text, new) in enumerate(rounds):
        x = MARGIN + r * (w + gap)
        sheet.box(x, top, w, h, face=COLOURS[r] + "40", edge=COLOURS[r])
        compiled = (f"{new} kernels compiled: the stage's own, as any first run" if not r else
                    f"{new} new kernels compiled (a process per core), if they fit in\nTUNING_SECONDS - "
                    f"TIMING_SECONDS = {TUNING_SECONDS} - {TIMING_SECONDS} = {TUNING_SECONDS - TIMING_SECONDS} s")
        sheet.text(x + 1, top - 0.6, f"round {r}: the forward pass planned with {text}\n{compiled}", size=SMALL,
                   va="top", linespacing=1.3)
    sheet.y = top - h - 2.4
    sheet.text(MARGIN, sheet.y, f"then the rounds' passes in turns, an untimed one each, then PASSES = {PASSES} "
               "each, every kernel call timed: a slow moment of a shared machine slows every round alike",
               size=SMALL, va="top")
    sheet.y -= 2.2
    turns = [(r, False) for r in range(len(rounds))] + [(r, True) for _ in range(PASSES) for r in range(len(rounds))]
    pw = (SPAN - 2 * MARGIN) / len(turns)
    for i, (r, timed) in enumerate(turns):
        sheet.box(MARGIN + i * pw, sheet.y, pw - 0.3, 2.2, face=COLOURS[r] if timed else COLOURS[r] + "40",
                  edge="white" if timed else COLOURS[r])
        sheet.text(MARGIN + (i + 0.5) * pw - 0.15, sheet.y - 1.1, str(r), size=SMALL - 1, ha="center",
                   color="white" if timed else "black")
    sheet.y -= 2.2 + 0.5
    for i, (r, timed) in enumerate(turns):
        if not r:
            count = len(rounds)
            sheet.text(MARGIN + (i + count / 2) * pw, sheet.y, f"pass {i // count}" if timed else "untimed",
                       size=SMALL - 1, ha="center", va="top", color="0.3")
    sheet.y -= 2.0
    sheet.arrow((MARGIN, sheet.y), (SPAN - MARGIN, sheet.y))
    sheet.text(SPAN - MARGIN, sheet.y - 0.5, "time; in each box, its round", size=SMALL, ha="right", va="top")
    sheet.y -= 3.4
    name = re.sub(r"_[0-9a-f]{8,}\.json$", "_<digest>.json", choice_path(Path(module.__file__)).name)
    steps = ("per shape and round: its calls' ms, and\nthe call after each (it reads their output),\n"
             f"summed over the pass; median of {PASSES}",
             "per shape: the candidate with\nthe smallest median is its choice",
             f"kept in the kernel cache as\n{name}\n(the digest: model.py, CPU, versions);\n"
             "every later run loads it: 'loaded tuning'")
    widths = (33.0, 24.0, None)
    widths = (*widths[:2], SPAN - 2 * MARGIN - sum(widths[:2]) - 2 * 2 * gap)
    x, h = MARGIN, 6.0
    for i, (text, width) in enumerate(zip(steps, widths, strict=True)):
        sheet.box(x, sheet.y, width, h, face=PALE)
        sheet.text(x + 0.8, sheet.y - h / 2, text, size=SMALL)
        if i:
            sheet.arrow((x - 2 * gap + 0.4, sheet.y - h / 2), (x - 0.4, sheet.y - h / 2))
        x += width + 2 * gap
    sheet.y -= h + GAP


def shape_candidates(sheet: Sheet, module, arch, tiles: dict):
    """The conv shapes in network order, each with what its tile's rows run over and its candidates' rows."""
    first = {}
    for conv in arch.convs:
        first.setdefault(module.shape_name(conv), conv)
    picks = {}
    for shape, conv in first.items():
        rows = {name: [c.rows for c in target_candidates(module, conv, t)] for name, t in tiles.items()}
        if len({tuple(r) for r in rows.values()}) != 1:
            raise AssertionError(f"{shape}: the targets' candidates have other rows: {rows}")
        picks[shape] = next(iter(rows.values()))
    two = sum(len(r) > 1 for r in picks.values())
    sheet.text(MARGIN, sheet.y, f"The candidates of each of the {len(first)} conv shapes, in network order "
               f"(candidates): {two} have a second one, with {max(module.ROW_CHOICES)} rows where that divides what "
               "the tile's rows run over: a row of output pixels or, for Winograd's products, the F(m x m) tiles:",
               va="top", wrap=True)
    sheet.y -= 7.6
    w = (SPAN - 2 * MARGIN) / len(first)
    h = 6.0
    top = sheet.y
    previous_group = None
    for i, (shape, conv) in enumerate(first.items()):
        m = module.winograd_tile(conv)
        over = (conv.out_size // m) ** 2 if m else conv.out_size
        rows = picks[shape]
        face = (COLOURS[1] + "90") if len(rows) > 1 else PALE
        sheet.box(MARGIN + i * w, top, w, h, face=face, edge="white", hatch="///" if m else None)
        winograd = f"\nF({m}x{m})" if m else ""
        sheet.text(MARGIN + (i + 0.5) * w, top - h / 2, f"{over}{winograd}\n{', '.join(map(str, rows))}",
                   size=SMALL - 0.5, ha="center", linespacing=1.3,
                   bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.8, "alpha": 0.8} if m else None)
        group = group_of(conv.name)
        if group != previous_group:
            sheet.ax.plot([MARGIN + i * w] * 2, [top + 1.6, top - h - 0.4], color="black", linewidth=1)
            sheet.text(MARGIN + i * w + 0.3, top + 0.3, group, size=SMALL, va="bottom")
            previous_group = group
    sheet.y = top - h - 1.2
    pairs = "; ".join(f"{' and '.join(f'{r}x{b}' for r, b in t)} on {name}" for name, t in tiles.items())
    sheet.text(MARGIN, sheet.y, "In a box: what its rows run over, its candidates' rows. Orange: two candidates "
               f"({pairs}); grey: one, stage 11's", size=SMALL, va="top")
    sheet.y -= 2.0 + GAP


def stage12(stage, sheet: Sheet):
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    native = dict(TUNED_TARGETS)["AVX-512"]
    bits, registers = vector_registers(X86, native, "")
    tiles = module.register_tiles(registers, bits // module.FLOAT32_BITS)
    first = {}
    for conv in arch.convs:
        first.setdefault(module.shape_name(conv), conv)
    options = {shape: target_candidates(module, conv, tiles) for shape, conv in first.items()}
    compiled, rounds, plans = set(), [], []
    for rank in range(max(map(len, options.values()))):
        choices = {shape: o[rank if rank < len(o) else 0] for shape, o in options.items()}
        plan = planned(stage, choices)
        plans.append(plan)
        kernels = set(plan.model.kernel_sources)
        counts = {}
        for choice in choices.values():
            counts[module.label(choice)] = counts.get(module.label(choice), 0) + 1
        text = ", ".join(f"{label} on {n}" for label, n in counts.items())
        rounds.append((f"every shape's {ORDINALS[rank]} candidate\n(its first where it has fewer): {text} shapes"
                       if rank else f"every shape's first candidate\n(stage 11's tile): {text} shapes",
                       len(kernels - compiled)))
        compiled |= kernels
    example = next(c for c in arch.convs if module.winograd_tile(c) is None and len(options[module.shape_name(c)]) > 1
                   and c.name.endswith("conv3"))
    (named,) = [e.kernel for e in plans[-1].of(example.name)]
    r0, b0 = tiles[0]
    sheet.code([
        ("choices = the choice file of this CPU and versions, or tune() now    # once per CPU: common.tuning", True),
        (f"rows, block = choices[shape_name(conv)]     # stage 11: ROWS x BLOCK = {r0} x {b0} for every conv "
         "(AVX-512)", True),
        ("weight, bias = fold(conv, ..., choice)      # packed [group][kh][kw][ci][block] for its tile", True),
        ("for tile in prange(groups * positions):     # stage 11's tile kernel (or Winograd's products)", False),
        ("    acc[rows][block] = bias; for kh, kw, ci: for r in range(rows): ... acc[r, c] += xv * w[...]", True),
        (f"{named}(...)   # a kernel's name carries its tile", True),
    ], f"a conv ({previous(stage)})", size=CODE_FONT - 0.5)
    found = tile_candidates(sheet, module)
    tuning_flow(sheet, stage, rounds)
    shape_candidates(sheet, module, arch, found)
    sheet.caption("Nothing measured is drawn: which candidate wins, shape by shape, differs from CPU to CPU and is "
                  "in each machine's choice file (the README's table: the Intel Xeon the stage was written on).")


def vnni_target(module):
    """(name, LLVM CPU name, bits, registers, lanes, tiles) of VNNI_TARGET, as the stage would size them there."""
    name, cpu = VNNI_TARGET
    bits, registers = vector_registers(X86, cpu, "")
    if bits not in module.VNNI:
        raise AssertionError(f"{cpu}: {bits}-bit vectors, which have no vpdpbusd in the stage's VNNI table")
    lanes = bits // module.FLOAT32_BITS
    return name, cpu, bits, registers, lanes, module.register_tiles(registers, lanes)


def require(source: str, *fragments: str):
    """The code box draws these lines of a template: they must still be in it."""
    missing = [f for f in fragments if f not in source]
    if missing:
        raise AssertionError(f"the stage's template no longer has {missing}: redraw its code box")


def int8_planned(stage: str, choices: dict) -> Plan:
    """planned() for stage 13, through its own planning on stand-in weights (Model.network, its tuning's): its units
    and input codes as Model() sets them, with every calibrated range the stand-in STAND_IN_RANGES[0] (calibration
    is not run) and the photo's codes from input_code on the preprocessing of the course's weights (their
    manifest's)."""
    module = stage_module(stage)
    stem = resnet50(COURSE_VARIANT).stem
    unit, zero_point = module.input_code(CAFFE_PREPROCESSING)
    side = stem.in_size + 2 * stem.padding
    return planned(stage, plan=lambda model: model.network({shape: list(c) for shape, c in choices.items()}),
                   stand_ins={}, input_unit=unit,
                   units={name: STAND_IN_RANGES[0] / module.U8_MAX for name in tensor_names(COURSE_VARIANT)},
                   image=np.empty((stem.in_size, stem.in_size, stem.in_channels), np.float32),
                   input=np.full((side, side, module.quads(stem.in_channels) * module.QUAD), zero_point, np.uint8))


def folded(module, conv: Conv, weight, choice, batch_norm=None, **photo):
    """module.fold on an OIHW weight and a batch norm (gamma, beta, mean, var; by default one that changes nothing);
    photo: fold's zero_point and unit, for a conv that reads the photo's codes."""
    out = conv.out_channels
    gamma, beta, mean, var = batch_norm or (np.ones(out), np.zeros(out), np.zeros(out), np.full(out, 1 - KERAS_BN_EPS))
    tensors = {f"{conv.name}.weight": weight, f"{conv.bn}.weight": gamma, f"{conv.bn}.bias": beta,
               f"{conv.bn}.running_mean": mean, f"{conv.bn}.running_var": var}
    return module.fold(conv, tensors.__getitem__, KERAS_BN_EPS, choice, **photo)


def packed_steps(module, conv: Conv, choice, per_int32: int, element=np.int8) -> list[tuple[str, int]]:
    """The step in bytes of each index of fold's packing, per_int32 input channels to an int32 (stage 13's quads,
    stage 14's pairs): weights that are all 1 but one -1 are folded, and that one found in the packed values (of
    type element: int8 codes, where -1 is -127, or bfloat16 bits as int16, where its sign bit makes it negative), at
    the origin and one step along each index."""
    k = conv.kernel

    def offset(index) -> int:
        weight = np.ones((conv.out_channels, conv.in_channels, k, k))
        weight[index] = -1
        (found,) = np.flatnonzero(folded(module, conv, weight, choice)[0].view(element) < 0)
        return int(found) * np.dtype(element).itemsize

    origin = offset((0, 0, 0, 0))
    steps = (("group", (choice.block, 0, 0, 0)), ("kh", (0, 0, 1, 0)), ("kw", (0, 0, 0, 1)),
             (f"ci/{per_int32}", (0, per_int32, 0, 0)), ("block", (1, 0, 0, 0)), (str(per_int32), (0, 1, 0, 0)))
    return [(name, offset(step) - origin) for name, step in steps]


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
    scale: np.ndarray  # Model.conv's multipliers of the sums (out channels), then of the residual
    bias: np.ndarray  # and its bias, in the output's units
    residual: np.ndarray  # a residual's u8 codes, HWC


def quantized(module, choice, lanes: int) -> Quantized:
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
    # Model.conv's arrays for this conv, as the kernel gets them, with the stand-in units
    model = object.__new__(module.Model)
    vars(model).update(choices={module.shape_name(conv): choice}, pool={conv.name: (packed, weight_scale, bias)},
                       kernel_sources={}, calls=[], arrays=[], lines=[], tile_signatures={})
    residual = rng.integers(0, module.U8_MAX + 1, (1, 1, block)).astype(np.uint8)
    units = tuple(r / module.U8_MAX for r in STAND_IN_RANGES)
    model.conv(x, conv, np.empty((1, 1, block), np.uint8), residual, relu=True, units=units)
    (_, arrays), = model.calls
    return Quantized(conv, weight, codes, weight_scale, bias - shifted, x, steps, arrays[3], arrays[2], residual)


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


def bracket(sheet: Sheet, x0, x1, y, text, below=True, size=SMALL, ha="center"):
    """A square bracket from x0 to x1 at y, opening up (below a row) or down, its text outside it: centred, or
    from its left end (ha="left")."""
    d = -0.5 if below else 0.5
    sheet.ax.plot([x0 + 0.15, x0 + 0.15, x1 - 0.15, x1 - 0.15], [y, y + d, y + d, y], color=EDGE, linewidth=0.9)
    sheet.text((x0 + x1) / 2 if ha == "center" else x0, y + 2 * d, text, size=size, ha=ha,
               va="top" if below else "bottom")


def paragraph(sheet: Sheet, s: str, x=MARGIN, width=SPAN - 2 * MARGIN, size=FONT, gap=1.0, **kwargs):
    """Text wrapped to `width` units from (x, sheet.y), top down; moves sheet.y below it and `gap` further."""
    characters = int(width * POINTS_PER_UNIT / (CHARACTER_EMS * size))
    lines = [line for part in s.split("\n") for line in textwrap.wrap(part, characters) or [""]]
    sheet.text(x, sheet.y, "\n".join(lines), size=size, va="top", linespacing=LINE_SPACING, **kwargs)
    sheet.y -= len(lines) * LINE_SPACING * size / POINTS_PER_UNIT + gap


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
    label_w, h = 27.0, 2.3
    x0 = MARGIN + label_w
    w = (SPAN - MARGIN - x0) / lanes
    top = sheet.y
    for j in range(lanes):
        sheet.text(x0 + (j + 0.5) * w, top + 0.2, f"co {j}", size=SMALL - 1, ha="center", va="bottom")
    sheet.text(x0 - 1, top + 0.2, "lane j: output channel j", size=SMALL - 1, ha="right", va="bottom")
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
    fma = bits // module.FLOAT32_BITS
    terms = " + ".join(f"{a} x {b}" for a, b in zip(x, codes[0], strict=True))
    widest = max(resnet50(COURSE_VARIANT).convs, key=lambda c: c.kernel**2 * c.in_channels)
    longest = widest.kernel**2 * widest.in_channels
    largest = longest * module.U8_MAX * module.INT8_MAX
    other = min(module.VNNI)
    paragraph(sheet, f"Lane 0: {terms} = {after[0] - before[0]}, added to {before[0]}: {after[0]}.\n"
              f"Per instruction: {lanes} lanes x QUAD {quad} = {lanes * quad} multiply-adds; a float32 FMA: {bits} / "
              f"FLOAT32_BITS {module.FLOAT32_BITS} = {fma} lanes x 1 = {fma}: {lanes * quad // fma}x (AVX-VNNI, "
              f"{other} bits: {other // module.FLOAT32_BITS * quad} vs {other // module.FLOAT32_BITS})."
              f"\nNo sum overflows: the longest, {longest:,} products ({widest.name}: {widest.kernel}x{widest.kernel}"
              f" x {widest.in_channels}), is at most {longest:,} x {module.U8_MAX} x {module.INT8_MAX} = "
              f"{largest:,} < 2^31.", size=SMALL, gap=GAP)


def byte_strip(sheet: Sheet, x, y, items, cell: float, h: float):
    """A row of bytes from (x, y), top left: items are (text above, the bytes' labels, face) for an int32 of bytes,
    or None for "..."; returns the left end of each item."""
    lefts = []
    for item in items:
        lefts.append(x)
        if item is None:
            sheet.text(x + 1.3, y - h / 2, "...", size=SMALL, ha="center")
            x += 2.6
            continue
        above, labels, face = item
        sheet.cells(x, y, len(labels), cell, h, face, labels, size=SMALL - 2, edge="0.6")
        sheet.box(x, y, len(labels) * cell, h, face="none", edge="0.15")
        if above:
            sheet.text(x + len(labels) * cell / 2, y + 0.25, above, size=SMALL - 1.5, ha="center", va="bottom")
        x += len(labels) * cell
    return lefts


def index_steps(sheet: Sheet, x, y, steps):
    """Each index of a layout with its step in bytes, outermost first, as a row of boxes from (x, y)."""
    w, h = 9.5, 3.2
    sheet.text(x, y - h / 2, "each index's\nstep, in bytes:", size=SMALL - 0.5)
    x += 13.0
    for name, step in steps:
        sheet.box(x, y, w - 0.6, h, face=PALE)
        sheet.text(x + (w - 0.6) / 2, y - h / 2, f"[{name}]\n{step:,}", size=SMALL - 0.5, ha="center",
                   linespacing=1.2)
        x += w
    sheet.y = y - h - GAP + 0.5


def weight_strip(sheet: Sheet, lanes, block, group, cell, h, unit, instruction, steps):
    """The first weights of a packed [group][kh][kw][ci/group][block][group] array, `group` values (of `unit`) a
    cell, over two input-channel groups, with the span one dot product instruction reads and each index's step."""
    shown = [*range(INT32_SHOWN), None, lanes - 1, lanes, None, block - 1]

    def run(q, channels):
        return [None if co is None else (f"co {co}", [str(q * group + k) for k in range(group)],
                                         (W_COLOUR, "#fdd0a2")[q % 2]) for co in channels]

    top = sheet.y
    lefts = byte_strip(sheet, MARGIN, top, run(0, shown) + run(1, [*range(INT32_SHOWN - 1), None]), cell, h)
    first, second = lefts[0], lefts[len(shown)]
    sheet.text(first, top + 2.3, f"ci/{group} = 0: {block} output channels x {group} {unit}", size=SMALL - 1,
               va="bottom")
    sheet.text(second, top + 2.3, f"ci/{group} = 1", size=SMALL - 1, va="bottom")
    bracket(sheet, first, lefts[shown.index(lanes - 1)] + group * cell, top - h - 0.4, instruction, size=SMALL - 1)
    bracket(sheet, lefts[shown.index(lanes)], lefts[shown.index(block - 1)] + group * cell, top - h - 0.4,
            f"the next one's (v = {lanes})", size=SMALL - 1)
    index_steps(sheet, MARGIN, top - h - 3.4, steps)


def int8_layouts(sheet: Sheet, module, conv: Conv, choice, x, target):
    """fold's packed weights and the HWC u8 activations x (as Model.plan passes them) as the kernel's int32 quads,
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
    step_h, step_w, step_q = quads_view.strides
    paragraph(sheet, f"Its input, as Model.plan passes it: HWC u8 codes, {size}x{size}x{channel_quads * quad} "
              f"with a border of {conv.padding}, which the kernel views as int32 quads x[h][w][ci/{quad}] "
              f"({size}x{size}x{channel_quads}):", gap=4.4)
    top = sheet.y
    pixel = [*range(INT32_SHOWN), None, channel_quads - 1]
    faces = ((X_COLOUR, "#c6dbef"), ("#c7e9c0", ACC_COLOUR))
    items = [None if c is None else (f"q {c}", [str(c * quad + k) for k in range(quad)], faces[p][c % 2])
             for p, quads in enumerate((pixel, [*range(INT32_SHOWN - 1), None])) for c in quads]
    lefts = byte_strip(sheet, MARGIN, top, items, cell, h)
    sheet.text(lefts[0], top + 2.3, f"pixel (h, w): {channel_quads * quad} bytes", size=SMALL - 1, va="bottom")
    sheet.text(lefts[len(pixel)], top + 2.3, "pixel (h, w + 1)", size=SMALL - 1, va="bottom")
    bracket(sheet, lefts[0], lefts[0] + quad * cell, top - h - 0.4, "one quad: the broadcast", size=SMALL - 1,
            ha="left")
    index_steps(sheet, MARGIN, top - h - 3.4, [("h", step_h), ("w", step_w), (f"ci/{quad}", step_q),
                                                ("byte", codes.strides[-1])])


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
    gap = 2.6
    w = (SPAN - 2 * MARGIN - gap * (len(steps) - 1)) / len(steps)
    h = 4.0
    top = sheet.y
    for i, (label, value, face) in enumerate(steps):
        x = MARGIN + i * (w + gap)
        sheet.box(x, top, w, h, face=face)
        sheet.text(x + w / 2, top - h / 2, label, size=SMALL - 0.5, ha="center", linespacing=1.2)
        sheet.text(x + w / 2, top - h - 0.6, value, size=SMALL - 0.5, ha="center", va="top", linespacing=1.2,
                   color="0.15")
        if i:
            sheet.arrow((x - gap + 0.3, top - h / 2), (x - 0.3, top - h / 2))
    sheet.y = top - h - 4.4
    paragraph(sheet, f"scale[c] = s_x x s_w[c] / s_out and bias[c] / s_out: in the output's codes (Model.conv). In "
              f"the network (Model.plan): {counts['u8']} of the {counts['convs']} convs write u8 codes; the "
              f"{counts['float32']} downsample convs write float32 values (no ReLU: they can be negative; s_out = 1);"
              f" the {counts['residual']} conv3s add a residual, {counts['u8 residual']} as u8 codes, "
              f"{counts['float32 residual']} as a downsample's float32 (scale[co] = 1 / s_out).", gap=GAP)


def stage13(stage, sheet: Sheet):
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    target = vnni_target(module)
    name, cpu, _, _, lanes, tiles = target
    first = {}
    for conv in arch.convs:
        first.setdefault(module.shape_name(conv), conv)
    choices = {shape: target_candidates(module, conv, tiles)[0] for shape, conv in first.items()}
    plan = int8_planned(stage, choices)
    calls = list(zip(plan.emitted, plan.model.calls, strict=True))
    convs = [(e, arrays) for e, (_, arrays) in calls if e.conv is not None]
    residuals = [arrays[4].dtype for e, arrays in convs if e.constants["add_residual"]]
    counts = {"convs": len(convs), "u8": sum(e.constants["quantize"] for e, _ in convs),
              "float32": sum(not e.constants["quantize"] for e, _ in convs), "residual": len(residuals),
              "u8 residual": residuals.count(np.uint8), "float32 residual": residuals.count(np.float32)}
    (photo,) = [e.constants for e in plan.emitted if e.kernel.startswith("input_codes")]
    example = example_conv(arch)
    ((_, example_arrays),) = [(e, a) for e, a in convs if e.conv == example]
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
    int8_layouts(sheet, module, example, choices[module.shape_name(example)], example_arrays[0], target)
    quantization(sheet, module, q, chain)
    photo_codes(sheet, module, q, photo["unit"], photo["zero_point"])
    output_chain(sheet, module, q, chain, counts)


def bf16_target(module):
    """(name, LLVM CPU name, bits, registers, lanes, tiles) of BF16_TARGET, as the stage would size them there."""
    name, cpu = BF16_TARGET
    bits, registers = vector_registers(X86, cpu, "")
    if bits != 512:  # HAS_BF16's condition: vdpbf16ps on 256-bit vectors needs AVX-512 too
        raise AssertionError(f"{cpu}: {bits}-bit vectors, where the stage's vdpbf16ps takes 512")
    lanes = bits // module.FLOAT32_BITS
    return name, cpu, bits, registers, lanes, module.register_tiles(registers, lanes)


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


def from_bits(bits) -> np.ndarray:
    """bfloat16 bits -> the float32s they are, as from_bf16 widens them: 16 zero bits put under them."""
    return (np.asarray(bits, np.uint32) << 16).view(np.float32)


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


def bf16_planned(stage: str, choices: dict) -> Plan:
    """planned() for stage 14, through its own planning on stand-in weights (Model.network, its tuning's), with the
    arrays Model() makes: bfloat16 buffers, the stem's input of whole pairs, float32 logits of whole groups."""
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    stem = arch.stem
    side = stem.in_size + 2 * stem.padding
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    return planned(stage, plan=lambda model: model.network({shape: list(c) for shape, c in choices.items()}),
                   stand_ins={}, buffers=[np.empty(largest, np.uint16) for _ in range(module.NUM_BUFFERS)],
                   image=np.empty((stem.in_size, stem.in_size, stem.in_channels), np.float32),
                   input=np.zeros((side, side, module.pairs(stem.in_channels) * module.PAIR), np.uint16),
                   features=np.empty(arch.fc.in_features, np.uint16),
                   logits=np.empty(-(-arch.fc.out_features // module.LANES) * module.LANES, np.float32))


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
    label_w, h, wh = 27.0, 2.3, 3.0
    x0 = MARGIN + label_w
    w = (SPAN - MARGIN - x0) / lanes
    top = sheet.y
    for j in range(lanes):
        sheet.text(x0 + (j + 0.5) * w, top + 0.2, f"co {j}", size=SMALL - 1, ha="center", va="bottom")
    sheet.text(x0 - 1, top + 0.2, "lane j: output channel j", size=SMALL - 1, ha="right", va="bottom")
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
    """fold's packed weights and the HWC bfloat16 activations x (as Model.plan passes them) as the kernel's int32
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
    step_h, step_w, step_p = pairs_view.strides
    paragraph(sheet, f"Its input, as Model.plan passes it: HWC bfloat16 bits (uint16), {size}x{size}x"
              f"{channel_pairs * pair} with a border of {conv.padding}, which the kernel views as int32 pairs "
              f"x[h][w][ci/{pair}] ({size}x{size}x{channel_pairs}): a pair's low half is the even channel, which "
              "vdpbf16ps multiplies by the weight pair's low half:", gap=4.4)
    top = sheet.y
    pixel = [*range(INT32_SHOWN), None, channel_pairs - 1]
    faces = ((X_COLOUR, "#c6dbef"), ("#c7e9c0", ACC_COLOUR))
    items = [None if c is None else (f"p {c}", [str(c * pair + k) for k in range(pair)], faces[i][c % 2])
             for i, channels in enumerate((pixel, [*range(INT32_SHOWN - 1), None])) for c in channels]
    lefts = byte_strip(sheet, MARGIN, top, items, cell, h)
    sheet.text(lefts[0], top + 2.3, f"pixel (h, w): {channel_pairs * pair} bfloat16s", size=SMALL - 1, va="bottom")
    sheet.text(lefts[len(pixel)], top + 2.3, "pixel (h, w + 1)", size=SMALL - 1, va="bottom")
    bracket(sheet, lefts[0], lefts[0] + pair * cell, top - h - 0.4, "one pair: the broadcast", size=SMALL - 1,
            ha="left")
    index_steps(sheet, MARGIN, top - h - 3.4, [("h", step_h), ("w", step_w), (f"ci/{pair}", step_p),
                                                ("bfloat16", x.strides[-1])])


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
    gap = 2.6
    w = (SPAN - 2 * MARGIN - gap * (len(steps) - 1)) / len(steps)
    h = 4.0
    top = sheet.y
    for i, (label, value, face) in enumerate(steps):
        x = MARGIN + i * (w + gap)
        sheet.box(x, top, w, h, face=face)
        sheet.text(x + w / 2, top - h / 2, label, size=SMALL - 0.5, ha="center", linespacing=1.2)
        sheet.text(x + w / 2, top - h - 0.6, value, size=SMALL - 0.5, ha="center", va="top", linespacing=1.2,
                   color="0.15")
        if i:
            sheet.arrow((x - gap + 0.3, top - h / 2), (x - 0.3, top - h / 2))
    sheet.y = top - h - 4.4
    paragraph(sheet, f"In the network (Model.plan): all {counts['convs']} convs write bfloat16 bits, the "
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
    first = {}
    for conv in arch.convs:
        first.setdefault(module.shape_name(conv), conv)
    choices = {shape: target_candidates(module, conv, tiles)[0] for shape, conv in first.items()}
    plan = bf16_planned(stage, choices)
    calls = list(zip(plan.emitted, plan.model.calls, strict=True))
    convs = [(e, arrays) for e, (_, arrays) in calls if e.conv is not None]
    if any(arrays[4].dtype != np.uint16 for _, arrays in convs):
        raise AssertionError("a conv of the plan does not write bfloat16 bits")
    if any(not e.constants["relu"] and "downsample" not in e.conv.name for e, _ in convs):
        raise AssertionError("a conv other than a downsample conv has no ReLU")
    counts = {"convs": len(convs), "no relu": sum(not e.constants["relu"] for e, _ in convs),
              "residual": sum(e.constants["add_residual"] for e, _ in convs)}
    example = example_conv(arch)
    ((_, example_arrays),) = [(e, a) for e, a in convs if e.conv == example]
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
    bf16_layouts(sheet, module, example, choices[module.shape_name(example)], example_arrays[0], target)
    bf16_output_chain(sheet, module, stem, rounding, counts)


def amx_target(module):
    """(name, LLVM CPU name, bits, registers, lanes, tiles) of AMX_TARGET, as the stage would size them there."""
    name, cpu = AMX_TARGET
    bits, registers = vector_registers(X86, cpu, "")
    lanes = bits // module.FLOAT32_BITS
    return name, cpu, bits, registers, lanes, module.register_tiles(registers, lanes)


@contextlib.contextmanager
def amx_assumed(module):
    """The stage as on a CPU with AMX (on_amx reads HAS_AMX when it is called), so that the picture is the same on
    every machine: only the stage's planning and packing run under it, no tile instruction."""
    saved = module.HAS_AMX
    module.HAS_AMX = True
    try:
        yield
    finally:
        module.HAS_AMX = saved


def amx_planned(stage: str, choices: dict) -> Plan:
    """bf16_planned for stage 15, as on a CPU with AMX, with the tile configurations Model() keeps."""
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    stem = arch.stem
    side = stem.in_size + 2 * stem.padding
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    with amx_assumed(module):
        return planned(stage, plan=lambda model: model.network({shape: list(c) for shape, c in choices.items()}),
                       stand_ins={}, tile_configs={},
                       buffers=[np.empty(largest, np.uint16) for _ in range(module.NUM_BUFFERS)],
                       image=np.empty((stem.in_size, stem.in_size, stem.in_channels), np.float32),
                       input=np.zeros((side, side, module.pairs(stem.in_channels) * module.PAIR), np.uint16),
                       features=np.empty(arch.fc.in_features, np.uint16),
                       logits=np.empty(-(-arch.fc.out_features // module.LANES) * module.LANES, np.float32))


def tile_shapes(module, config) -> tuple[int, np.ndarray, np.ndarray]:
    """tile_config's 64 bytes decoded as ldtilecfg reads them: (palette, bytes per row of each of the 16 tiles'
    slots, rows of each)."""
    config = np.asarray(config, np.uint8)
    slots = (module.ROWS_AT - module.COLUMN_BYTES_AT) // 2
    return (int(config[0]), config[module.COLUMN_BYTES_AT: module.ROWS_AT].view(np.uint16).copy(),
            config[module.ROWS_AT: module.ROWS_AT + slots].copy())


class TileUnit:
    """AMX's tile registers emulated in numpy, for the picture (no tile instruction runs): the shapes ldtilecfg
    reads from tile_config's bytes, tileloadd and tilestored on an array's bytes, tilezero, and tdpbf16ps: in each
    sum row m and column n, the products of input row m's bfloat16 pairs and weight column n's, pair kk with weight
    row kk, added up (here in float64, rounded to float32 once an instruction). Every load and dot is logged with
    the kernel's loop variables (kh, kw, k) at the time."""

    def __init__(self, module, config, variables: dict):
        _, self.row_bytes, self.rows = tile_shapes(module, config)
        self.module, self.variables = module, variables
        self.tiles = {}
        self.loads, self.dots = [], []

    def shape(self, tile) -> tuple[int, int]:
        return int(self.rows[tile]), int(self.row_bytes[tile])

    def step(self) -> tuple:
        return tuple(self.variables.get(name) for name in ("kh", "kw", "k"))

    def zero(self, tile):
        self.tiles[tile] = np.zeros(self.shape(tile), np.uint8)

    def span(self, base, index, stride, tile) -> tuple[np.ndarray, list[int]]:
        """base's bytes and the byte offsets of the tile's rows from base[index] on, stride bytes apart."""
        data = base.reshape(-1).view(np.uint8)
        rows, row_bytes = self.shape(tile)
        starts = [index * base.itemsize + r * stride for r in range(rows)]
        if starts[0] < 0 or starts[-1] + row_bytes > data.size:
            raise AssertionError(f"tile {tile}: rows at bytes {starts[0]}-{starts[-1] + row_bytes} of an array of "
                                 f"{data.size}")
        return data, starts

    def load(self, tile, base, index, stride):
        data, starts = self.span(base, index, stride, tile)
        row_bytes = self.shape(tile)[1]
        self.tiles[tile] = np.stack([data[s: s + row_bytes] for s in starts])
        self.loads.append((tile, base, starts, stride, self.step()))

    def store(self, tile, base, index, stride):
        data, starts = self.span(base, index, stride, tile)
        for s, row in zip(starts, self.tiles[tile], strict=True):
            data[s: s + row.size] = row

    def dot(self, sums, inputs, weights):
        m, n_bytes = self.shape(sums)
        a, b = self.tiles[inputs], self.tiles[weights]
        k = a.shape[1] // 4  # pairs in an input row, one a weight row
        if a.shape[0] != m or b.shape != (k, n_bytes):
            raise AssertionError(f"tdpbf16ps {sums}, {inputs}, {weights}: shapes {(m, n_bytes)}, {a.shape}, {b.shape}"
                                 " do not fit")
        x = from_bits(np.ascontiguousarray(a).view(np.uint16)).reshape(m, k, 2).astype(np.float64)
        w = from_bits(np.ascontiguousarray(b).view(np.uint16)).reshape(k, n_bytes // 4, 2).astype(np.float64)
        before = np.ascontiguousarray(self.tiles[sums]).view(np.float32).copy()
        after = (before + np.einsum("mkh,knh->mn", x, w)).astype(np.float32)
        self.tiles[sums] = after.view(np.uint8)
        self.dots.append((sums, inputs, weights, self.step(), before, after, x, w))


def tile_statements(source: str):
    """A generated AMX conv kernel's work on one tile of output, compiled as plain Python: the body of its `for
    tile` loop, from the tile's position to the last store_tile (the output loop after it is stage 14's)."""
    tree = ast.parse(source)
    loop = next(node for node in ast.walk(tree) if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                and node.target.id == "tile")
    stores = [i for i, s in enumerate(loop.body) if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
              and getattr(s.value.func, "id", None) == "store_tile"]
    return compile(ast.Module(loop.body[: stores[-1] + 1], type_ignores=[]), "<tile loop>", "exec")


@dataclass
class TileRun:
    """One tile of a conv's output, computed by the statements of its generated kernel with TileUnit's tiles."""

    conv: Conv
    constants: dict  # the kernel's, as Model.conv emitted them
    x: np.ndarray  # its input, as the kernel gets it: HWC bfloat16 bits with the conv's border
    weight: np.ndarray  # fold's weight pairs (int32)
    reference: np.ndarray  # OIHW float64: the bfloat16 weights fold rounds, the conv's own (the stem: 3 channels)
    config: np.ndarray  # tile_config's 64 bytes, as Model.conv passes them
    ho: int
    wo0: int
    group: int
    sums: np.ndarray  # [rows][block] float32, as the output loop reads them
    direct: np.ndarray  # [rows][block]: the same sums of the conv computed directly, in float64
    unit: TileUnit


def run_tile(module, emitted: Emitted, source: str, arrays, x, weight, reference, ho: int, wo0: int) -> TileRun:
    """The tile of output pixels (ho, wo0...) of group 0 through the kernel's own statements (tile_statements),
    checked against the conv computed directly from `reference` and x."""
    c, conv = emitted.constants, emitted.conv
    rows, block = c["rows"], c["block"]
    position = ho * c["column_tiles"] + wo0 // rows
    number = position * c["groups"] if c["pixels_first"] else position  # group 0
    config = arrays[5]
    variables = {"tile": number, "x": x, "weight": weight, "sums": np.zeros(rows * block, np.float32)}
    unit = TileUnit(module, config, variables)
    variables.update(zero_tile=unit.zero, load_tile=unit.load, tile_dot=unit.dot, store_tile=unit.store)
    exec(tile_statements(source), variables)
    if (variables["ho"], variables["wo0"], variables["group"]) != (ho, wo0, 0):
        raise AssertionError("the kernel's tile position is not the drawn tile's")
    k, s = conv.kernel, conv.stride
    window = np.stack([from_bits(x[ho * s: ho * s + k, (wo0 + r) * s: (wo0 + r) * s + k, : conv.in_channels])
                       for r in range(rows)]).astype(np.float64)
    direct = np.einsum("rhwc,ochw->ro", window, reference[:block])
    sums = variables["sums"].reshape(rows, block)
    if not np.allclose(sums, direct, rtol=1e-5, atol=1e-5):
        raise AssertionError(f"{conv.name}: the emulated tiles' sums are not the conv's")
    return TileRun(conv, c, x, weight, reference, config, ho, wo0, 0, sums, direct, unit)


def amx_weights(module, conv: Conv, choice) -> tuple[np.ndarray, np.ndarray]:
    """(fold's weight pairs for the choice, as on a CPU with AMX; the bfloat16 weights they hold, OIHW float64), from
    the course's weights, the batch norm folded in as fold folds it."""
    manifest = load_manifest(WEIGHTS_DIR)
    if manifest["variant"] != COURSE_VARIANT:
        raise UserError(f"{WEIGHTS_DIR}: {manifest['variant']} weights; stage 15's picture draws the course's "
                        f"{COURSE_VARIANT} weights: run `make weights` (SOURCE=npm) to export them")

    def tensors(name):
        return load_tensor(name, manifest, WEIGHTS_DIR)

    with amx_assumed(module):
        packed, _ = module.fold(conv, tensors, manifest["bn_eps"], choice)
    gamma, var = tensors(f"{conv.bn}.weight"), tensors(f"{conv.bn}.running_var")
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + manifest["bn_eps"])
    weight = tensors(f"{conv.name}.weight").astype(np.float64) * scale[:, None, None, None]
    return module.cache_aligned(packed), from_bits(module.bf16_bits(weight)).astype(np.float64)


def tile_grid(sheet: Sheet, x, y, w, rh, rows: int, columns: int, face, minor: int = 0):
    """A tile as a box of rows x columns, top left (x, y); `minor` > 1 draws every minor-th column line darker."""
    sheet.box(x, y, w, rows * rh, face=face, edge="0.15")
    for i in range(1, columns):
        dark = minor > 1 and i % minor == 0
        sheet.ax.plot([x + i * w / columns] * 2, [y, y - rows * rh], color="0.35" if dark else "0.6",
                      linewidth=0.5 if dark else 0.25)
    for r in range(1, rows):
        sheet.ax.plot([x, x + w], [y - r * rh] * 2, color="0.6", linewidth=0.25)


def tile_roles(module, rows: int) -> dict:
    """Tile number -> (face, what it holds, its shape in values), as AMX_CONV uses tiles 0-7."""
    n, k = module.AMX_N, module.AMX_K
    roles = {t: (ACC_COLOUR, f"sums: co {t * n}-{t * n + n - 1}", f"{rows} x {n} float32")
             for t in range(module.SUM_TILES)}
    roles[module.INPUT_TILE] = (X_COLOUR, f"input: {rows} pixels", f"{rows} x {k} bfloat16")
    for t in module.WEIGHT_TILES:
        roles[t] = (W_COLOUR, f"weights: {module.TILE_ROWS} pairs", f"x {n} co: {2 * module.TILE_ROWS} x {n} bf16")
    return roles


def amx_tiles(sheet: Sheet, module, run: TileRun, target):
    """AMX's 8 tile registers as AMX_CONV uses them, their shapes from tile_config's bytes, the bytes decoded."""
    name, cpu, _, _, _, _ = target
    conv, c = run.conv, run.constants
    rows = c["rows"]
    palette, row_bytes, tile_rows = tile_shapes(module, run.config)
    if palette != module.PALETTE or (module.TILES_IN_USE, len(module.WEIGHT_TILES)) != (8, 3):
        raise AssertionError("the stage's tiles are no longer palette 1's 8: redraw its tile registers")
    roles = tile_roles(module, rows)
    float32_bytes, bf16_bytes = module.FLOAT32_BITS // 8, module.PAIR  # a bfloat16: 2 bytes
    expected = {t: (rows, module.AMX_N * float32_bytes) for t in range(module.SUM_TILES)}
    expected[module.INPUT_TILE] = (rows, module.AMX_K * bf16_bytes)
    expected.update({t: (module.TILE_ROWS, module.AMX_N * float32_bytes) for t in module.WEIGHT_TILES})
    for t, shape in expected.items():  # the shapes drawn are the config's
        if (int(tile_rows[t]), int(row_bytes[t])) != shape:
            raise AssertionError(f"tile {t}: tile_config's shape is not {shape}")
    paragraph(sheet, f"AMX, drawn as on {cpu} (Intel's first CPU with it): 8 tile registers of at most "
              f"TILE_ROWS = {module.TILE_ROWS} rows of TILE_ROW_BYTES = {module.TILE_ROW_BYTES} bytes, 1 KB each, "
              f"beside the vector registers. AMX_CONV uses them as drawn, here for {conv.name} ({conv.kernel}x"
              f"{conv.kernel}, {conv.in_channels} -> {conv.out_channels} channels) with a tile of "
              f"{module.label(run_choice(module, c))} (drawn: its candidate of most rows; the tuning's choice "
              "differs from CPU to CPU): 4 sum tiles of "
              f"{rows} output pixels x AMX_N = {module.AMX_N} output channels, AMX_BLOCK = {module.AMX_BLOCK} in "
              f"all; one input tile of {rows} pixels x AMX_K = {module.AMX_K} input channels; 3 weight tiles, taking "
              "turns. Each tile's rows and bytes per row are what ldtilecfg (load_tile_config, once per thread's "
              f"part) reads from tile_config({rows})'s 64 bytes, below:", gap=3.4)
    tw, gap, rh = 10.0, 2.0, 0.55
    top = sheet.y
    for t in range(module.TILES_IN_USE):
        face, what, shape = roles[t]
        x = MARGIN + 1 + t * (tw + gap)
        r, b = int(tile_rows[t]), int(row_bytes[t])
        columns = b // 4 if t < module.SUM_TILES else b // 2
        tile_grid(sheet, x, top, tw, rh, r, columns, face, minor=2 if t >= module.INPUT_TILE else 0)
        sheet.text(x + tw / 2, top + 0.3, f"tile {t}", size=SMALL - 0.5, ha="center", va="bottom", weight="bold")
        sheet.text(x + tw / 2, top - module.TILE_ROWS * rh - 0.5, f"{what}\n{shape}\n{r} rows x {b} bytes",
                   size=SMALL - 2, ha="center", va="top", linespacing=1.15)
    sheet.y = top - module.TILE_ROWS * rh - 5.6
    # tile_config's 64 bytes, 16 a row
    cw, ch, label_w = 3.2, 1.9, 9.0
    x0 = MARGIN + label_w
    top = sheet.y
    config = np.asarray(run.config, np.uint8)
    faces = ["white"] * module.TILE_CONFIG_BYTES
    faces[0] = "#dadaeb"
    for t in range(module.TILES_IN_USE):
        face = roles[t][0]
        faces[module.COLUMN_BYTES_AT + 2 * t] = faces[module.COLUMN_BYTES_AT + 2 * t + 1] = face
        faces[module.ROWS_AT + t] = face
    slots = (module.ROWS_AT - module.COLUMN_BYTES_AT) // 2
    weights = ", ".join(str(t) for t in module.WEIGHT_TILES)
    decoded = (f"byte 0: the palette, {palette} (PALETTE); bytes 1-15: 0",
               f"bytes {module.COLUMN_BYTES_AT}-{module.COLUMN_BYTES_AT + 15}: bytes per row of tiles 0-7, uint16: "
               f"{', '.join(sorted({str(v) for v in row_bytes[:8]}))} each",
               f"bytes {module.COLUMN_BYTES_AT + 16}-{module.ROWS_AT - 1}: of tiles 8-{slots - 1}: none (0)",
               f"bytes {module.ROWS_AT}-{module.TILE_CONFIG_BYTES - 1}: rows of tiles 0-{slots - 1}, uint8: "
               f"{tile_rows[0]} (0-4), {tile_rows[module.WEIGHT_TILES[0]]} ({weights})")
    for i in range(module.TILE_CONFIG_BYTES // 16):
        y = top - i * ch
        sheet.text(x0 - 0.8, y - ch / 2, f"bytes {16 * i}-{16 * i + 15}", size=SMALL - 1.5, ha="right")
        sheet.cells(x0, y, 16, cw, ch, faces[16 * i: 16 * i + 16], [str(v) for v in config[16 * i: 16 * i + 16]],
                    size=SMALL - 2, edge="0.6")
        if 16 * i >= module.COLUMN_BYTES_AT and 16 * i < module.ROWS_AT:  # uint16s: 2 bytes each, low byte first
            for j in range(0, 16, 2):
                sheet.box(x0 + j * cw, y, 2 * cw, ch, face="none", edge="0.15")
        sheet.text(x0 + 16 * cw + 1.2, y - ch / 2, decoded[i], size=SMALL - 1.5)
    sheet.y = top - 4 * ch - 1.4
    paragraph(sheet, f"tile_config({rows}): sum and input tiles {rows} rows (the choice's output pixels), weight tiles "
              f"TILE_ROWS = {module.TILE_ROWS} (pairs of input channels), every row {module.TILE_ROW_BYTES} bytes; "
              f"the {slots - module.TILES_IN_USE} slots past tile {module.TILES_IN_USE - 1} stay 0. A tile's shape "
              "is fixed until the next ldtilecfg, so Model keeps one config per rows and the kernel loads it once "
              "per part of its prange, not per tile of output.", size=SMALL, gap=GAP)


def run_choice(module, constants: dict):
    return module.Choice(constants["rows"], constants["block"])


def tdpbf16ps(sheet: Sheet, module, run: TileRun, target, step: tuple, vdp_lanes: int):
    """One tdpbf16ps of the example conv's tile: the input tile's rows (addresses into the HWC activation), the
    weight tile's rows and columns (addresses into fold's packing), the sum tile; checked against the packing."""
    conv, c = run.conv, run.constants
    rows, n, k_values, pair = c["rows"], module.AMX_N, module.AMX_K, module.PAIR
    unit = run.unit
    dot = next(d for d in unit.dots if d[3] == step and d[0] == 0)
    sums_tile, input_tile, weight_tile, _, before, after, a, b = dot
    (_, _, in_starts, in_stride, _), = [ld for ld in unit.loads if ld[0] == input_tile and ld[4] == step]
    _, _, w_starts, w_stride, _ = next(ld for ld in unit.loads if ld[0] == weight_tile and ld[4] == step)
    kh, kw, k = step
    x = run.x
    pixels = [np.unravel_index(s // x.itemsize, x.shape) for s in in_starts]
    groups = conv.out_channels // c["block"]
    packed_shape = (groups, conv.kernel, conv.kernel, module.pairs(conv.in_channels), c["block"])
    weight_rows = [np.unravel_index(s // run.weight.itemsize, packed_shape) for s in w_starts]
    for r, (h, w, ci) in enumerate(pixels):  # what the drawing says the rows are
        if (h, w, ci) != (run.ho * conv.stride + kh, (run.wo0 + r) * conv.stride + kw, k * k_values):
            raise AssertionError(f"input tile row {r} is pixel {(h, w)}, channel {ci}")
        if not np.array_equal(a[r].reshape(-1), from_bits(x[h, w, ci: ci + k_values])):
            raise AssertionError(f"input tile row {r} is not the pixel's {k_values} bfloat16s")
    for kk, index in enumerate(weight_rows):
        if tuple(int(i) for i in index) != (0, kh, kw, k * k_values // pair + kk, 0):
            raise AssertionError(f"weight tile row {kk} starts at {index}")
    channels = k * k_values + np.arange(k_values)
    if not np.array_equal(b.transpose(1, 0, 2).reshape(n, k_values), run.reference[:n, channels, kh, kw]):
        raise AssertionError("the weight tile's columns are not the output channels' bfloat16 weights")
    product = np.einsum("rc,oc->ro", a.reshape(rows, k_values), run.reference[:n, channels, kh, kw])
    if not np.allclose(after - before, product, rtol=1e-5, atol=1e-5):
        raise AssertionError("the emulated tdpbf16ps is not the product of its tiles")
    if any(s % module.TILE_ROW_BYTES for s in in_starts) or x.ctypes.data % module.TILE_ROW_BYTES:
        raise AssertionError("the drawn input tile's rows are not on cache lines")
    in_index, w_index = in_starts[0] // x.itemsize, w_starts[0] // run.weight.itemsize
    steps = conv.kernel * c["kernel_w"] * c["chunks"]
    paragraph(sheet, f"One tdpbf16ps, tile_dot({sums_tile}, {input_tile}, {weight_tile}): sum tile {sums_tile} += "
              f"input tile {input_tile} x weight tile {weight_tile}. Drawn: {conv.name}'s tile of output pixels "
              f"({run.ho}, {run.wo0}-{run.wo0 + rows - 1}), group 0, at step kh = {kh}, kw = {kw}, k = {k} of its "
              f"{steps} "
              f"({conv.kernel} x {c['kernel_w']} taps x chunks = {c['chunks']} of {k_values} input channels); the "
              f"addresses as the generated kernel computes them, run here with numpy doing the tile instructions "
              f"(TileUnit), on the folded weights of {conv.name} (v1) and a stand-in input (seed {AMX_SEED}):",
              gap=3.6)
    label_w, cw, rh, bh, gap = 19.0, 0.78, 1.15, 0.85, 2.2
    xa = MARGIN + label_w
    xc = xa + k_values * cw + gap
    right = xc + 2 * n * cw + 1.2
    top = sheet.y
    # the weight tile, above the sums: its row kk holds input channels 2kk, 2kk + 1 of k's chunk, column j output
    # channel j
    for j in (0, n - 1):
        sheet.text(xc + (2 * j + 1) * cw, top + 0.2, f"co {j}", size=SMALL - 2, ha="center", va="bottom")
    tile_grid(sheet, xc, top, n * 2 * cw, bh, module.TILE_ROWS, 2 * n, W_COLOUR, minor=2)
    first, last = channels[0], channels[-1]
    sheet.text(xc - 0.6, top - bh / 2, f"pair 0: ci {first}, {first + 1}", size=SMALL - 2, ha="right")
    sheet.text(xc - 0.6, top - (module.TILE_ROWS - 0.5) * bh, f"pair {module.TILE_ROWS - 1}: ci {last - 1}, {last}",
               size=SMALL - 2, ha="right")
    sheet.text(xc + n * cw, top - module.TILE_ROWS * bh / 2, f"weight tile {weight_tile}", size=SMALL - 1,
               ha="center", weight="bold", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    g, wkh, wkw, wp, wb = (int(i) for i in weight_rows[0])
    paragraph(sheet, f"weight tile {weight_tile} = load_tile({weight_tile}, weight, at = {w_index:,}, "
              f"{w_stride}): fold's int32 pairs [group][kh][kw][ci/2][block] from [{g}][{wkh}][{wkw}][{wp}][{wb}] "
              f"on, {module.TILE_ROWS} rows weight_stride = {w_stride} bytes apart (a step of ci/2: block "
              f"{c['block']} x 4 bytes), {module.TILE_ROW_BYTES} bytes each: output channels 0-{n - 1}, 2 "
              f"bfloat16s each. Tiles 6, 7 and 5 again: at + {n}, + {2 * n}, + {3 * n}: co {n}-{4 * n - 1}.",
              x=right, width=SPAN - MARGIN - right, size=SMALL - 1.5, gap=0)
    sheet.y = top
    paragraph(sheet, f"input tile {input_tile} = load_tile({input_tile}, x, ((ho x {conv.stride} + kh) x "
              f"{c['x_width']} + wo0 x {conv.stride} + kw) x {c['x_channels']} + k x {k_values} = {in_index:,}, "
              f"{in_stride}), in bfloat16s: the HWC activation as it is, {x.shape[0]}x{x.shape[1]}x{x.shape[2]} "
              f"with its border of {conv.padding}; {rows} rows input_stride = {in_stride} bytes apart (stride "
              f"{conv.stride} x {x.shape[2]} channels x 2 bytes: the next pixel), each on a cache line. Row r: "
              f"output pixel ({run.ho}, {run.wo0} + r)'s input at tap ({kh}, {kw}), its channels {first}-{last}.",
              x=MARGIN, width=xc - 10 - MARGIN, size=SMALL - 1.5, gap=0)
    y = top - module.TILE_ROWS * bh - 1.8
    # the input tile, left of the sums: row r is output pixel r's input pixel, k's 32 channels
    tile_grid(sheet, xa, y, k_values * cw, rh, rows, k_values, X_COLOUR, minor=2)
    tile_grid(sheet, xc, y, n * 2 * cw, rh, rows, n, ACC_COLOUR)
    for r, (h, w, _) in enumerate(pixels):
        sheet.text(xa - 0.6, y - (r + 0.5) * rh, f"{in_starts[r]:,}: x[{h}, {w}]", size=SMALL - 2.5, ha="right")
    sheet.text(xa - 0.6, y + 0.3, "row r at x + bytes:", size=SMALL - 2, ha="right", va="bottom")
    bracket(sheet, xa, xa + k_values * cw, y - rows * rh - 0.3, f"ci {first}-{last}: {k_values} bfloat16s, "
            f"{module.TILE_ROW_BYTES} bytes", size=SMALL - 1.5)
    bracket(sheet, xc, xc + 2 * n * cw, y - rows * rh - 0.3, f"co 0-{n - 1}: {n} float32s, "
            f"{module.TILE_ROW_BYTES} bytes", size=SMALL - 1.5)
    sheet.text(xa + k_values * cw / 2, y + 0.3, f"input tile {input_tile}", size=SMALL - 1, ha="center",
               va="bottom", weight="bold")
    sheet.text(xc + n * cw, y + 0.3, f"sum tile {sums_tile}: pixel ({run.ho}, {run.wo0} + r) x co",
               size=SMALL - 1, ha="center", va="bottom", weight="bold")
    for rect in ((xa, y - rh, k_values * cw, rh), (xc, top - module.TILE_ROWS * bh, 2 * cw, module.TILE_ROWS * bh),
                 (xc, y - rh, 2 * cw, rh)):
        sheet.ax.add_patch(Rectangle(rect[:2], *rect[2:], facecolor="none", edgecolor="#d62728", linewidth=1.5))
    element = a[0].reshape(-1) @ b[:, 0].reshape(-1)
    sheet.y = y
    paragraph(sheet, f"Framed: sum [0][0] += the {k_values} products of input row 0 and weight column 0, pair kk of "
              f"the row with the pair in weight row kk, added up: {before[0, 0]:.6f} + {element:.6f} = "
              f"{after[0, 0]:.6f}. Every sum of the tile gets its {k_values} at once: {rows} x {n} of them.",
              x=right, width=SPAN - MARGIN - right - 2, size=SMALL - 1.5, gap=0)
    sheet.y = y - rows * rh - 3.6
    macs = rows * n * k_values
    full = module.TILE_ROWS * n * k_values
    paragraph(sheet, f"Per tdpbf16ps: {rows} rows x {n} columns x {k_values} = {macs:,} multiply-adds ({full:,} with "
              f"{module.TILE_ROWS} rows, the most); a vdpbf16ps (stage 14): {vdp_lanes} lanes x PAIR {pair} = "
              f"{vdp_lanes * pair}, {macs // (vdp_lanes * pair)}x fewer. Each step loads the input tile once for "
              f"the 4 tile_dots: {4 * macs:,} multiply-adds from 1 + 4 tile loads. After all {steps} steps the "
              f"{rows} x {c['block']} sums, stored (store_tile) to the stack array the output loop reads, are "
              f"those of the conv computed directly (largest difference {np.abs(run.sums - run.direct).max():.1e}).",
              size=SMALL, gap=GAP)


def row_taps_drawing(sheet: Sheet, module, run: TileRun, kh: int, channel_order: str):
    """The stem's row taps: an input tile row as 8 pixels x 4 channels of the photo's buffer, a kernel row as 32
    values of the weight tile; the tile's sums on the photo."""
    conv, c = run.conv, run.constants
    rows, k_values, pair = c["rows"], module.AMX_K, module.PAIR
    channels = module.pairs(conv.in_channels) * pair
    taps = k_values // channels
    if not module.row_taps(conv) or (c["kernel_w"], c["chunks"]) != (1, 1):
        raise AssertionError("the stem is no longer a conv of row taps")
    unit = run.unit
    (_, _, starts, stride, _), = [ld for ld in unit.loads if ld[0] == module.INPUT_TILE and ld[4] == (kh, 0, 0)]
    x = run.x
    hi, w0, _ = (int(i) for i in np.unravel_index(starts[0] // x.itemsize, x.shape))
    reach = (conv.out_size - 1) * conv.stride + taps
    real = conv.kernel**2 * conv.in_channels
    paragraph(sheet, f"The stem ({conv.kernel}x{conv.kernel}, {conv.in_channels} -> {conv.out_channels} channels, "
              f"stride {conv.stride}) reads the photo's buffer: {x.shape[0]}x{x.shape[1]}x{channels} bfloat16s, "
              f"border {conv.padding}, a 4th channel of zeros. A tile row of one pixel would hold {channels} values of "
              f"{k_values}, so its rows are row taps (row_taps): {taps} neighbouring pixels x {channels} channels, 64 "
              f"bytes as they lie in the buffer, the {conv.kernel} taps of a kernel row and an 8th of zero weights; "
              f"the stem becomes a {conv.kernel} x 1 conv of {k_values}-value rows (kernel_w = 1, chunks = 1). Drawn: "
              f"kh = {kh} of the tile of output pixels ({run.ho}, {run.wo0}-{run.wo0 + rows - 1}) on pics/"
              f"{BF16_PHOTO}: load_tile({module.INPUT_TILE}, x, {starts[0] // x.itemsize:,}, {stride}), row r at "
              f"buffer row {hi}, pixels {w0} + {conv.stride}r on, input_stride = {stride} bytes (stride "
              f"{conv.stride} x {channels} channels x 2 bytes) apart:", gap=3.0)
    shown_rows = 4
    pixels = (shown_rows - 1) * conv.stride + taps
    cell, h, label_w = 1.45, 1.7, 15.0
    x0 = MARGIN + label_w
    pw = channels * cell
    faces = ("#6baed6", "#9ecae1", "#c6dbef", PALE)
    names = [*channel_order[: conv.in_channels], "0"]
    top = sheet.y
    for p in range(pixels):
        sheet.text(x0 + (p + 0.5) * pw, top + 0.2, f"w {w0 + p}", size=SMALL - 2, ha="center", va="bottom")
        sheet.cells(x0 + p * pw, top, channels, cell, h, list(faces), names, size=SMALL - 2.5, edge="0.6")
        sheet.box(x0 + p * pw, top, pw, h, face="none", edge="0.15")
    sheet.text(x0 + pixels * pw + 0.6, top - h / 2, "...", size=SMALL)
    sheet.text(x0 - 0.8, top - h / 2, f"x, row {hi}:", size=SMALL - 1.5, ha="right")
    y = top - h - 0.9
    for r in range(shown_rows):
        xr = x0 + r * conv.stride * pw
        sheet.cells(xr, y, taps * channels, cell, h, [faces[i % channels] for i in range(k_values)],
                    [names[i % channels] for i in range(k_values)], size=SMALL - 2.5, edge="0.6")
        for p in range(taps):
            sheet.box(xr + p * pw, y, pw, h, face="none", edge="0.15")
        sheet.ax.add_patch(Rectangle((xr + (taps - 1) * pw, y - h), pw, h, facecolor="none", edgecolor="#d62728",
                                     linewidth=1.2, linestyle=(0, (2, 1.5))))
        sheet.text(x0 - 0.8, y - h / 2, f"tile row {r}: x + {starts[r]:,}", size=SMALL - 2, ha="right")
        y -= h + 0.35
    sheet.text(x0 - 0.8, y - 0.6, f"... row {rows - 1}: x + {starts[-1]:,}", size=SMALL - 2, ha="right")
    sheet.text(x0, y - 0.6, f"(x + the row's first byte) each tile row: {taps} pixels, kw 0-{taps - 1}, x "
               f"{channels} channels ({', '.join(names)}), {module.TILE_ROW_BYTES} bytes; kw {taps - 1} (dashed) "
               "meets zero weights",
               size=SMALL - 2)
    sheet.y = y - 2.0
    # the weight tile's column for co 0: the kernel's row kh as 32 values, as fold packs it
    halves = run.weight.view(np.uint16).reshape(1, conv.kernel, 1, k_values // pair, c["block"], pair)
    kernel_rows = from_bits(halves[0, :, 0, :, 0, :].reshape(conv.kernel, k_values)).astype(np.float64)
    expected = np.zeros((conv.kernel, taps, channels))
    expected[:, : conv.kernel, : conv.in_channels] = run.reference[0].transpose(1, 2, 0)  # [kh][kw][ci]
    if not np.array_equal(kernel_rows, expected.reshape(conv.kernel, k_values)):
        raise AssertionError("fold's row taps are not the stem's kernel rows")
    paragraph(sheet, f"The weights, as fold packs them for row taps ([out][kw][ci][kh] -> {k_values} x "
              f"{conv.kernel} x 1): output channel 0's {conv.kernel}x{conv.kernel}x{conv.in_channels} kernel as "
              f"{conv.kernel} rows of {k_values} values, row kh = the weight tile's column co 0 at step kh (its 16 "
              f"pairs), x {WEIGHT_DISPLAY}, zero cells grey:", size=SMALL, gap=2.4)
    label_w = 7.0
    x0 = MARGIN + label_w
    cw = (SPAN - MARGIN - x0) / k_values
    top = sheet.y
    for p in range(taps):
        sheet.text(x0 + (p + 0.5) * channels * cw, top + 0.2, f"kw {p}", size=SMALL - 2, ha="center", va="bottom")
    bh = 1.6
    for r in range(conv.kernel):
        yr = top - r * bh
        values = kernel_rows[r]
        sheet.cells(x0, yr, k_values, cw, bh, [W_COLOUR if v else PALE for v in values],
                    [f"{v * WEIGHT_DISPLAY:.2g}" if v else "0" for v in values], size=SMALL - 3, edge="0.6")
        for p in range(taps):
            sheet.box(x0 + p * channels * cw, yr, channels * cw, bh, face="none", edge="0.15")
        sheet.text(x0 - 0.8, yr - bh / 2, f"kh {r}", size=SMALL - 2, ha="right",
                   weight="bold" if r == kh else "normal")
    sheet.ax.add_patch(Rectangle((x0, top - (kh + 1) * bh), k_values * cw, bh, facecolor="none",
                                 edgecolor="#d62728", linewidth=1.5))
    sheet.y = top - conv.kernel * bh - 1.6
    misaligned = sum(s % module.TILE_ROW_BYTES != 0 for ld in unit.loads if ld[0] == module.INPUT_TILE
                     for s in ld[2])
    loads = sum(len(ld[2]) for ld in unit.loads if ld[0] == module.INPUT_TILE)
    sums = run.sums[:, 0]
    paragraph(sheet, f"A tile of the stem: {conv.kernel} steps (kh), each an input tile and 4 weight tiles, 4 "
              f"tdpbf16ps: {real} of its {conv.kernel * k_values} multiply-adds per output are real weights "
              f"({conv.kernel}x{conv.kernel}x{conv.in_channels}), where one pixel a row would use {conv.in_channels} "
              f"of {k_values}. The last output pixel's 8th tap is pixel ({conv.out_size} - 1) x {conv.stride} + "
              f"{taps - 1} = {reach - 1}, still in the buffer's {x.shape[1]} (row_taps' condition). The rows, "
              f"{stride} bytes apart, are not all on a cache line: {misaligned} of the tile's {loads} input rows "
              f"start inside one, so that their 64 bytes span two. Its sums of co 0 (row r: pixel ({run.ho}, "
              f"{run.wo0} + r)), from the kernel's statements with numpy's tiles, as the stem's "
              f"{conv.kernel}x{conv.kernel}x{conv.in_channels} conv computed directly (largest difference over "
              f"{rows} x {c['block']}: {np.abs(run.sums - run.direct).max():.1e}):", size=SMALL, gap=1.0)
    top = sheet.y
    w = (SPAN - 2 * MARGIN) / rows
    sheet.cells(MARGIN, top, rows, w, 2.0, ACC_COLOUR, [f"{v:.4f}" for v in sums], size=SMALL - 1.5)
    sheet.y = top - 2.0 - GAP


def stage15(stage, sheet: Sheet):
    module = stage_module(stage)
    arch = resnet50(COURSE_VARIANT)
    target = amx_target(module)
    name, cpu, _, _, lanes, tiles = target
    first = {}
    for conv in arch.convs:
        first.setdefault(module.shape_name(conv), conv)
    with amx_assumed(module):
        choices = {shape: target_candidates(module, conv, tiles)[-1] for shape, conv in first.items()}
        if not all(module.on_amx(conv) for conv in arch.convs):
            raise AssertionError("a conv of the network is not on AMX: redraw the picture")
    plan = amx_planned(stage, choices)
    calls = list(zip(plan.emitted, plan.model.calls, strict=True))
    convs = [(e, arrays) for e, (_, arrays) in calls if e.conv is not None]
    sources = plan.model.kernel_sources
    if any("tile_dot(" not in sources[e.kernel] for e, _ in convs):
        raise AssertionError("a conv of the plan is not generated from AMX_CONV")
    require(module.AMX_CONV, "for part in prange({parts}):", "load_tile_config(config)", "zero_tile(0)",
            "zero_tile(3)", "for k in range({chunks}):",
            "load_tile(4, x, ((ho * {stride} + kh) * {x_width} + wo0 * {stride} + kw) * {x_channels}",
            "+ k * {amx_k}, {input_stride})", "load_tile(5, weight, at, {weight_stride})", "tile_dot(0, 4, 5)",
            "load_tile(6, weight, at + {amx_n}, {weight_stride})", "tile_dot(1, 4, 6)", "tile_dot(2, 4, 7)",
            "load_tile(5, weight, at + 3 * {amx_n}, {weight_stride})", "tile_dot(3, 4, 5)",
            "store_tile(0, sums, 0, {sums_stride})", "store_tile(3, sums, 3 * {amx_n}, {sums_stride})",
            "release_tiles()")
    require(module.OUTPUT_LOOP, "acc[r, c] += bias[group * {block} + c]",
            "acc[r, c] += from_bf16(residual[ho, wo0 + r, group * {block} + c])", "max(acc[r, c], np.float32(0.0))",
            "= to_bf16(acc[r, c])")
    require(module.FULLY_CONNECTED, "dot_pairs(")
    example = example_conv(arch)
    ((example_e, example_arrays),) = [(e, a) for e, a in convs if e.conv == example]
    ((stem_e, stem_arrays),) = [(e, a) for e, a in convs if e.conv == arch.stem]
    # the example conv on a stand-in input, the stem on the photo, both with the course's folded weights
    rng = np.random.default_rng(AMX_SEED)
    x = module.cache_aligned(np.zeros_like(example_arrays[0]))
    p = example.padding
    x[p: x.shape[0] - p, p: x.shape[1] - p] = module.bf16_bits(rng.exponential(1.0, (example.in_size,) * 2
                                                                               + (example.in_channels,)))
    example_run = run_tile(module, example_e, sources[example_e.kernel], example_arrays, x,
                           *amx_weights(module, example, choices[module.shape_name(example)]), *AMX_EXAMPLE_TILE)
    manifest = load_manifest(WEIGHTS_DIR)
    stem = arch.stem
    photo = module.cache_aligned(np.zeros_like(stem_arrays[0]))
    p = stem.padding
    photo[p: p + stem.in_size, p: p + stem.in_size, : stem.in_channels] = module.bf16_bits(
        load_image(PICS_DIR / BF16_PHOTO, manifest["preprocessing"]))
    stem_run = run_tile(module, stem_e, sources[stem_e.kernel], stem_arrays, photo,
                        *amx_weights(module, stem, choices[module.shape_name(stem)]), *BF16_PIXEL)
    n = module.AMX_N
    candidates = " or ".join(module.label(c) for c in sorted(set(choices.values())))
    sheet.code([
        (f"rows, block = choices[shape_name(conv)]    # tuned: {candidates} on AMX, {module.SUM_TILES} sum tiles of "
         f"{n} channels", True),
        (f"weight, bias = fold(conv, ...)             # stage 14's [group][kh][kw][ci/2][block][2], block "
         f"{module.AMX_BLOCK}; the stem: row taps", True),
        ("for part in prange(threads): load_tile_config(config)   # tile_config(rows): the tiles' shapes, once a "
         "part", True),
        (f"    for tile in the part's range: zero_tile(0) ... zero_tile(3)    # the sums: rows x {n} float32 "
         "each", True),
        (f"        for kh, kw, k in range(ci/{module.AMX_K}): load_tile(4, x, index(ho*s + kh, wo0*s + kw, "
         f"{module.AMX_K}k), input_stride)", True),
        (f"            load_tile(5, weight, at, weight_stride); tile_dot(0, 4, 5); ... tile 6, 7, 5 at at + "
         f"{n}, {2 * n}, {3 * n}", True),
        (f"        store_tile(t, sums, {n}t, sums_stride) for t in 0-3   # the stack array [rows][block]", True),
        ("    acc = sums + bias[c]; acc += from_bf16(residual); acc = max(acc, 0); out = to_bf16(acc)  "
         "# stage 14's", False),
        ("fc: stage 14's dot_pairs (vdpbf16ps); a CPU without AMX: every conv stage 14's kernel (on_amx)", True),
    ], f"a conv ({previous(stage)})", size=CODE_FONT - 0.5)
    amx_tiles(sheet, module, example_run, target)
    tdpbf16ps(sheet, module, example_run, target, AMX_STEP, lanes)
    row_taps_drawing(sheet, module, stem_run, stem.kernel // 2, manifest["preprocessing"]["channel_order"])


DRAWINGS = {1: stage1, 2: stage2, 3: stage3, 4: stage4, 5: stage5, 6: stage6, 7: stage7, 8: stage8, 9: stage9,
            10: stage10, 11: stage11, 12: stage12, 13: stage13, 14: stage14, 15: stage15}


def draw(stage: str, directory: Path | None = None, dpi: int = DPI) -> Path:
    """Draw a stage's picture into directory (default: the stage's folder) as picture.png."""
    drawing = DRAWINGS.get(stage_number(stage))
    if drawing is None:
        raise UserError(f"no picture is defined for {stage}; add one to course/pictures.py")
    stage_module(stage)
    sheet = Sheet(title(stage))
    drawing(stage, sheet)
    return sheet.save((directory or REPO / "stages" / stage) / "picture.png", dpi)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", metavar="STAGE", help="stage numbers or names (default: all)")
    parser.add_argument("--out", type=Path, help="folder to draw into (default: each stage's own folder)")
    parser.add_argument("--dpi", type=int, default=DPI)
    args = parser.parse_args(argv)

    def draw_all() -> int:
        for stage in [find_stage(s) for s in args.stages] or STAGES:
            print(draw(stage, args.out / stage if args.out else None, args.dpi))
        return 0

    return run_reporting_errors(draw_all)


if __name__ == "__main__":
    sys.exit(main())
