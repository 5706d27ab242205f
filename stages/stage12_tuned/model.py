"""Stage 12, tuned: each layer shape gets the register tile that ran fastest on this CPU, timed at the first run.

Stage 11 uses one tile everywhere, 7 pixels x 32 channels on AVX-512, chosen from the register count and from
measurements on one AMD machine. A tile of 14 x 32 fits the 32 registers too (28 sums, 2 weight vectors, 1 input)
and loads each weight vector once per 14 pixels instead of 7, but it leaves half as many tiles to share between the
threads and its pixels run further through the input; which wins depends on the layer and on the CPU's caches, so
it is measured, as ATLAS, FFTW and TVM do. At the first run on a CPU the stage plans its forward pass once per
candidate tile (`network`, on stand-in weights), compiles the kernels in parallel, times every kernel call inside
whole forward passes (a layer timed alone is misjudged) and keeps, per layer shape, the fastest (common/tuning.py).
The choices are kept in the kernel cache, keyed like the kernels by CPU and versions; later runs load them. The
candidates are the tiles whose sums, weight vectors and broadcast input fit the vector registers (`register_tiles`):
7x32 and 14x32 on AVX-512, 7x8 and 14x8 on AVX2. The tile order and the Winograd size were tuned too, and stage
11's rules always won (README), so they stay as they were.

Everything else is stage 11's: Winograd F(4x4) and F(2x2) where their tiles fit, the tile-threaded direct conv
kernel, folded batch norm, fused output loop, generated source, buffers and pool. The weights are packed for the
tile of their layer (`fold`); the prepared-weights cache is prepared again when a new tuning changes the tiles.
"""

import contextlib
import time
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Bottleneck, Conv, resnet50
from common.codegen import load_module, write_modules
from common.paths import WEIGHTS_DIR
from common.target import vector_registers
from common.tuning import prepared_for, tuned
from common.weights import load_manifest, load_tensor

NUM_BUFFERS = 4  # a bottleneck needs its input, two intermediates and its output (or shortcut) at once
FLOAT32_BITS = 32
ROWS = 7  # stage 11's output pixels per tile: divides every output width of ResNet-50 (112, 56, 28, 14, 7)
ROW_CHOICES = (ROWS, 2 * ROWS)  # the tuning's: 14 divides the output widths of layers 1-3 and of the stem


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
BLOCK = channel_vectors(VECTOR_REGISTERS) * LANES  # stage 11's output channels per tile: 32, 8 or 8, dividing 64


def register_tiles(registers: int, lanes: int) -> list[tuple[int, int]]:
    """(rows, channels) of the tiles of stage 11's channel_vectors whose rows x vectors sums, one step's weight vectors
    and its broadcast input fit the registers: 7x32 and 14x32 (14 x 2 + 2 + 1 = 31) of 32 registers of 16 lanes
    (AVX-512), 7x8 and 14x8 of 16 of 8 (AVX2). Tiles of fewer channel vectors (7x16, 14x16, 28x16 on AVX-512) were
    never the fastest when measured (README); none of 48 channels: 48 divides no channel count of ResNet-50."""
    vectors = channel_vectors(registers)
    return [(rows, vectors * lanes) for rows in ROW_CHOICES if rows * vectors + vectors + 1 <= registers]


TILES = register_tiles(VECTOR_REGISTERS, LANES)
TILE_CHOICE = f"tiles {', '.join(f'{r}x{b}' for r, b in TILES)} tried, {VECTOR_BITS}-bit vectors"


class Choice(NamedTuple):
    """What the tuning picks for one layer shape, kept as a list of these two in the choice file."""

    rows: int  # output pixels (or Winograd tiles) per register tile
    block: int  # output channels per register tile


# Winograd F(m x m, 3x3), m = 2 or 4: Y = A^T [(G g G^T) * (B^T d B)] A, an m x m block of outputs Y of the 3x3
# kernel g from an (m + 2) x (m + 2) input patch d. F(4x4) interpolates at 0, +-1, +-2 and infinity (Lavin and Gray).
WINOGRAD_TILES = (4, 2)  # the sizes tried, biggest first
WINOGRAD_B_T = {2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
                4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]}
WINOGRAD_G = {2: np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]),
              4: np.array([[1 / 4, 0.0, 0.0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                           [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0.0, 0.0, 1.0]])}
WINOGRAD_A_T = {2: [[1, 1, 1, 0], [0, 1, -1, -1]],
                4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]}


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
POINTS = "float32[:, :, ::1]"
'''

CONV = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out):
    """x: HWC, zero border {padding}; weight: [group][kh][kw][ci][BLOCK]; out: HWC, border {out_pad} left alone."""
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
                    acc[r, c] += residual[ho, wo0 + r, group * {block} + c]
        if {relu}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range({rows}):
            for c in range({block}):
                out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = acc[r, c]
'''

WINOGRAD_INPUT = '''

@njit(f"void({{HWC}}, {{POINTS}})", fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, v):
    """Winograd F({size}x{size}, 3x3), step 1: every {patch}x{patch} input patch d (patches {size} apart, overlapping
    by 2) of x, HWC with a zero border of 1, becomes B^T d B, stored as v[k, tile, channel] for its {points} points k.
    The rows of B^T are the sums below. The innermost loops run over channels, contiguous in x and in v,
    so the loop vectorizer makes them full-width."""
    wide_vectors()
    for tile in prange({tiles}):
        wide_vectors()
        h0 = (tile // {side}) * {size}
        w0 = (tile % {side}) * {size}
        for j in range({patch}):  # B^T d, one column j of the patch at a time, into v[{patch}i + j]
            for c in range({channels}):
{column}
        for k in range(0, {points}, {patch}):  # (B^T d) B, one row of {patch} points at a time, in place
            for c in range({channels}):
{row}
'''

WINOGRAD_PRODUCTS = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(v, u, m):
    """Step 2: for each of the {points} points k, m[k] = v[k] @ u[k] over the input channels: {points} matrix
    products (tiles x in) @ (in x out), with the conv kernel's register tile ({rows} tiles x {block} channels).
    v: [k][tile][ci], u: [k][group][ci][BLOCK], m: [k][tile][co]."""
    wide_vectors()
    for job in prange({points} * {groups} * {tile_blocks}):
        wide_vectors()
        k = job // ({groups} * {tile_blocks})
        group = (job // {tile_blocks}) % {groups}
        t0 = (job % {tile_blocks}) * {rows}
        acc = numba.carray(stack_floats({sums}), ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] = 0.0
        for ci in range({in_channels}):
            for r in range({rows}):
                xv = v[k, t0 + r, ci]
                for c in range({block}):
                    acc[r, c] += xv * u[k, group, ci, c]
        for r in range({rows}):
            for c in range({block}):
                m[k, t0 + r, group * {block} + c] = acc[r, c]
'''

WINOGRAD_OUTPUT = '''

@njit(f"void({{POINTS}}, {{VECTOR}}, {{HWC}})", fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(m, bias, out):
    """Step 3: each tile's {patch}x{patch} products become its {size}x{size} outputs A^T m A, + bias, ReLU, into
    out (HWC). The rows of A^T are the sums below. Channels innermost, as in step 1."""
    wide_vectors()
    for tile in prange({tiles}):
        wide_vectors()
        h0 = (tile // {side}) * {size}
        w0 = (tile % {side}) * {size}
        for j in range({patch}):  # A^T m, one column j at a time, in place into the first {size} rows of m
            for c in range({channels}):
{column}
        for i in range({size}):  # (A^T m) A, one output row at a time
            for c in range({channels}):
{row}
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



def winograd_tile(conv: Conv) -> int | None:
    """The biggest m of WINOGRAD_TILES for which a 3x3 stride-1 conv's output splits into m x m tiles, ROWS
    tiles at a time: 4 for layers 1-2, 2 for layer 3, None for the 7x7 of layer4 (and every other conv).
    Every 3x3 conv of ResNet-50 is a bottleneck's conv2: ReLU after it, no residual add, no border on its
    output, which is what the Winograd kernels do."""
    if conv.kernel != 3 or conv.stride != 1:
        return None
    return next((m for m in WINOGRAD_TILES if conv.out_size % m == 0 and (conv.out_size // m) ** 2 % ROWS == 0), None)


def shape_name(conv: Conv) -> str:
    return f"{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}_k{conv.kernel}s{conv.stride}"


def candidates(conv: Conv) -> list[Choice]:
    """The tiles the tuning times for a conv's shape, stage 11's first: those whose rows split what the tile's rows
    run over (a row of output pixels, or the Winograd tiles). The Winograd size and the tile order stay stage 11's:
    tuned too, they never beat its choice (README)."""
    m = winograd_tile(conv)
    rows_over = (conv.out_size // m) ** 2 if m else conv.out_size
    return [Choice(rows, block) for rows, block in TILES if rows_over % rows == 0 and conv.out_channels % block == 0]


def label(choice: Choice) -> str:
    return f"{choice.rows}x{choice.block}"


def combination(row, names) -> str:
    """One row of a transform matrix applied to named values, as source: ([4, 0, -5], "d") -> "4 d0 - 5 d2",
    written `np.float32(4) * d0 - np.float32(5) * d2` so that numba keeps it in float32."""
    terms = []
    for index, coefficient in enumerate(row):
        if coefficient:
            factor = "" if abs(coefficient) == 1 else f"np.float32({abs(coefficient)}) * "
            terms.append(("-" if coefficient < 0 else "+") + f" {factor}{names}{index}")
    text = " ".join(terms)
    return text[2:] if text.startswith("+") else "-" + text[2:]


def transform_source(m: int) -> dict[str, str]:
    """The statements of the input and output transforms of F(m x m, 3x3), to fill WINOGRAD_INPUT and
    WINOGRAD_OUTPUT: B^T and A^T applied along the patch's columns, then along its rows."""
    n, b_t, a_t = m + 2, WINOGRAD_B_T[m], WINOGRAD_A_T[m]
    indent = " " * 16
    column = [f"{indent}d{r} = x[h0 + {r}, w0 + j, c]" for r in range(n)]
    column += [f"{indent}v[{n * i} + j, tile, c] = {combination(row, 'd')}" for i, row in enumerate(b_t)]
    row = [f"{indent}e{r} = v[k + {r}, tile, c]" for r in range(n)]
    row += [f"{indent}v[k + {i}, tile, c] = {combination(b_row, 'e')}" for i, b_row in enumerate(b_t)]
    out_column = [f"{indent}p{r} = m[{n * r} + j, tile, c]" for r in range(n)]
    out_column += [f"{indent}m[{n * i} + j, tile, c] = {combination(a_row, 'p')}" for i, a_row in enumerate(a_t)]
    out_row = [f"{indent}e{r} = m[{n} * i + {r}, tile, c]" for r in range(n)]
    out_row += [f"{indent}out[h0 + i, w0 + {j}, c] = max({combination(a_row, 'e')} + bias[c], np.float32(0.0))"
                for j, a_row in enumerate(a_t)]
    return {"input_column": "\n".join(column), "input_row": "\n".join(row),
            "output_column": "\n".join(out_column), "output_row": "\n".join(out_row)}


def fold(conv: Conv, tensors, eps, choice: Choice):
    """OIHW conv weight and its batch norm -> (weight with the batch norm's scale in it, bias (out,)),
    computed in float64 and rounded once, so folding adds no error of its own. The weight is laid out
    as the choice's conv kernel reads it: [group][kh][kw][ci][block], or [k][group][ci][block] in Winograd form."""
    weight = tensors(f"{conv.name}.weight").astype(np.float64)
    gamma, beta, mean, var = (tensors(f"{conv.bn}.{part}").astype(np.float64)
                              for part in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + eps)
    folded = weight * scale[:, None, None, None]  # OIHW
    bias = (beta - mean * scale).astype(np.float32)
    groups, block, m = conv.out_channels // choice.block, choice.block, winograd_tile(conv)
    if m:
        g = WINOGRAD_G[m]
        transformed = np.einsum("ai,ocij,bj->ocab", g, folded, g)  # (out, in, m + 2, m + 2)
        packed = transformed.reshape(groups, block, conv.in_channels, (m + 2) ** 2).transpose(3, 0, 2, 1)
    else:
        packed = folded.reshape(groups, block, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias


def load_pool(manifest, weights_dir, arch, choices):
    """Every conv as (folded weight, bias) by conv name, packed for its shape's choice; fc's weight and bias as
    exported."""
    def tensors(name):
        return load_tensor(name, manifest, weights_dir)

    pool = {conv.name: fold(conv, tensors, manifest["bn_eps"], choices[shape_name(conv)]) for conv in arch.convs}
    pool["fc"] = (tensors("fc.weight"), tensors("fc.bias"))
    return pool


class Model:
    """ResNet-50 built from common.architecture; weights folded and packed and buffers allocated when it
    is built, the forward pass generated as source, one specialized kernel per distinct layer shape."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        arch = self.arch
        largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
        self.buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
        self.bordered = {}  # HWC shape -> the buffer of that shape with a zero border, written once
        self.input = self.bordered_buffer(arch.stem.in_size, arch.stem.in_channels, arch.stem.padding)
        self.scratch = {}  # the Winograd steps' buffers, V [k][tile][ci] and M [k][tile][co], by layer shape
        self.features = np.empty(arch.fc.in_features, np.float32)
        self.logits = np.empty(arch.fc.out_features, np.float32)
        start = time.perf_counter()
        choices, tuning = self.tune()  # its trial forward passes use the buffers above, as the real one does
        self.choices = {shape: Choice(*choice) for shape, choice in choices.items()}
        self.timings = {"tune": time.perf_counter() - start}  # set-up costs in seconds
        start = time.perf_counter()
        # Computed once, then mapped from the cache (common/prepared.py), again when the stage is tuned again.
        self.pool = prepared_for(choices, lambda: load_pool(self.manifest, weights_dir, self.arch, self.choices),
                                 self.manifest, weights_dir, Path(__file__))
        self.timings["load weights"] = time.perf_counter() - start
        self.choice = f"{tuning}, {VECTOR_BITS}-bit vectors"  # shown on the command line's first line
        self.kernel_sources = {}  # kernel name -> its source, one per distinct layer shape
        self.lines = []  # the forward pass, one call per step
        self.arrays = []  # what the calls pass: a[i] in the generated source is self.arrays[i]
        self.calls = []  # the same steps as (kernel name, arrays), for the tuning to run them
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
        self.calls.append((name, tuple(arrays)))
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
        choice = self.choices[shape_name(conv)]
        if winograd_tile(conv):
            return self.winograd(x, conv, out, winograd_tile(conv), choice)
        add_residual = residual is not None
        epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
        name = f"conv_{shape_name(conv)}{epilogue}_{label(choice)}"
        arrays = (x, weight, bias, residual if add_residual else out, out)
        self.emit(CONV, name, arrays, in_channels=conv.in_channels, out_size=conv.out_size,
                  groups=conv.out_channels // choice.block, positions=conv.out_size * (conv.out_size // choice.rows),
                  column_tiles=conv.out_size // choice.rows, kernel=conv.kernel, stride=conv.stride,
                  padding=conv.padding, add_residual=add_residual, relu=relu, out_pad=out_border, rows=choice.rows,
                  block=choice.block, sums=choice.rows * choice.block,
                  pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
        self.tile_signatures[name] = tuple(numba.typeof(array) for array in arrays)
        return out

    def winograd(self, x, conv: Conv, out, tile: int, choice: Choice):
        """A 3x3 conv (batch norm folded in, then ReLU) as the three steps of Winograd F(tile x tile, 3x3),
        with two scratch buffers of (tile + 2)^2 values per tile, one pair per layer shape."""
        u, bias = self.pool[conv.name]
        rows, block = choice
        side, points = conv.out_size // tile, (tile + 2) ** 2
        tiles = side * side
        key = f"{shape_name(conv)}_f{tile}"  # the shape's name in every kernel's: the tuning times them by shape
        v = self.scratch.setdefault(f"v{key}", np.empty((points, tiles, conv.in_channels), np.float32))
        m = self.scratch.setdefault(f"m{key}", np.empty((points, tiles, conv.out_channels), np.float32))
        shape = dict(size=tile, patch=tile + 2, points=points, tiles=tiles, side=side)
        code = transform_source(tile)
        self.emit(WINOGRAD_INPUT, f"winograd_input_{key}", (x, v), channels=conv.in_channels,
                  column=code["input_column"], row=code["input_row"], **shape)
        name = f"winograd_products_{key}_{label(choice)}"
        self.emit(WINOGRAD_PRODUCTS, name, (v, u, m), groups=conv.out_channels // block, tile_blocks=tiles // rows,
                  in_channels=conv.in_channels, rows=rows, block=block, sums=rows * block, **shape)
        self.tile_signatures[name] = tuple(numba.typeof(array) for array in (v, u, m))
        self.emit(WINOGRAD_OUTPUT, f"winograd_output_{key}", (m, bias, out), channels=conv.out_channels,
                  column=code["output_column"], row=code["output_row"], **shape)
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

    def write_source(self, purpose="resnet50") -> Path:
        """The generated forward module's path in the kernel cache (common.codegen.write_modules). Its name and each
        kernel module's hold a digest of their source, of this generator and of the machine, so that numba's cached
        machine code is only reused for the same three."""
        variant = self.manifest["variant"]
        name = f"{Path(__file__).parent.name}_{purpose}_{variant.replace('.', '_')}"
        return write_modules(name, f"ResNet-50 forward pass for {variant} weights", PRELUDE.format(module=__name__),
                             self.kernel_sources, self.lines, generator=Path(__file__))

    def tune(self):
        """(choice by layer shape, what the header line says): from the choice file, or tuned now: the forward pass
        planned with each round's candidates (network), compiled and timed call by call (common/tuning.py)."""
        self.kernel_sources, self.tile_signatures, self.lines, self.arrays, self.calls = {}, {}, [], [], []
        self.stand_ins = {}  # (conv name, packed shape) -> stand-in (weight, bias), shared by the rounds
        first = {}
        for conv in self.arch.convs:
            first.setdefault(shape_name(conv), conv)
        options = {shape: [list(c) for c in candidates(conv)] for shape, conv in first.items()}
        result = tuned(Path(__file__), options, self.network, self.compile_trials, lambda c: label(Choice(*c)))
        del self.stand_ins  # 100 MB or more, not needed once the choices are made
        return result

    def network(self, choices: dict[str, list]):
        """The forward pass planned with `choices`, on stand-in weights: its calls."""
        self.choices = {shape: Choice(*choice) for shape, choice in choices.items()}
        self.pool = {conv.name: self.stand_in(conv, self.choices[shape_name(conv)]) for conv in self.arch.convs}
        fc = self.arch.fc
        self.pool["fc"] = self.stand_ins.setdefault(fc.name, (np.ones((fc.out_features, fc.in_features), np.float32),
                                                             np.ones(fc.out_features, np.float32)))
        self.calls = []
        self.plan()
        return self.calls

    def stand_in(self, conv: Conv, choice: Choice):
        """(weight, bias) of the shape fold packs them in for `choice`, each conv its own (as its real weights, they
        come from memory, not from the cache), written (pages never written all read one page of zeros), each
        weight 1 / its sums' length, so that the activations keep their size through the network (an overflow to
        infinity could change the timing)."""
        m, k, groups = winograd_tile(conv), conv.kernel, conv.out_channels // choice.block
        shape = ((m + 2) ** 2, groups, conv.in_channels, choice.block) if m else \
            (groups, k, k, conv.in_channels, choice.block)
        if (conv.name, shape) not in self.stand_ins:
            weight = np.full(shape, 1 / (conv.in_channels * k * k), np.float32)
            self.stand_ins[conv.name, shape] = (weight, np.zeros(conv.out_channels, np.float32))
        return self.stand_ins[conv.name, shape]

    def compile_trials(self):
        """Every candidate's kernels, compiled (in one process per core) or loaded from the kernel cache."""
        return load_module(self.write_source("tuning"), self.tile_signatures, tile_vectorizer)[0]

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        p = self.arch.stem.padding
        self.input[p:-p, p:-p] = image
        self.kernels.forward(self.arrays)
        return self.logits
