"""Stage 8, tiled: a register-tiled conv kernel that keeps a tile of sums in vector registers.

Stage 7's conv computes one output value at a time: a dot product over the kernel window, with a load
of a weight and of an input for every multiply-add and a sum across the vector's lanes at the end. A
core can do two 16-lane fused multiply-adds (FMA) per cycle but only two vector loads, so such a loop
waits on loads. The kernel here computes a *tile* of outputs at once: ROWS output pixels of one row by
BLOCK output channels (with AVX-512, 7 x 32 sums = 14 zmm registers). For every input channel of every
kernel tap it loads BLOCK/LANES packed weight vectors and one input value per pixel (broadcast to all
lanes) and does ROWS x BLOCK/LANES FMAs into the sums, which stay in registers until the tile is done:
9 loads feed 14 FMAs. That is the micro-kernel every fast CPU library is built around. What it needs:
- a tile that fits the CPU's vector registers, chosen from them at import (`channel_vectors`);
- weights packed at load time as [group][kh][kw][ci][BLOCK] (one group = BLOCK output channels), so
  the BLOCK weights a tile needs for one input channel are one contiguous run: whole vector loads;
- no branches in the tile loop: the inputs of 3x3 convs and of the stem live in buffers with a zero
  border, written once, instead of the padding tests of stage 7's kernel;
- two compiler settings (see `wide_vectors` and `tile_vectorizer`): LLVM's tuning for Intel's AVX-512
  CPUs prefers 256-bit vectors, which halves the FMA rate, and numba runs LLVM's loop vectorizer but not
  its SLP vectorizer, the pass that turns the tile's unrolled sums into vector registers.

Threads split each conv by groups of BLOCK output channels, as stage 6 split it by output channels. The
rest (folded batch norm, fused output loop, generated source, buffers, pool) is stage 7's. From stage 9 on, the
tile's size is imported from common/tiles.py, its intrinsics and compile settings from common/intrinsics.py, the
bordered buffers from common/planner.py's Planner, and this stage's plan from common/tiled.py.
"""

import contextlib
from functools import partial
from pathlib import Path

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Bottleneck, Conv, ResNet50
from common.kernels import NUM_BUFFERS, head, max_pool
from common.model import Compiled, Parts
from common.planner import Plan, Planner, rotate
from common.target import vector_registers
from common.weights import fold_batch_norm, folded_pool

FLOAT32_BITS = 32
ROWS = 7  # output pixels per tile: divides every output width of ResNet-50 (112, 56, 28, 14, 7)


def channel_vectors(registers: int) -> int:
    """Vectors of output channels per tile row: the most, a power of 2, for which ROWS x vectors sums, one step's
    weight vectors and its broadcast input fit the registers: 2 of 32 (14 + 2 + 1), 1 of 16 (AVX2: 7 + 1 + 1)."""
    vectors = 1
    while (ROWS + 1) * 2 * vectors + 1 <= registers:
        vectors *= 2
    return vectors


# The vector registers of the CPU numba compiles for (common.target): 512 bits x 32 with AVX-512, 256 x 16
# with AVX2, 128 x 32 with ARM's NEON. The tile is chosen for them, once, when the stage is imported.
VECTOR_BITS, VECTOR_REGISTERS = vector_registers()
LANES = VECTOR_BITS // FLOAT32_BITS  # float32 lanes in one vector register
BLOCK = channel_vectors(VECTOR_REGISTERS) * LANES  # output channels per tile: 32, 8 or 8, dividing 64
TILE_CHOICE = f"tile {ROWS}x{BLOCK}, {VECTOR_BITS}-bit vectors"


@intrinsic
def wide_vectors(typingctx):
    """Ask LLVM for vectors as wide as the registers (VECTOR_BITS) in the function that calls this. On
    Intel's AVX-512 CPUs LLVM's default tuning ("prefer-256-bit") emits 256-bit ymm code, and 256-bit FMAs
    run on two ports at 8 lanes where 512-bit FMAs run on two ports at 16 lanes: half the peak. numba has
    no option for a function attribute, so this intrinsic adds it to the LLVM function it is compiled into."""

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        # llvmlite's attribute set only admits a fixed list of keywords; these are key="value" attributes.
        set.add(attributes, f'"prefer-vector-width"="{VECTOR_BITS}"')
        set.add(attributes, f'"min-legal-vector-width"="{VECTOR_BITS}"')
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def stack_floats(typingctx, count):
    """A float32 scratch array of a constant size on the stack (numba's np.empty is on the heap).
    LLVM knows that nothing else can point into a stack array, so once the loops over it are unrolled
    it keeps every element in a register: this is the tile of sums."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    size = count.literal_value

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=size)

    return types.CPointer(types.float32)(count), codegen


@contextlib.contextmanager
def tile_vectorizer():
    """Compile with LLVM's SLP vectorizer instead of its loop vectorizer. The tile's two innermost
    loops (ROWS pixels, BLOCK channels) have constant trip counts, so LLVM unrolls them first, leaving
    ROWS x BLOCK scalar sums; the SLP vectorizer packs each LANES neighbouring ones into a vector register.
    numba runs only the loop vectorizer, which then vectorizes the input-channel loop instead, with
    gathers of weights 32 floats apart: 70x slower (measured). Both settings are read when numba
    compiles, so they are changed only while the conv kernels compile."""
    saved = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = 1, 0
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = saved


# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import numba
import numpy as np
from numba import njit, prange

from stages.stage8_tiled.model import stack_floats, wide_vectors

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
'''

CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out):
    """x: HWC, zero border {padding}; weight: [group][kh][kw][ci][BLOCK]; out: HWC, border {out_pad} left alone."""
    wide_vectors()
    for group in prange({groups}):
        wide_vectors()
        for position in range({positions}):  # the tiles of one group: {out_size} rows of {column_tiles}
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
                        acc[r, c] += residual[ho, wo0 + r, group * {block} + c]
            if {relu}:
                for r in range({rows}):
                    for c in range({block}):
                        acc[r, c] = max(acc[r, c], np.float32(0.0))
            for r in range({rows}):
                for c in range({block}):
                    out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = acc[r, c]
'''


def fold(conv: Conv, tensors, eps):
    """A conv's weight with its batch norm folded in (common.weights.fold_batch_norm, stage 7's), and its bias; the
    weight laid out as the conv kernel reads it: [group][kh][kw][ci][BLOCK]."""
    folded, bias = fold_batch_norm(conv, tensors, eps)
    groups = conv.out_channels // BLOCK
    packed = folded.reshape(groups, BLOCK, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias.astype(np.float32)


def plan(arch: ResNet50, pool: dict) -> Plan:
    """Stage 7's plan, with the tiled conv kernel and zero-bordered inputs for the convs that pad."""
    p = Planner()
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
    stem = arch.stem
    image = p.bordered(stem.in_size, stem.in_channels, stem.padding)  # HWC, the stem's padding around it

    def conv_step(x, conv: Conv, out, residual, relu: bool, out_border=0):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu).
        x has a zero border of the conv's padding; out one of out_border. Without a residual, `out`
        stands in for the argument the kernel does not read."""
        weight, bias = pool[conv.name]
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = (f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
                f"_k{conv.kernel}s{conv.stride}{epilogue}")
        p.emit(CONV, name, (x, weight, bias, residual if add_residual else out, out), conv, tiled=True,
               in_channels=conv.in_channels, out_size=conv.out_size, groups=conv.out_channels // BLOCK,
               positions=conv.out_size * (conv.out_size // ROWS), column_tiles=conv.out_size // ROWS,
               kernel=conv.kernel, stride=conv.stride, padding=conv.padding, add_residual=add_residual, relu=relu,
               out_pad=out_border, rows=ROWS, block=BLOCK, sums=ROWS * BLOCK)
        return out

    def bottleneck(x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        p.comment(block.name)
        c1, c2, c3, down = block.conv1, block.conv2, block.conv3, block.downsample
        mid = p.bordered(c1.out_size, c1.out_channels, c2.padding)  # conv2 reads it with its padding
        conv_step(x, c1, mid, None, relu=True, out_border=c2.padding)
        out = conv_step(mid, c2, p.view(b2, c2.out_size, c2.out_channels), None, relu=True)
        # conv3 adds the shortcut as it stores its sums, so the shortcut comes first.
        shortcut = conv_step(x, down, p.view(b1, down.out_size, down.out_channels), None, relu=False) if down else x
        return conv_step(out, c3, p.view(b3, c3.out_size, c3.out_channels), shortcut, relu=True)

    x = conv_step(image, stem, p.view(buffers[0], stem.out_size, stem.out_channels), None, relu=True)
    x = rotate(arch, max_pool(p, arch, x, buffers[1]), buffers, bottleneck)
    inside = slice(stem.padding, stem.padding + stem.in_size)
    return p.plan(image[inside, inside], head(p, arch, x, pool["fc"]))


PARTS = Parts(Path(__file__), PRELUDE, partial(folded_pool, fold=fold), plan, choice=TILE_CHOICE)
Model = partial(Compiled, PARTS)
