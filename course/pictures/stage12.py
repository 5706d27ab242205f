"""Stage 12's picture, tuning: the candidate tiles of two CPUs named to LLVM, AVX-512 and AVX2, in their register
files, the tuning's rounds, and each conv shape's candidates. Nothing measured is drawn, as what wins differs from
CPU to CPU.
"""

import re
from pathlib import Path

from common.architecture import resnet50
from common.intrinsics import FLOAT32_BITS
from common.stages import stage_module
from common.target import AVX2_TARGET, vector_registers
from common.tiles import first_of_each_shape
from common.tuning import PASSES, TIMING_SECONDS, TUNING_SECONDS, choice_path
from course.pictures.shared import (
    ACC_COLOUR,
    CODE_FONT,
    COLOURS,
    COURSE_VARIANT,
    FONT,
    GAP,
    MARGIN,
    PALE,
    SMALL,
    SPAN,
    W_COLOUR,
    X86,
    X_COLOUR,
    Sheet,
    group_of,
    planned,
    previous,
)

# The CPUs its candidates are drawn for, named to LLVM (common.target), so that the picture is the same on every
# machine; nothing measured is drawn, as what wins differs from CPU to CPU
TUNED_TARGETS = (("AVX-512", "skylake-avx512"), ("AVX2", AVX2_TARGET["NUMBA_CPU_NAME"]))
SUM_COLOURS = (ACC_COLOUR, "#c7e9c0")  # the sums of a tile's even and odd channel vectors
ORDINALS = ("first", "second", "third", "fourth")  # a tuning round's candidates


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
        lanes = bits // FLOAT32_BITS
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
    first = first_of_each_shape(arch.convs)
    picks = {}
    for shape, conv in first.items():
        rows = {name: [c.rows for c in module.candidates(conv, t)] for name, t in tiles.items()}
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
    tiles = module.register_tiles(registers, bits // FLOAT32_BITS)
    first = first_of_each_shape(arch.convs)
    options = {shape: module.candidates(conv, tiles) for shape, conv in first.items()}
    compiled, rounds, plans = set(), [], []
    for rank in range(max(map(len, options.values()))):
        choices = {shape: o[rank if rank < len(o) else 0] for shape, o in options.items()}
        plan = planned(stage, choices)
        plans.append(plan)
        kernels = set(plan.kernels)
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
    (named,) = [step.kernel for step in plans[-1].of(example.name)]
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
