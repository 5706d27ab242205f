"""Stages 8-9's pictures: the register tile, the packed weights and the bordered input (8), the order of the tiles
over the threads, conv by conv (9). The tile is drawn as this CPU gets it (common/target.py).
"""

import numpy as np
from matplotlib.patches import Rectangle

from common.architecture import resnet50
from common.stages import stage_module, stage_number
from course.pictures.shared import (
    ACC_COLOUR,
    COLOURS,
    COURSE_VARIANT,
    GAP,
    MARGIN,
    POINTS_PER_UNIT,
    SMALL,
    SPAN,
    W_COLOUR,
    X_COLOUR,
    Sheet,
    example_conv,
    group_of,
    planned,
    previous,
)

BORDER_COLOUR = "0.8"
PIXEL_MAJOR, GROUP_MAJOR = "#b07aa1", "#76b7b2"  # stage 9's two tile orders

# --- what the pictures draw (choices of the drawing, not of the stages) ---
MANY_THREADS = 4  # stage 9: a 4-core laptop, more threads than a 64-channel conv has groups of 32 channels
TILE_WIDTH = 46.0  # stage 8: units across the drawn tile of sums, whatever BLOCK is
RUNS_SHOWN = 4  # stage 8: input channels drawn in the packed weights
CORNER = 3  # stage 8: extra columns drawn in the corner of the bordered buffer, past the tile's windows


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
    arch = resnet50(COURSE_VARIANT)
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
        (step,) = [s for s in plan.of(conv.name) if s.kernel.startswith("conv")]
        order[conv.name] = step.constants
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
