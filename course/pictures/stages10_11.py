"""Stages 10-11's pictures, Winograd: the data flow of F(m x m, 3x3) on one tile, its matrices (checked against a
direct 3x3 convolution before they are drawn: winograd_check), and where each size is used.
"""

import ast
import re

import numpy as np
from matplotlib.patches import Rectangle

from common.architecture import resnet50
from common.stages import stage_module
from course.pictures.shared import (
    ACC_COLOUR,
    COLOURS,
    COURSE_VARIANT,
    GAP,
    MARGIN,
    PALE,
    SMALL,
    SPAN,
    W_COLOUR,
    X_COLOUR,
    Sheet,
    example_conv,
    group_of,
    previous,
)


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
