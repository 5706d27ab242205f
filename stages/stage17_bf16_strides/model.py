"""Stage 17, bfloat16 strides moved: stage 16's graph rewrite applied to stage 14's bfloat16 network.

Stage 16 moved each downsampling block's stride up into the block before it (`strides_moved`, imported from
common/rewrites.py): the three blocks before layer2.0, layer3.0 and layer4.0 compute their 3x3 conv2 with stride 2
and their conv3 on the quarter of the pixels the next block reads, and add their shortcut picked at those pixels.
The rewrite does not depend on how a value is stored, so it carries over as it is: the same 376 of 3,858 million
multiply-adds go, and in bfloat16 they cost as many vdpbf16ps per multiply-add as in float32 they cost FMAs. The
one change to stage 14's kernel is the one stage 16 made to stage 12's: its output loop reads the residual at every
`residual_stride`th pixel (OUTPUT_LOOP below; CONV is stage 14's tile loop with it).

Everything else is stage 14's, imported: bfloat16 weights and activations, vdpbf16ps, its candidates, packing, plan
and stand-in weights (common/bf16.py, common/intrinsics.py), and the tuning (common/model.py). Its predecessor is
stage 14, not stage 15: the AMX kernel stays stage 15's, for a CPU that has AMX.
"""

from functools import partial
from pathlib import Path

from common.architecture import Conv, ResNet50
from common.bf16 import CONV_SUMS, NON_NEGATIVE, bf16_plan, candidates, fold, fold_fc, stand_in, stand_in_fc
from common.intrinsics import BF16_FEATURE, HAS_BF16, LANES, PAIR
from common.model import Compiled, Parts, Tuning
from common.planner import Planner
from common.rewrites import strides_moved
from common.tiles import Choice, label, shape_name
from common.weights import folded_pool

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from common.intrinsics import dot_pairs, from_bf16, stack_floats, to_bf16, wide_vectors

HWC = "float32[:, :, ::1]"
BF16 = "uint16[:, :, ::1]"
VALUES = "uint16[::1]"
'''

OUTPUT_LOOP = '''\
        acc = numba.carray(sums, ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] += bias[group * {block} + c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if {add_residual}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] += from_bf16(residual[ho * {residual_stride}, (wo0 + r) * {residual_stride},
                                                    group * {block} + c])
        if {relu}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range({rows}):
            for c in range({block}):
                out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = to_bf16(acc[r, c])
'''

CONV = CONV_SUMS + OUTPUT_LOOP


def conv_step(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0, *, choices):
    """Stage 14's conv step, reading the residual at the pixels its output keeps: at every other pixel where the
    stride moved up (the block's input is twice its output's size)."""
    weight, bias = pool[conv.name]
    choice = choices[shape_name(conv)]
    add_residual = residual is not None
    residual_stride = residual.shape[0] // conv.out_size if add_residual else 1
    epilogue = (f"_add{residual_stride}" if add_residual else "") + ("_relu" if relu else "")
    name = f"conv_{shape_name(conv)}{epilogue}_{label(choice)}"
    p.emit(CONV, name, (x, weight, bias, residual if add_residual else out, out), conv, tiled=True,
           pairs=x.shape[2] // PAIR, lanes=LANES, non_negative=NON_NEGATIVE,
           groups=conv.out_channels // choice.block, positions=conv.out_size * (conv.out_size // choice.rows),
           column_tiles=conv.out_size // choice.rows, kernel=conv.kernel, stride=conv.stride,
           padding=conv.padding, add_residual=add_residual, relu=relu, residual_stride=residual_stride,
           out_pad=out_border, rows=choice.rows, block=choice.block, sums=choice.rows * choice.block,
           pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
    return out


def load_pool(manifest, weights_dir, choices):
    """Every conv of the rewritten network as (weight pairs, bias) by conv name, packed for its shape's choice, and
    fc's the same way."""
    return folded_pool(manifest, weights_dir,
                       lambda conv, tensors, eps: fold(conv, tensors, eps, choices[shape_name(conv)]), fold_fc,
                       architecture=strides_moved)


def plan(arch: ResNet50, pool: dict, choices: dict):
    """Stage 14's plan of the rewritten network, with this stage's conv step."""
    return bf16_plan(arch, pool, partial(conv_step, choices=choices))


# Shown on the command line's first line, with the precision and how its sums are made.
SUMS = (f"float32 sums by vdpbf16ps ({BF16_FEATURE})" if HAS_BF16
        else "no AVX512_BF16 on this CPU: plain float32 sums, slow")
PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan, architecture=strides_moved,
              tuning=Tuning(Choice, candidates, stand_in, stand_in_fc, header=f"bfloat16, {SUMS}; "))
Model = partial(Compiled, PARTS)
