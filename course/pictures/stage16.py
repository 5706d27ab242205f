"""Stage 16's picture, strides moved: one transition of v1 (the block before a downsampling block, and that block)
pixel by pixel before and after strides_moved, and what the rewrite saves, from common/architecture.py's shapes
and the stage's plan (planned for AVX-512, as stage 12's picture draws it, so that it is the same on every machine).
"""

from matplotlib.patches import Rectangle

from common.architecture import Conv, resnet50
from common.intrinsics import FLOAT32_BITS
from common.stages import record, stage_module
from common.target import vector_registers
from common.tiles import first_of_each_shape, register_tiles
from course.pictures.shared import (
    ACC_COLOUR,
    CODE_FONT,
    COLOURS,
    COURSE_VARIANT,
    EDGE,
    GAP,
    MARGIN,
    PALE,
    SMALL,
    SPAN,
    X86,
    X_COLOUR,
    Sheet,
    paragraph,
    planned,
    previous,
    require,
    short,
)
from course.pictures.stage12 import TUNED_TARGETS

CORNER = 8  # pixels drawn of a side of the transition's biggest images: their top left corner
CELL = 1.3  # a pixel's cell in the transition's grids, in units
# The 3x3 windows of two neighbouring outputs of conv2 drawn on its input, each framed in its output too
WINDOW_COLOURS = (COLOURS[0], COLOURS[3])
WINDOW_PIXEL = (2, 2)  # the first one's centre, a pixel of conv2's input; the second is the next output on its row
SHORTCUT_RISE = 2.4  # the shortcut's line, above the grids
DOT = 2.6  # the size of the dots on the pixels the shortcut reads, in points
LEGEND_CHARACTER = 0.62  # a legend text's width per character, in units
WASTE_HATCH = "////"  # a pixel computed that nothing reads
MILLION = 1e6


def products(module, conv: Conv) -> int:
    """The multiply-adds of the products of the conv's kernel in stages 12 and 16: Winograd F(m x m, 3x3)'s,
    (m + 2)^2 per m x m tile and input and output channel (its transforms not counted), where winograd_tile picks it
    (stride 1 only); the direct tile kernel's, Conv.macs, elsewhere."""
    m = module.winograd_tile(conv)
    if not m:
        return conv.macs
    return (conv.out_size // m) ** 2 * (m + conv.kernel - 1) ** 2 * conv.in_channels * conv.out_channels


def moves(written, moved) -> list[int]:
    """The blocks strides_moved rewrote as the block before a downsampling block: those whose conv2 took the stride
    of the block after them (which conv2 they take, the shapes of conv3 and of the next block's conv1 and shortcut,
    checked as the picture draws them)."""
    found = [i for i, (a, b) in enumerate(zip(written.blocks, moved.blocks, strict=True)) if a.conv2 != b.conv2]
    for i in found:
        a, b, after = written.blocks[i], moved.blocks[i], moved.blocks[i + 1]
        stride = written.blocks[i + 1].conv1.stride
        drawn = (b.conv2.stride == stride and b.conv2.out_size == a.conv2.out_size // stride
                 and b.conv3.in_size == b.conv3.out_size == b.conv2.out_size
                 and after.conv1.stride == after.downsample.stride == 1 and after.conv1.in_size == b.conv3.out_size)
        if not drawn:
            raise AssertionError(f"{b.name}: strides_moved no longer moves the stride as drawn: redraw the picture")
    return found


def grid(sheet: Sheet, x, top, n: int, face, kept: int = 1):
    """A grid of n x n pixels, top left (x, top), in face: the pixels of every kept-th row and column, the others
    pale and hatched (computed, never read)."""
    for i in range(n):
        for j in range(n):
            wasted = i % kept or j % kept
            sheet.box(x + j * CELL, top - i * CELL, CELL, CELL, face=PALE if wasted else face, edge="0.55",
                      hatch=WASTE_HATCH if wasted else None)


def frame(sheet: Sheet, x, top, row: int, column: int, size: int, colour, dashed: bool):
    """A square of size x size pixels framed in a grid drawn from (x, top), its top left pixel (row, column)."""
    sheet.ax.add_patch(Rectangle((x + column * CELL, top - (row + size) * CELL), size * CELL, size * CELL,
                                 fill=False, edgecolor=colour, linewidth=1.6,
                                 linestyle=(0, (3, 1.5)) if dashed else "-"))


def transition(sheet: Sheet, stage, written, moved, i: int):
    """Block i (the block before a downsampling block) and the next block's two 1x1 convs, as written and as
    moved: a row of grids each, from the block's input x to what the next block's 1x1 convs write."""
    block, after = written.blocks[i], written.blocks[i + 1]
    stride = after.conv1.stride
    full, quarter = block.conv1.in_size, block.conv1.in_size // stride
    shown = {full: CORNER, quarter: CORNER // stride}
    paragraph(sheet, f"One transition of v1, {block.name} -> {after.name}. Each grid is the top left corner of an "
              f"image, {CORNER} x {CORNER} pixels of {full} x {full} ({shown[quarter]} x {shown[quarter]} of "
              f"{quarter} x {quarter}), a cell a pixel with all its channels:", gap=2.0)
    columns = 5  # x, conv1's output, conv2's, the block's output, the next block's 1x1 convs'
    gap = (SPAN - 2 * MARGIN - (columns - 1) * CORNER * CELL - shown[quarter] * CELL) / (columns - 1)
    lefts = [MARGIN + c * (CORNER * CELL + gap) for c in range(columns)]
    pixels = f"pixels ({stride}i, {stride}j)"
    rows = ((record(stage).predecessor, written, "v1 as written"), (record(stage).number, moved, "strides_moved"))
    for number, arch, how in rows:
        b, nxt = arch.blocks[i], arch.blocks[i + 1]
        if b.conv2.stride == 1:
            heading = (f"Stage {number}, {how}: {b.name} computes all {full} x {full} pixels of its output; "
                       f"{nxt.name}'s conv1 and downsample, 1x1 of stride {nxt.conv1.stride}, read only {pixels}: "
                       f"{stride ** 2 - 1}/{stride ** 2} of conv2's and conv3's outputs are computed for nobody.")
        else:
            heading = (f"Stage {number}, {how}: {b.name}'s conv2 takes the stride and computes only {pixels}, "
                       f"{b.conv2.out_size} x {b.conv2.out_size}; conv3 runs on those and picks its shortcut x "
                       f"there too; {nxt.name}'s 1x1 convs have stride {nxt.conv1.stride}.")
        paragraph(sheet, heading, size=SMALL, gap=1.6)
        top = sheet.y - SHORTCUT_RISE - 0.4
        middle = top - shown[quarter] * CELL / 2  # the arrows, level with the middle of the smaller grids
        sizes = (b.conv1.in_size, b.conv1.out_size, b.conv2.out_size, b.conv3.out_size, nxt.conv1.out_size)
        grids = [shown[size] for size in sizes]
        residual_stride = b.conv1.in_size // b.conv3.out_size  # as the stage's conv step computes it
        kept = b.conv3.out_size // nxt.conv1.out_size  # of conv2's and conv3's outputs, the next block reads these
        for c, face in enumerate((X_COLOUR, X_COLOUR, ACC_COLOUR, ACC_COLOUR, ACC_COLOUR)):
            grid(sheet, lefts[c], top, grids[c], face, kept if c in (2, 3) else 1)
        for r in range(0, grids[0], residual_stride):  # the pixels of x the shortcut reads
            for c in range(0, grids[0], residual_stride):
                sheet.ax.plot(lefts[0] + (c + 0.5) * CELL, top - (r + 0.5) * CELL, "o", color="0.15",
                              markersize=DOT)
        for k, colour in enumerate(WINDOW_COLOURS):  # two neighbouring outputs of conv2, their 3x3 windows
            out_row, out_column = WINDOW_PIXEL[0] // b.conv2.stride, WINDOW_PIXEL[1] // b.conv2.stride + k
            corner = (out_row * b.conv2.stride - b.conv2.padding, out_column * b.conv2.stride - b.conv2.padding)
            frame(sheet, lefts[1], top, *corner, b.conv2.kernel, colour, dashed=True)
            frame(sheet, lefts[2], top, out_row, out_column, 1, colour, dashed=False)
        arrows = (f"conv1 1x1\nstride {b.conv1.stride}", f"conv2 3x3\nstride {b.conv2.stride}",
                  f"conv3 1x1\nstride {b.conv3.stride}, + x", f"{nxt.name}'s\nconv1, downsample:\n1x1, stride "
                  f"{nxt.conv1.stride}")
        for c, text in enumerate(arrows):
            start = lefts[c] + grids[c] * CELL + 0.5
            sheet.arrow((start, middle), (lefts[c + 1] - 0.5, middle))
            sheet.text((start + lefts[c + 1]) / 2, middle - 0.7, text, size=SMALL - 1.5, ha="center", va="top",
                       linespacing=1.15)
        # the shortcut: from x, up and over the grids, down into conv3's add
        into = (lefts[2] + grids[2] * CELL + lefts[3]) / 2
        line = top + SHORTCUT_RISE
        sheet.ax.plot([lefts[0] + grids[0] * CELL / 2] * 2 + [into], [top, line, line], color=EDGE, linewidth=1.1)
        sheet.arrow((into, line), (into, middle + 0.3))
        read = ("x at every pixel" if residual_stride == 1 else
                f"x[{residual_stride}i, {residual_stride}j]: residual_stride = {residual_stride}")
        sheet.text(lefts[1], line + 0.3, f"shortcut: {read}", size=SMALL - 1.5, va="bottom")
        names = (f"x: {b.name}'s input", "conv1's output", "conv2's output", f"{b.name}'s output",
                 f"{nxt.name}'s 1x1 convs:")
        channels = (b.conv1.in_channels, b.conv1.out_channels, b.conv2.out_channels, b.conv3.out_channels)
        shapes = [f"{size} x {size} x {ch}" for size, ch in zip(sizes, channels, strict=False)]
        shapes.append(",\n".join(f"{c.name.split('.')[2]} {c.out_size} x {c.out_size} x {c.out_channels}"
                                  for c in (nxt.conv1, nxt.downsample)))
        for c, (name, text) in enumerate(zip(names, shapes, strict=True)):
            last = c == columns - 1
            sheet.text(lefts[c] + grids[c] * CELL if last else lefts[c] + CORNER * CELL / 2,
                       top - CORNER * CELL - 0.6, f"{name}\n{text}", size=SMALL - 1.5, ha="right" if last else
                       "center", va="top", linespacing=1.15)
        sheet.y = top - CORNER * CELL - 6.2
    legend_y = sheet.y
    x = MARGIN
    for face, hatch, text in ((X_COLOUR, None, "read at every pixel"), (ACC_COLOUR, None, "computed and read"),
                              (PALE, WASTE_HATCH, "computed, never read")):
        sheet.box(x, legend_y, 2.0, 1.5, face=face, edge="0.55", hatch=hatch)
        sheet.text(x + 2.6, legend_y - 0.75, text, size=SMALL - 0.5)
        x += 5 + len(text) * LEGEND_CHARACTER
    sheet.ax.plot(x + 1.0, legend_y - 0.75, "o", color="0.15", markersize=DOT)
    text = "x's pixels the shortcut reads"
    sheet.text(x + 2.0, legend_y - 0.75, text, size=SMALL - 0.5)
    x += 5 + len(text) * LEGEND_CHARACTER
    for k, colour in enumerate(WINDOW_COLOURS):
        sheet.ax.add_patch(Rectangle((x + k * 1.2, legend_y - 1.5), 2.0, 1.5, fill=False, edgecolor=colour,
                                     linewidth=1.4, linestyle=(0, (3, 1.5))))
    sheet.text(x + 4.2, legend_y - 0.75, "two outputs' 3x3 windows", size=SMALL - 0.5)
    sheet.y -= 1.5 + GAP


def rewritten(written, moved, found: list[int]) -> list[tuple[Conv, Conv]]:
    """The convs strides_moved changes, (as written, as moved): conv2 and conv3 of each block found by moves."""
    return [(written.blocks[i].convs[k], moved.blocks[i].convs[k]) for i in found for k in (1, 2)]


def table(sheet: Sheet, stage, written, moved, convs, column: str, cost, total, network: str):
    """The rewritten convs' shapes and multiply-adds (Conv.macs) before and after, as bars, and a last column, its
    heading `column`, of what each costs its kernel, cost(conv) before -> after; below, the network's (`network`):
    its multiply-adds (ResNet50.macs) and total(arch), in millions, before and after. Stages 16 and 17 count the
    same rewrite in their kernels' own units."""
    largest = max(a.macs for a, _ in convs)
    widths = {"conv": 9.0, "as written": 16.0, "moved": 16.0, "bar": 19.0, "millions": 19.0}
    lefts = {name: MARGIN + sum(list(widths.values())[:k]) for k, name in enumerate([*widths, "cost"])}
    h = 1.9
    top = sheet.y
    for name, text in (("conv", "conv"), ("as written", f"stage {record(stage).predecessor}, as written"),
                       ("moved", f"stage {record(stage).number}, moved"), ("bar", "multiply-adds (Conv.macs)"),
                       ("millions", "millions"), ("cost", column)):
        sheet.text(lefts[name], top, text, size=SMALL - 0.5, va="bottom", color="0.25")
    y = top - 0.4

    def shape(c: Conv) -> str:
        return f"{c.kernel}x{c.kernel} stride {c.stride}, {c.in_size} -> {c.out_size}"

    for a, b in convs:
        sheet.text(lefts["conv"], y - h / 2, short(a.name), size=SMALL - 0.5)
        sheet.text(lefts["as written"], y - h / 2, shape(a), size=SMALL - 1)
        sheet.text(lefts["moved"], y - h / 2, shape(b), size=SMALL - 1)
        sheet.box(lefts["bar"], y - 0.2, (widths["bar"] - 1) * a.macs / largest, h - 0.4, face=PALE,
                  hatch=WASTE_HATCH)
        sheet.box(lefts["bar"], y - 0.2, (widths["bar"] - 1) * b.macs / largest, h - 0.4, face=ACC_COLOUR)
        sheet.text(lefts["millions"], y - h / 2, f"{a.macs / MILLION:.1f} -> {b.macs / MILLION:.1f}",
                   size=SMALL - 1)
        sheet.text(lefts["cost"], y - h / 2, f"{cost(a)} -> {cost(b)}", size=SMALL - 1)
        y -= h
    sheet.ax.plot([MARGIN, SPAN - MARGIN], [y - 0.2] * 2, color=EDGE, linewidth=0.6)
    y -= 0.6
    sheet.text(MARGIN, y - h / 2, network, size=SMALL - 0.5)
    for name, before, after in (("millions", written.macs, moved.macs), ("cost", total(written), total(moved))):
        sheet.text(lefts[name], y - h / 2, f"{before / MILLION:,.0f} -> {after / MILLION:,.0f}  "
                   f"(-{(before - after) / MILLION:,.0f}, {(before - after) / before:.1%})", size=SMALL - 1)
    sheet.y = y - h - 1.6


def savings(sheet: Sheet, stage, written, moved, found: list[int]):
    """Per rewritten block, conv2's and conv3's shapes and multiply-adds before and after, as bars; the network's
    totals, counted by common/architecture.py and as the kernels' products."""
    module = stage_module(stage)
    paragraph(sheet, "What it saves: the multiply-adds of the rewritten blocks' conv2 and conv3 (Conv.macs: out^2 "
              "x out channels x in channels x kernel^2), and of their kernels' products (Winograd F(m x m) where "
              "winograd_tile picks it, (m + 2)^2 per m x m tile; a strided 3x3 is the direct tile kernel's):",
              gap=2.4)
    convs = rewritten(written, moved, found)

    def computed_by(c: Conv) -> str:
        m = module.winograd_tile(c)
        return f"{f'F({m}x{m})' if m else 'direct'} {products(module, c) / MILLION:.1f}"

    def total(arch) -> int:
        return sum(products(module, c) for c in arch.convs) + arch.fc.macs

    table(sheet, stage, written, moved, convs, "its kernel's products, millions", computed_by, total,
          f"the network, {COURSE_VARIANT} (ResNet50.macs; products: every conv's kernel's, and fc's)")
    nexts = [moved.blocks[i + 1] for i in found]
    same = ", ".join(f"{b.name}'s {b.conv1.macs / MILLION:.1f} + {b.downsample.macs / MILLION:.1f}" for b in nexts)
    even = [(a, b) for a, b in convs if products(module, a) == products(module, b)]
    kernel = even[0][0].kernel
    m = module.winograd_tile(even[0][0])
    tile = m + kernel - 1  # Winograd's input tile: (m + 2)^2 products per m x m outputs
    stride = written.blocks[found[0] + 1].conv1.stride
    k2 = kernel ** 2
    paragraph(sheet, f"The downsampling blocks' conv1 and downsample cost what they did ({same}): stride 1 on the "
              f"quarter instead of stride {stride} on the whole. Where stage {record(stage).predecessor} runs conv2 "
              f"as Winograd F({m}x{m}) ({', '.join(short(a.name) for a, _ in even)}), {tile}^2 / {m}^2 = "
              f"{tile ** 2 / m ** 2:g} multiplies for a direct conv's {k2}, the stride saves no products: a quarter "
              "of the outputs computed "
              f"directly cost as much ({k2} / {stride ** 2} = {k2 / stride ** 2:g}). conv3's "
              f"{stride ** 2 - 1}/{stride ** 2} are saved in every block.", size=SMALL, gap=GAP)


def stage16(stage, sheet: Sheet):
    module = stage_module(stage)
    written, moved = resnet50(COURSE_VARIANT), module.strides_moved(COURSE_VARIANT)
    found = moves(written, moved)
    # planned as stage 12's picture plans, with every shape's first candidate on AVX-512
    cpu = dict(TUNED_TARGETS)["AVX-512"]
    bits, registers = vector_registers(X86, cpu, "")
    tiles = register_tiles(registers, bits // FLOAT32_BITS)
    first = first_of_each_shape(moved.convs)
    plan = planned(stage, {shape: module.candidates(conv, tiles)[0] for shape, conv in first.items()})
    i = found[0]
    block, after, was, was_after = moved.blocks[i], moved.blocks[i + 1], written.blocks[i], written.blocks[i + 1]
    (conv2,), (conv3,) = plan.of(block.conv2.name), plan.of(block.conv3.name)
    (conv1,), (down,) = plan.of(after.conv1.name), plan.of(after.downsample.name)
    stride, residual_stride = conv2.constants["stride"], conv3.constants["residual_stride"]
    if residual_stride != block.conv1.in_size // block.conv3.out_size:
        raise AssertionError(f"{conv3.kernel} reads its residual at every {residual_stride}th pixel, not as drawn")
    read = "xv = x[ho * {stride} + kh, (wo0 + r) * {stride} + kw, ci]"
    add = "acc[r, c] += residual[ho * {residual_stride}, (wo0 + r) * {residual_stride}, group * {block} + c]"
    require(module.CONV, read, add)
    m = module.winograd_tile(was.conv2)
    rewritten = ", ".join(moved.blocks[k].name for k in found)
    sheet.code([
        (f"arch = strides_moved(variant)   # {COURSE_VARIANT}: {rewritten} take the stride of the block after "
         "them; v1.5 as it is", True),
        (f"for block in arch.blocks: conv1, conv2, conv3 + shortcut   # stage {record(stage).predecessor}'s plan, "
         "each conv its tuned kernel", False),
        (f"{block.conv2.name}: {conv2.kernel}(...)   # was {was.conv2.kernel}x{was.conv2.kernel} stride "
         f"{was.conv2.stride} on {was.conv2.in_size}x{was.conv2.in_size}: Winograd F({m}x{m})", True),
        (f"    {read.format(stride=stride)}   # the {block.conv2.kernel}x{block.conv2.kernel} window around pixel "
         f"({stride}ho, {stride}wo)", True),
        (f"{block.conv3.name}: {conv3.kernel}(...)   # was on {was.conv3.in_size}x{was.conv3.in_size}", True),
        (f"    {add.format(residual_stride=residual_stride, block='block')}   # x at ({residual_stride}ho, "
         f"{residual_stride}wo)", True),
        (f"{after.conv1.name}, downsample: {conv1.kernel}, {down.kernel}   # were stride "
         f"{was_after.conv1.stride} on {was_after.conv1.in_size}x{was_after.conv1.in_size}", True),
    ], f"the blocks around {after.name} ({previous(stage)}; kernels as planned for AVX-512, first candidates)",
        size=CODE_FONT - 1)
    transition(sheet, stage, written, moved, i)
    savings(sheet, stage, written, moved, found)
    v15 = resnet50("v1.5")
    if module.strides_moved("v1.5") != v15:
        raise AssertionError("strides_moved now rewrites v1.5: redraw the caption")
    sheet.caption(f"v1.5 (torchvision's weights) is left as it is, strides_moved(\"v1.5\") == resnet50(\"v1.5\"): its "
                  f"stride sits in the downsampling block's 3x3 conv2, and its conv1, 1x1 of stride "
                  f"{v15.blocks[found[0] + 1].conv1.stride}, reads every pixel of the block before: no quarter goes "
                  "unread.")
