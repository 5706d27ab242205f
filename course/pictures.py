"""One picture per stage: the stage's conv loop nest, and a drawing of what its one idea changes.

    python -m course.pictures [STAGE ...]           # stages/<stage>/picture.png, every stage by default
    python -m course.pictures --out DIR --dpi 40 8  # stage 8's picture into DIR, at a low resolution

A picture has two parts. At the top, the loop nest of the stage's convolution (for stage 10 and 11 its
Winograd steps) as a few lines of pseudo-code, the lines that changed from the stage before highlighted.
Below, a drawing of what the idea changes: how memory is walked, the vector lanes, the weight pool, the
rotating buffers, the generated source, the split over threads, the fused passes, the register tile, the
tile order, Winograd's data flow, the tuning's candidate tiles and rounds.

Every number in a picture comes from the code it explains: from the stage's module (its constants, its
functions, its templates), from common/architecture.py (the shapes) and common/target.py (the vector
registers of the CPU numba compiles for: the tile of stages 8-11 is drawn as this CPU gets it; stage 12's
candidates are drawn for two CPUs named to LLVM, AVX-512 and AVX2, so its picture is the same on every machine,
and nothing measured is drawn, as the tuning's choices differ from CPU to CPU). Where a
stage decides something layer by layer (which buffer a layer writes, which kernels are generated, the tile
order, the Winograd size), the stage's own planning code decides it: `planned` runs `Model.plan()` on
stand-in weights that have the real shapes but hold nothing, so no weights are read and nothing is compiled.
"""

import argparse
import ast
import re
import sys
import textwrap
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from common.architecture import ResNet50, resnet50, tensor_shapes
from common.errors import UserError, run_reporting_errors
from common.export_weights import KERAS_BN_EPS
from common.paths import REPO
from common.stages import STAGES, find_stage, stage_module, stage_number
from common.target import AVX2_TARGET, vector_registers
from common.tuning import PASSES, TIMING_SECONDS, TUNING_SECONDS, choice_path

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
    return sys.modules[f"stages.{stage}"].__doc__.strip().rstrip(".")


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


def planned(stage: str, choices: dict | None = None) -> Plan:
    """The stage's Model (stage 4 on) with its forward pass planned as Model() plans it, on a StandInPool,
    recording every kernel the plan emits (stage 5 on) and the conv it was emitted for. A stage that tunes itself
    (12) plans with `choices`, its Choice by layer shape."""
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
    plan = Plan(model, pool)
    planning = [None]
    if hasattr(model, "emit"):
        emit = model.emit

        def recording_emit(template, name, arrays, **constants):
            plan.emitted.append(Emitted(planning[-1], name, constants))
            emit(template, name, arrays, **constants)

        model.emit = recording_emit
    for method in ("conv_bn", "conv"):
        if hasattr(model, method):
            setattr(model, method, recording(getattr(model, method), planning))
    model.plan()
    return plan


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


DRAWINGS = {1: stage1, 2: stage2, 3: stage3, 4: stage4, 5: stage5, 6: stage6, 7: stage7, 8: stage8, 9: stage9,
            10: stage10, 11: stage11, 12: stage12}


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
