"""Stages 1-4's pictures: the conv as written and how its inner loop walks memory (1), the vector lanes of that loop
once the weights are OHWI (2), the weight pool read once instead of per image (3), the rotating buffers every layer
writes into (4).
"""

import numpy as np

from common.architecture import resnet50, tensor_shapes
from common.export_weights import KERAS_BN_EPS
from common.planner import StandIns
from common.stages import stage_module, stage_number
from common.target import vector_registers
from course.pictures.shared import (
    ACC_COLOUR,
    COLOURS,
    COURSE_VARIANT,
    EDGE,
    FONT,
    GAP,
    MARGIN,
    SMALL,
    SPAN,
    W_COLOUR,
    X_COLOUR,
    Sheet,
    example_conv,
    previous,
    short,
)

FLOAT32_BYTES = 4
FLOAT32_BITS = 32
MEGA = 1_000_000

# --- what the pictures draw (choices of the drawing, not of the stages) ---
STEPS_SHOWN = 4  # stage 1: inner-loop steps numbered in the memory walk
IMAGES_SHOWN = 3  # stage 3: forward passes on the time line
BLOCKS_SHOWN = 3  # stage 4: bottleneck blocks drawn in the buffer rotation


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
    arch = resnet50(COURSE_VARIANT)
    pool = StandIns(arch)  # which weight an argument is: pool.names
    plan = module.plan(arch, pool, np.float32(KERAS_BN_EPS))
    sheet.code([
        (f"buffers = [np.empty(largest) for _ in range(NUM_BUFFERS)]   # NUM_BUFFERS = {module.NUM_BUFFERS}, "
         "when built", True),
        ("steps = plan()             # (kernel, arguments), every buffer view and weight bound", True),
        ("conv2d(x, weight, stride, padding, out)   # out: a view of one of the buffers", True),
        ("    for co, ho, wo, kh, kw, ci: ... out[ho, wo, co] = acc         # the loops are stage 3's", False),
        ("batch_norm(out, ..., out); relu(out, out)   # in place", True),
    ], f"the forward pass ({previous(stage)})")
    writes = []  # (step name, buffer index)
    for kernel, args in plan.steps:
        if kernel.__name__ not in ("conv2d", "max_pool"):
            continue
        out = args[-1]
        buffer = next(i for i, b in enumerate(plan.buffers) if np.shares_memory(out, b))
        name = pool.names[id(args[1])].removesuffix(".weight") if kernel.__name__ == "conv2d" else "maxpool"
        writes.append(("stem" if name == arch.stem.name else name, buffer))
    shown_blocks = {b.name for b in arch.blocks[:BLOCKS_SHOWN]}
    writes = [(n, b) for n, b in writes if not n.startswith("layer") or ".".join(n.split(".")[:2]) in shown_blocks]
    columns = len(writes)
    label_w = 11.0
    w = (SPAN - 2 * MARGIN - label_w) / columns
    h = 4.0
    largest = plan.buffers[0].size
    stem = arch.stem
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
