"""Stage 16, strides moved: each downsampling block's stride moves up into the block before it.

In ResNet v1 a downsampling block (layer2.0, layer3.0, layer4.0) reads its input with two 1x1 convs of stride 2, its
conv1 and its projection shortcut: of the 56 x 56 pixels the block before it writes, only every other pixel of every
other row, a quarter, is ever read. That block computes all of them, and its last two convs are the expensive ones:
a 3x3 conv and a 1x1 conv on the whole image. OpenVINO's graph rewrite StridesOptimization moves the stride up, and
so does `strides_moved` here, on the network's description: the block before computes its conv2 with stride 2 (the
3x3 window around every other pixel: a quarter of the outputs, at the same cost each) and its conv3 on the quarter
that is left, and adds the shortcut picked at the same pixels (`residual_stride` in the conv kernel: its input,
read at every other pixel); the downsampling block's conv1 and shortcut become stride 1 on the smaller image. The
network computes the same function: only pixels nobody reads are no longer computed. Three blocks lose 3/4 of two
convs each: 376 of the 3,858 million multiply-adds.

It is exact for v1 only as it is. In v1.5 (torchvision's weights) the stride sits in the downsampling block's
3x3 conv2, and its conv1, a 1x1 of stride 1, reads every pixel of its input: there is no quarter nobody reads, and
`strides_moved` leaves the network as it is.

Everything else is stage 12's, imported: the tuned register tile, its candidates, packing and stand-in weights
(common/tuned.py), Winograd where its tiles fit (common/winograd.py), which the strided 3x3 convs leave for the
direct tile kernel, and the plan (common/tiles.py). The stage declares the rewrite in its record (`rewrites`):
`make explain`, which shows every layer's output, takes the last stage that computes them all.
"""

from dataclasses import replace
from functools import partial
from pathlib import Path

from common.architecture import Conv, ResNet50, out_size, resnet50
from common.model import Compiled, Parts, Tuning
from common.planner import Planner
from common.tiles import Choice, label, shape_name, tiled_plan
from common.tuned import PRELUDE, candidates, fold, stand_in, stand_in_fc
from common.weights import folded_pool
from common.winograd import winograd, winograd_tile


def strides_moved(variant: str) -> ResNet50:
    """ResNet-50 (common/architecture.py) with the stride of every downsampling block whose input is read only by
    1x1 convs of that stride (conv1 and the projection shortcut: v1's) moved into the block before it: its conv2
    takes the stride, its conv3 runs on conv2's smaller output, and the downsampling block's conv1 and shortcut
    read that smaller output with stride 1. The blocks before ResNet-50's downsampling blocks have no projection of
    their own, which would have to take the stride too: such a block is left as it is."""
    arch = resnet50(variant)
    blocks = list(arch.blocks)
    for i in range(1, len(blocks)):
        block, before = blocks[i], blocks[i - 1]
        stride = block.conv1.stride
        readers = (block.conv1, block.downsample)
        if stride == 1 or before.downsample or not all(c and c.kernel == 1 and c.stride == stride for c in readers):
            continue
        c2 = before.conv2
        conv2 = replace(c2, stride=stride, out_size=out_size(c2.in_size, c2.kernel, stride, c2.padding))
        conv3 = replace(before.conv3, in_size=conv2.out_size, out_size=conv2.out_size)
        blocks[i - 1] = replace(before, conv2=conv2, conv3=conv3)
        blocks[i] = replace(block, conv1=replace(block.conv1, stride=1, in_size=conv3.out_size),
                            downsample=replace(block.downsample, stride=1, in_size=conv3.out_size))
    return replace(arch, blocks=tuple(blocks))


CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out):
    """x: HWC, zero border {padding}; weight: [group][kh][kw][ci][BLOCK]; residual: HWC, read at every
    {residual_stride}th pixel of its rows and columns; out: HWC, border {out_pad} left alone."""
    wide_vectors()
    # prange gives each thread one contiguous range of tile numbers. Numbered group-major, a thread's
    # tiles share one group's weights; numbered pixel-major, a thread keeps to its part of the image,
    # the part it wrote in the layer before, still in its own core's L2 cache.
    for tile in prange({groups} * {positions}):
        wide_vectors()
        if {pixels_first}:
            group, position = tile % {groups}, tile // {groups}
        else:
            group, position = tile // {positions}, tile % {positions}
        ho = position // {column_tiles}
        wo0 = (position % {column_tiles}) * {rows}
        acc = numba.carray(stack_floats({sums}), ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] = bias[group * {block} + c]
        for kh in range({kernel}):
            for kw in range({kernel}):
                for ci in range({in_channels}):
                    for r in range({rows}):
                        xv = x[ho * {stride} + kh, (wo0 + r) * {stride} + kw, ci]
                        for c in range({block}):
                            acc[r, c] += xv * weight[group, kh, kw, ci, c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if {add_residual}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] += residual[ho * {residual_stride}, (wo0 + r) * {residual_stride}, group * {block} + c]
        if {relu}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range({rows}):
            for c in range({block}):
                out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = acc[r, c]
'''


def conv_step(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0, *, choices):
    """Stage 12's conv step, its direct conv kernel reading the residual at the pixels its output keeps: at every
    other pixel where the stride moved up (the block's input is twice its output's size)."""
    choice = choices[shape_name(conv)]
    tile = winograd_tile(conv)
    if tile:
        return winograd(p, pool, x, conv, out, tile, choice, f"{shape_name(conv)}_f{tile}", f"_{label(choice)}")
    weight, bias = pool[conv.name]
    add_residual = residual is not None
    residual_stride = residual.shape[0] // conv.out_size if add_residual else 1
    epilogue = (f"_add{residual_stride}" if add_residual else "") + ("_relu" if relu else "")
    p.emit(CONV, f"conv_{shape_name(conv)}{epilogue}_{label(choice)}",
           (x, weight, bias, residual if add_residual else out, out), conv, tiled=True,
           in_channels=conv.in_channels, groups=conv.out_channels // choice.block,
           positions=conv.out_size * (conv.out_size // choice.rows), column_tiles=conv.out_size // choice.rows,
           kernel=conv.kernel, stride=conv.stride, padding=conv.padding, add_residual=add_residual, relu=relu,
           residual_stride=residual_stride, out_pad=out_border, rows=choice.rows, block=choice.block,
           sums=choice.rows * choice.block,
           pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
    return out


def load_pool(manifest, weights_dir, choices):
    """Every conv of the rewritten network as (folded weight, bias) by conv name, packed for its shape's choice;
    fc's weight and bias as exported."""
    return folded_pool(manifest, weights_dir, lambda conv, tensors, eps: fold(conv, tensors, eps,
                                                                              choices[shape_name(conv)]),
                       architecture=strides_moved)


def plan(arch: ResNet50, pool: dict, choices: dict):
    """Stage 12's plan of the rewritten network, with this stage's conv step."""
    return tiled_plan(arch, pool, partial(conv_step, choices=choices))


PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan, architecture=strides_moved,
              tuning=Tuning(Choice, candidates, stand_in, stand_in_fc))
Model = partial(Compiled, PARTS)
