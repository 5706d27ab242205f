"""Stage 17's picture, bfloat16 strides moved: stage 16's rewrite carried over to stage 14's bfloat16 kernel, the one
line of the kernel it changes and what it saves, counted in vdpbf16ps, with stage 16's table (planned for the CPU
with AVX512_BF16 stage 14's picture is drawn for, so that it is the same on every machine).
"""

import common.intrinsics as intrinsics
from common.architecture import Conv, Linear, resnet50
from common.bf16 import pairs
from common.stages import record, stage_module
from common.tiles import first_of_each_shape
from course.pictures.shared import CODE_FONT, COURSE_VARIANT, GAP, SMALL, Sheet, paragraph, planned, previous, require
from course.pictures.stage14 import bf16_target
from course.pictures.stage16 import MILLION, moves, rewritten, table


def conv_instructions(conv: Conv, lanes: int) -> int:
    """The vdpbf16ps a conv's tile kernel runs: its multiply-adds / (LANES x PAIR), its input channels counted in
    whole pairs (the stem's 3 take 2, the 4th a zero weight)."""
    padded = conv.macs // conv.in_channels * pairs(conv.in_channels) * intrinsics.PAIR
    return padded // (lanes * intrinsics.PAIR)


def fc_instructions(fc: Linear, lanes: int) -> int:
    """The vdpbf16ps of the fc kernel: one per pair of input features and group of LANES outputs, the outputs padded
    to a whole group as fold_fc pads them."""
    return -(-fc.out_features // lanes) * pairs(fc.in_features)


def stage17(stage, sheet: Sheet):
    module = stage_module(stage)
    written, moved = resnet50(COURSE_VARIANT), module.strides_moved(COURSE_VARIANT)
    found = moves(written, moved)
    name, cpu, _, _, lanes, tiles = bf16_target(intrinsics)
    pair = intrinsics.PAIR
    first = first_of_each_shape(moved.convs)
    plan = planned(stage, {shape: module.candidates(conv, tiles)[0] for shape, conv in first.items()})
    if any(len(plan.of(conv.name)) != 1 for conv in moved.convs):
        raise AssertionError("a conv is no longer one call of the tile kernel: redraw the picture")
    i = found[0]
    block, after, was = moved.blocks[i], moved.blocks[i + 1], written.blocks[i]
    (conv2,), (conv3,) = plan.of(block.conv2.name), plan.of(block.conv3.name)
    stride, residual_stride = conv2.constants["stride"], conv3.constants["residual_stride"]
    read = "pair = pairs[ho * {stride} + kh, (wo0 + r) * {stride} + kw, p]"
    dot = "dot_pairs(sums, r * {block} + v, pair, weight, at + v)"
    add = "acc[r, c] += from_bf16(residual[ho * {residual_stride}, (wo0 + r) * {residual_stride},"
    channel = "group * {block} + c])"
    require(module.CONV, read, dot, "acc[r, c] += bias[group * {block} + c]")
    require(module.OUTPUT_LOOP, add, channel, "max(acc[r, c], np.float32(0.0))", "= to_bf16(acc[r, c])")
    predecessor = record(stage).predecessor
    rewritten_names = ", ".join(moved.blocks[k].name for k in found)
    sheet.code([
        (f"arch = strides_moved(variant)   # {COURSE_VARIANT}: {rewritten_names} take the stride of the block after "
         "them (common/rewrites.py)", True),
        (f"for block in arch.blocks: conv1, conv2, conv3 + shortcut   # stage {predecessor}'s plan, each conv its "
         "tuned tile kernel", False),
        (f"{block.conv2.name}: {conv2.kernel}(...)   # was {was.conv2.kernel}x{was.conv2.kernel} stride "
         f"{was.conv2.stride} on {was.conv2.in_size}x{was.conv2.in_size}", True),
        (f"{block.conv3.name}: {conv3.kernel}(...)   # was on {was.conv3.in_size}x{was.conv3.in_size}; its "
         f"shortcut x is still {block.conv1.in_size}x{block.conv1.in_size}", True),
        (f"for tile in prange(groups * positions):   # every conv: stage {predecessor}'s tile kernel, float32 sums",
         False),
        (f"    for kh, kw, p in range(ci/{pair}): for r in range(rows): {read.format(stride='s')}  # conv2: "
         f"s = {stride}", False),
        (f"        for v in range(0, block, {lanes}): {dot.format(block='block')}   # one vdpbf16ps", False),
        ("    acc = sums + bias[c]", False),
        (f"    if add_residual: {add} {channel}".format(residual_stride=residual_stride, block="block") +
         f"   # x at ({residual_stride}ho, {residual_stride}wo)", True),
        ("    out = to_bf16(max(acc, 0))   # rounded once, as it is stored; a downsample conv: no ReLU", False),
    ], f"the blocks around {after.name}, and every conv's tile kernel ({previous(stage)}; kernels as planned for "
       f"{name} ({cpu}), first candidates)", size=CODE_FONT - 1)
    paragraph(sheet, f"What it saves: the multiply-adds of the rewritten blocks' conv2 and conv3 (Conv.macs), and the "
              f"vdpbf16ps their kernels run, {lanes} float32 lanes x PAIR {pair} bfloat16s each on {name}: "
              f"multiply-adds / (LANES {lanes} x PAIR {pair}):", gap=2.4)
    convs = rewritten(written, moved, found)

    def instructions(conv: Conv) -> str:
        return f"{conv_instructions(conv, lanes) / MILLION:.2f}"

    def total(arch) -> int:
        return sum(conv_instructions(conv, lanes) for conv in arch.convs) + fc_instructions(arch.fc, lanes)

    table(sheet, stage, written, moved, convs, "vdpbf16ps, millions", instructions, total,
          f"the network, {COURSE_VARIANT} (ResNet50.macs; vdpbf16ps: every conv's kernel's, and fc's)")
    written_run, moved_run = (sum(conv_instructions(c, lanes) for c in side) for side in zip(*convs, strict=True))
    paragraph(sheet, f"Stage {predecessor} has no Winograd: every conv is one call of its tile kernel, as written "
              f"and as moved, so conv2 saves {(written_run - moved_run) / written_run:.0%} of its vdpbf16ps, as "
              f"conv3 does (the {len(convs)} convs: {written_run / MILLION:.2f} -> {moved_run / MILLION:.2f} "
              "million).", size=SMALL, gap=GAP)
    sheet.caption("The rewrite is the same whatever a value is stored as: strides_moved rewrites the network's "
                  "description, not its numbers, so it carries over from float32 to bfloat16 as it is. The kernel "
                  f"changes in one line: it reads its bfloat16 shortcut at pixels ({residual_stride}i, "
                  f"{residual_stride}j).")
