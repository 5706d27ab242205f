"""The sheet every stage's picture is drawn on, and what the pictures of more than one group of stages use.

The sheet (Sheet): one axes over the whole figure, drawn top down, its title the stage's docstring, its code box
the stage's loop nest with the changed lines highlighted; its layout, fonts and colours. A stage's forward pass
planned by its own plan on stand-in weights (`planned`): a common.planner.Plan, every kernel call a step with the
conv it computes and the constants its kernel was rendered with. The target of the CPUs named to LLVM that stages
12-17 are drawn for (X86); the lines of a template a code box draws (require); fold on synthetic weights and the
step of each index of its packing (stages 13 and 14); wrapped paragraphs, brackets and the byte strips of packed
weights and activations.
"""

import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from common.architecture import Conv, ResNet50
from common.errors import UserError
from common.export_weights import KERAS_BN_EPS
from common.kernels import BN_EPS
from common.model import stand_in_plan
from common.planner import Plan, StandIns
from common.stages import record, stage_module, stage_number

# The weights `make weights` exports by default (npm, Keras) are ResNet v1 (common/export_weights.py).
COURSE_VARIANT = "v1"
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
CHARACTER_EMS = 0.54  # a wrapped paragraph's characters, wide ones and spaces taken together, per point of its font
LINE_SPACING = 1.25

# --- what more than one group's pictures draw (choices of the drawing, not of the stages) ---
# Stages 12-17's pictures are drawn for CPUs named to LLVM (common.target), so that they are the same on every
# machine: x86-64 CPUs, of this target triple
X86 = "x86_64-unknown-linux-gnu"
INT32_SHOWN = 3  # int32s drawn at the start of a run of a byte strip, before "..."
BF16_PHOTO = "cat.png"  # of pics/ (make explain's default): the photo whose stem pixel stage 14's picture computes
BF16_PIXEL = (56, 56)  # that output pixel of the stem (112x112), near the photo's centre; stage 15's tile starts there
WEIGHT_DISPLAY = 1000  # stages 14-15 draw the stem's weights (0.0001 to 0.01) times this, to fit their cells


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
    """What a code box's highlight means: changed from the stage this one builds on (its record's predecessor)."""
    return f"highlighted: changed from stage {record(stage).predecessor}"


# --- a stage's plan, on stand-in weights ---

def planned(stage: str, choices: dict | None = None, measured: dict | None = None) -> Plan:
    """The forward pass of a stage that generates its kernels (5 on), planned by the stage's own plan on stand-in
    weights of the real shapes, so that no weights are read and nothing is compiled: StandIns, which hold nothing,
    or, for a stage that tunes itself (12 on), planned with `choices` (its Choice by layer shape) on the stand-ins
    its tuning plans with (stand_in_plan), with `measured`: what its plan reads beside the weights (stage 13's
    units). The network planned is the one the stage computes (PARTS.architecture): ResNet-50, or stage 16's
    rewrite of it."""
    module = stage_module(stage)
    arch = module.PARTS.architecture(COURSE_VARIANT)
    if choices is None:
        pool = StandIns(arch)
        pool[BN_EPS] = np.array(KERAS_BN_EPS)  # stages 5 and 6 render it into their batch norm kernels
        return module.PARTS.plan(arch, pool)
    return stand_in_plan(arch, module.PARTS.plan, module.PARTS.tuning, choices, {}, measured or {})


# --- what stages 12-17's pictures take from a stage's code ---

def require(source: str, *fragments: str):
    """The code box draws these lines of a template: they must still be in it."""
    missing = [f for f in fragments if f not in source]
    if missing:
        raise AssertionError(f"the stage's template no longer has {missing}: redraw its code box")


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


# --- text and byte strips ---

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


LANE_LABEL_WIDTH = 27.0  # left of a dot product's lanes: what is broadcast to them


def lane_columns(sheet: Sheet, lanes: int) -> tuple[float, float, float]:
    """Stages 13-14's one dot product instruction: a column per output lane, headed "co j", from the left edge x0
    to the margin; (x0, each column's width, the top they start at)."""
    x0 = MARGIN + LANE_LABEL_WIDTH
    w = (SPAN - MARGIN - x0) / lanes
    top = sheet.y
    for j in range(lanes):
        sheet.text(x0 + (j + 0.5) * w, top + 0.2, f"co {j}", size=SMALL - 1, ha="center", va="bottom")
    sheet.text(x0 - 1, top + 0.2, "lane j: output channel j", size=SMALL - 1, ha="right", va="bottom")
    return x0, w, top


def step_chain(sheet: Sheet, steps):
    """A row of boxes joined by arrows, each (label, value under it, face): an output loop's steps for one value."""
    gap, h = 2.6, 4.0
    w = (SPAN - 2 * MARGIN - gap * (len(steps) - 1)) / len(steps)
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


def input_strip(sheet: Sheet, view, group: int, name: str, unit: str, element: tuple[str, int], cell, h):
    """Stages 13-14's packed input: a pixel's channels `group` to an int32 (view: the HWC array as int32s), the start
    of the next pixel, the int32 that one dot product instruction broadcasts, and each index's step in bytes;
    name is what an int32 holds (quad, pair), unit what a channel is (bytes, bfloat16s), element the last index's
    (name, step)."""
    channel_groups = view.shape[-1]
    top = sheet.y
    pixel = [*range(INT32_SHOWN), None, channel_groups - 1]
    faces = ((X_COLOUR, "#c6dbef"), ("#c7e9c0", ACC_COLOUR))
    items = [None if c is None else (f"{name[0]} {c}", [str(c * group + k) for k in range(group)], faces[i][c % 2])
             for i, channels in enumerate((pixel, [*range(INT32_SHOWN - 1), None])) for c in channels]
    lefts = byte_strip(sheet, MARGIN, top, items, cell, h)
    sheet.text(lefts[0], top + 2.3, f"pixel (h, w): {channel_groups * group} {unit}", size=SMALL - 1, va="bottom")
    sheet.text(lefts[len(pixel)], top + 2.3, "pixel (h, w + 1)", size=SMALL - 1, va="bottom")
    bracket(sheet, lefts[0], lefts[0] + group * cell, top - h - 0.4, f"one {name}: the broadcast", size=SMALL - 1,
            ha="left")
    step_h, step_w, step_group = view.strides
    index_steps(sheet, MARGIN, top - h - 3.4, [("h", step_h), ("w", step_w), (f"ci/{group}", step_group), element])


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
