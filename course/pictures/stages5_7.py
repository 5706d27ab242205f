"""Stages 5-7's pictures: a kernel generated per layer shape and the generated forward pass (5), the output
channels split over threads (6), the batch-norm, ReLU and add passes the fused conv does away with (7).
"""

import textwrap

import numpy as np

from common.architecture import resnet50
from common.planner import Plan
from common.stages import STAGES, stage_module, stage_number
from course.pictures.shared import (
    CODE_FONT,
    COLOURS,
    COURSE_VARIANT,
    MARGIN,
    SMALL,
    SPAN,
    W_COLOUR,
    X_COLOUR,
    Sheet,
    example_conv,
    planned,
    previous,
    short,
)

# --- what the pictures draw (choices of the drawing, not of the stages) ---
THREADS_DRAWN = (2, 3)  # stage 6: this machine's 2 cores, and a count that does not divide the channels
FORWARD_LINES = 9  # stage 5: lines of the generated forward pass shown


def stage5(stage, sheet: Sheet):
    plan = planned(stage)
    conv = example_conv(resnet50(COURSE_VARIANT))
    kernel = next(step for step in plan.of(conv.name) if step.kernel.startswith("conv"))
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
    source_lines = plan.kernels[kernel.kernel].strip("\n").splitlines()
    text = textwrap.dedent("\n".join(source_lines)).splitlines()
    unfilled = [t.strip().replace("{{", "{").replace("}}", "}") for t in template_lines]
    sheet.code([(line, line.strip() != t) for line, t in zip(text, unfilled, strict=True)],
               f"generated for {conv.name} ({conv.in_size}x{conv.in_size}x{conv.in_channels}, {c['kernel']}x"
               f"{c['kernel']}, stride {c['stride']}, padding {c['padding']}): every shape a literal "
               f"(highlighted: the lines the generator filled in)", size=CODE_FONT - 1)
    lines = [line.strip("\n") for line in plan.lines()[:FORWARD_LINES]]
    sheet.code([("def forward(a):", False)] + [(line, False) for line in lines] + [("    ...", False)],
               f"the generated forward pass: {len(plan.steps)} calls of {len(plan.kernels)} distinct "
               f"kernels, a comment per block (a[i]: the i-th array the plan bound)", size=CODE_FONT - 1)


def stage6(stage, sheet: Sheet):
    plan = planned(stage)
    conv = example_conv(resnet50(COURSE_VARIANT))
    channels = conv.out_channels
    kernel = next(step.kernel for step in plan.of(conv.name) if step.kernel.startswith("conv"))
    sheet.code([
        ("@njit(..., parallel=True)", True),
        (f"def {kernel}(x, weight, out):", False),
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
    lines = plan.lines()
    start = lines.index(f"    # {block.name}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("#")), len(lines))
    names = [line.strip().split("(")[0] for line in lines[start + 1:end]]
    convs = iter(step.conv for step in plan.steps if step.conv is not None
                 and step.conv.name.startswith(block.name + ".") and step.kernel.startswith("conv"))
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
    block = next(b for b in resnet50(COURSE_VARIANT).blocks if b.downsample)
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
    calls_before, calls = len(before.steps), len(plan.steps)
    sheet.caption(f"The kernel calls of block {block.name}, in the order they run; each reads and writes "
               f"whole activations in memory. In the whole network {calls_before} kernel calls became {calls}: "
               f"{calls_before - calls} passes over activations are gone. The shortcut "
               f"({short(block.downsample.name)}) now runs before conv3, which adds it as it stores its sums.")
