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
rest (folded batch norm, fused output loop, generated source, buffers, pool) is stage 7's.
"""

import contextlib
import time
from pathlib import Path

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Bottleneck, Conv, resnet50
from common.codegen import load_module, write_modules
from common.paths import WEIGHTS_DIR
from common.prepared import prepared_pool
from common.target import vector_registers
from common.weights import load_manifest, load_tensor

NUM_BUFFERS = 4  # a bottleneck needs its input, two intermediates and its output (or shortcut) at once
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
    compiles, so they are changed only while the conv kernels compile, in Model()."""
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

from {module} import stack_floats, wide_vectors

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

MAX_POOL = '''

@njit(f"void({{HWC}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, out):
    out[:] = -np.inf
    for ho in range({out_size}):
        for wo in range({out_size}):
            for kh in range({kernel}):
                hi = ho * {stride} - {padding} + kh
                if hi < 0 or hi >= {in_size}:
                    continue
                for kw in range({kernel}):
                    wi = wo * {stride} - {padding} + kw
                    if wi < 0 or wi >= {in_size}:
                        continue
                    for c in range({channels}):
                        out[ho, wo, c] = max(out[ho, wo, c], x[hi, wi, c])
'''

GLOBAL_AVG_POOL = '''

@njit(f"void({{HWC}}, {{VECTOR}})", fastmath=True, cache=True)
def {name}(x, out):
    out[:] = 0.0
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[c] += x[h, w, c]
    for c in range({channels}):
        out[c] /= {positions}
'''

FULLY_CONNECTED = '''

@njit(f"void({{VECTOR}}, {{MATRIX}}, {{VECTOR}}, {{VECTOR}})", fastmath=True, cache=True)
def {name}(x, weight, bias, out):
    for o in range({out_features}):
        acc = np.float32(0.0)
        for i in range({in_features}):
            acc += weight[o, i] * x[i]
        out[o] = acc + bias[o]
'''



def fold(conv: Conv, tensors, eps):
    """OIHW conv weight and its batch norm -> (weight with the batch norm's scale in it, bias (out,)),
    computed in float64 and rounded once, so folding adds no error of its own. The weight is laid out
    as the conv kernel reads it: [group][kh][kw][ci][BLOCK]."""
    weight = tensors(f"{conv.name}.weight").astype(np.float64)
    gamma, beta, mean, var = (tensors(f"{conv.bn}.{part}").astype(np.float64)
                              for part in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + eps)
    folded = weight * scale[:, None, None, None]  # OIHW
    bias = (beta - mean * scale).astype(np.float32)
    groups = conv.out_channels // BLOCK
    packed = folded.reshape(groups, BLOCK, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias


def load_pool(manifest, weights_dir, arch):
    """Every conv as (folded weight, bias) by conv name; fc's weight and bias as exported."""
    def tensors(name):
        return load_tensor(name, manifest, weights_dir)

    pool = {conv.name: fold(conv, tensors, manifest["bn_eps"]) for conv in arch.convs}
    pool["fc"] = (tensors("fc.weight"), tensors("fc.bias"))
    return pool


class Model:
    """ResNet-50 built from common.architecture; weights folded and packed and buffers allocated when it
    is built, the forward pass generated as source, one specialized kernel per distinct layer shape."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        start = time.perf_counter()
        # Computed once, then mapped from the cache (common/prepared.py).
        self.pool = prepared_pool(lambda: load_pool(self.manifest, weights_dir, self.arch), self.manifest,
                                  weights_dir, Path(__file__))
        self.timings = {"load weights": time.perf_counter() - start}  # set-up costs in seconds
        self.choice = TILE_CHOICE  # shown on the command line's first line
        arch = self.arch
        largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
        self.buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
        self.bordered = {}  # HWC shape -> the buffer of that shape with a zero border, written once
        self.input = self.bordered_buffer(arch.stem.in_size, arch.stem.in_channels, arch.stem.padding)
        self.features = np.empty(arch.fc.in_features, np.float32)
        self.logits = np.empty(arch.fc.out_features, np.float32)
        self.kernel_sources = {}  # kernel name -> its source, one per distinct layer shape
        self.lines = []  # the forward pass, one call per step
        self.arrays = []  # what the calls pass: a[i] in the generated source is self.arrays[i]
        self.tile_signatures = {}  # tile kernel name -> its argument types, to compile it with tile_vectorizer
        start = time.perf_counter()
        self.plan()
        self.source_path = self.write_source()
        self.timings["codegen"] = time.perf_counter() - start
        # Compiled (the tile kernels with tile_vectorizer's settings), or loaded from the disk cache.
        self.kernels, how, seconds = load_module(self.source_path, self.tile_signatures, tile_vectorizer)
        self.timings[how] = seconds
        self.arrays = tuple(self.arrays)

    def view(self, buffer, size, channels):
        """An HWC view of the start of a flat buffer."""
        return buffer[: size * size * channels].reshape(size, size, channels)

    def emit(self, template, name, arrays, **constants):
        """One step: a call of the kernel `name`, generated from `template` with `constants` filled in."""
        self.kernel_sources.setdefault(name, template.format(name=name, **constants))
        indices = []
        for array in arrays:
            indices.append(len(self.arrays))
            self.arrays.append(array)
        self.lines.append(f"    {name}({', '.join(f'a[{i}]' for i in indices)})")

    def bordered_buffer(self, size, channels, border):
        """The HWC buffer for size x size x channels with a zero border around it, one per shape: the
        kernels write only its inside, so the border stays 0 and serves as the padding of the conv reading it."""
        shape = (size + 2 * border, size + 2 * border, channels)
        return self.bordered.setdefault(shape, np.zeros(shape, np.float32))

    def conv(self, x, conv: Conv, out, residual, relu: bool, out_border=0):
        """One conv with its batch norm folded in, then + residual (if not None), then ReLU (if relu).
        x has a zero border of the conv's padding; out one of out_border. Without a residual, `out`
        stands in for the argument the kernel does not read."""
        weight, bias = self.pool[conv.name]
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = (f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
                f"_k{conv.kernel}s{conv.stride}{epilogue}")
        arrays = (x, weight, bias, residual if add_residual else out, out)
        self.emit(CONV, name, arrays, in_channels=conv.in_channels, out_size=conv.out_size,
                  groups=conv.out_channels // BLOCK, positions=conv.out_size * (conv.out_size // ROWS),
                  column_tiles=conv.out_size // ROWS, kernel=conv.kernel, stride=conv.stride,
                  padding=conv.padding, add_residual=add_residual, relu=relu, out_pad=out_border, rows=ROWS,
                  block=BLOCK, sums=ROWS * BLOCK)
        self.tile_signatures[name] = tuple(numba.typeof(array) for array in arrays)
        return out

    def bottleneck(self, x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        self.lines.append(f"    # {block.name}")
        c1, c2, c3, down = block.conv1, block.conv2, block.conv3, block.downsample
        mid = self.bordered_buffer(c1.out_size, c1.out_channels, c2.padding)  # conv2 reads it with its padding
        self.conv(x, c1, mid, None, relu=True, out_border=c2.padding)
        out = self.conv(mid, c2, self.view(b2, c2.out_size, c2.out_channels), None, relu=True)
        # conv3 adds the shortcut as it stores its sums, so the shortcut comes first.
        shortcut = self.conv(x, down, self.view(b1, down.out_size, down.out_channels), None, relu=False) if down else x
        return self.conv(out, c3, self.view(b3, c3.out_size, c3.out_channels), shortcut, relu=True)

    def plan(self):
        arch, buffers = self.arch, self.buffers
        x = self.conv(self.input, arch.stem, self.view(buffers[0], arch.stem.out_size, arch.stem.out_channels),
                      None, relu=True)
        pool = arch.pool
        pooled = self.view(buffers[1], pool.out_size, pool.channels)
        self.emit(MAX_POOL, f"max_pool_{pool.in_size}x{pool.channels}", (x, pooled), in_size=pool.in_size,
                  out_size=pool.out_size, channels=pool.channels, kernel=pool.kernel, stride=pool.stride,
                  padding=pool.padding)
        x, current = pooled, 1
        for block in arch.blocks:
            others = [i for i in range(NUM_BUFFERS) if i != current]
            x = self.bottleneck(x, block, [buffers[i] for i in others])
            current = others[2]  # the block's output is in the third free buffer
        last = arch.blocks[-1].conv3
        self.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, self.features),
                  size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
        fc = arch.fc
        self.emit(FULLY_CONNECTED, f"fully_connected_{fc.in_features}_{fc.out_features}",
                  (self.features, *self.pool["fc"], self.logits),
                  in_features=fc.in_features, out_features=fc.out_features)

    def write_source(self) -> Path:
        """The generated forward module's path in the kernel cache (common.codegen.write_modules). Its name and each
        kernel module's hold a digest of their source, of this generator and of the machine, so that numba's cached
        machine code is only reused for the same three."""
        variant = self.manifest["variant"]
        name = f"{Path(__file__).parent.name}_resnet50_{variant.replace('.', '_')}"
        return write_modules(name, f"ResNet-50 forward pass for {variant} weights", PRELUDE.format(module=__name__),
                             self.kernel_sources, self.lines, generator=Path(__file__))

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        p = self.arch.stem.padding
        self.input[p:-p, p:-p] = image
        self.kernels.forward(self.arrays)
        return self.logits
