"""Stage 8, Winograd: stage 7's register-tiled convolution kernels that keep their sums in vector
registers, and Winograd's algorithm for the 3x3 convolutions of layers 1-3.

Stage 6's conv computes one output value at a time: a dot product over the kernel window, with a load
of a weight and of an input for every multiply-add and a sum across the vector's lanes at the end. A
core can do two 16-lane fused multiply-adds (FMA) per cycle but only two vector loads, so such a loop
waits on loads. The kernels here compute a *tile* of outputs at once: ROWS output pixels of one row by
BLOCK output channels (7 x 32 sums = 14 zmm registers). For every input channel of every kernel tap
they load BLOCK/16 packed weight vectors and one input value per pixel (broadcast to all lanes) and do
ROWS x BLOCK/16 FMAs into the sums, which stay in registers until the tile is done: 9 loads feed 14
FMAs. That is the micro-kernel every fast CPU library is built around.

What makes it possible, and fast:
- weights packed at load time as [group][kh][kw][ci][BLOCK] (one group = BLOCK output channels), so
  the BLOCK weights a tile needs for one input channel are one contiguous run: whole vector loads;
- batch norm folded into the conv weights and a bias at load time; bias, ReLU and the residual add
  done in the tile's output loop, while the sums are still in registers;
- activations HWC (channel innermost); the inputs of 3x3 convs and of the max pool live in buffers
  with a zero border, written once, so the kernels have no padding branches;
- the work split across threads by output tiles (channel group x row x column block), not by output
  channel alone, so both cores get equal work even on the 7x7 layers; each thread's tiles share its
  weights where weights are the larger data (layers 3-4), its part of the image where the
  activations are (layers 1-2);
- two compiler settings (see `wide_vectors` and `tile_vectorizer`): LLVM's tuning for this CPU prefers
  256-bit vectors, which halves the FMA rate, and numba runs LLVM's loop vectorizer but not its SLP
  vectorizer, the pass that turns the tile's unrolled sums into vector registers;
- Winograd F(2x2, 3x3) for the 3x3 convs of layers 1-3: 16 multiplies per input channel for each 2x2
  block of outputs instead of 36, the rest turned into additions (`conv_winograd`).
Buffers are allocated once and weights loaded once, as in stages 3 and 4.
"""

import contextlib
import time

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from common.architecture import Bottleneck, Conv, resnet50
from common.paths import WEIGHTS_DIR
from common.weights import load_manifest, load_tensor

LANES = 16  # float32 lanes in a 512-bit zmm register
ROWS = 7  # output pixels per tile: divides every output width of ResNet-50 (112, 56, 28, 14, 7)
BLOCK = 2 * LANES  # output channels per tile: two zmm registers per pixel
VECTOR_BITS = "512"


@intrinsic
def wide_vectors(typingctx):
    """Ask LLVM for 512-bit vectors in the function that calls this. On Intel server CPUs LLVM's
    default tuning ("prefer-256-bit") emits 256-bit ymm code, and 256-bit FMAs run on two ports at
    8 lanes where 512-bit FMAs run on two ports at 16 lanes: half the peak. numba has no option for
    a function attribute, so this intrinsic adds it to the LLVM function it is compiled into."""

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
    ROWS x BLOCK scalar sums; the SLP vectorizer packs each 16 neighbouring ones into a zmm register.
    numba runs only the loop vectorizer, which then vectorizes the input-channel loop instead, with
    gathers of weights 32 floats apart: 70x slower (measured). Both settings are read when numba
    compiles, so they are changed only while the tile kernels compile, in Model(). (No cache=True: numba
    cannot show the IR of cached code, which tests/test_prealloc.py reads, and the cache does not know
    these settings.)"""
    saved = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = 1, 0
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = saved


TILE = ROWS * BLOCK
WINOGRAD_OUT, WINOGRAD_IN = 2, 4  # F(2x2, 3x3): 2x2 outputs from each 4x4 input patch
WINOGRAD_POINTS = WINOGRAD_IN * WINOGRAD_IN
# G: the 3x3 kernel g -> its 4x4 Winograd form G g G^T, computed once at load time.
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


@njit(fastmath=True, parallel=True, boundscheck=False)
def conv_tiles(x, weight, bias, stride, out, out_pad, residual, add_residual, relu, pixels_first):
    """One convolution with batch norm folded in, then optionally + residual, then optionally ReLU.
    x: HWC, already zero-padded by the conv's padding. weight: [group][kh][kw][ci][BLOCK].
    pixels_first: the order of the tiles across threads (see below).
    out: HWC with a zero border of out_pad (the next conv's padding); residual: HWC like out's inside."""
    wide_vectors()
    groups, kernel, _, in_channels, _ = weight.shape
    out_size = out.shape[0] - 2 * out_pad
    column_tiles = out_size // ROWS
    tiles_per_group = out_size * column_tiles
    # prange gives each thread one contiguous range of tile numbers. Numbered group-major, a thread's
    # tiles share one group's weights; numbered pixel-major, a thread keeps to its part of the image,
    # the part it wrote in the layer before, still in its own core's L2 cache.
    for tile in prange(groups * tiles_per_group):
        wide_vectors()
        if pixels_first:
            group = tile % groups
            position = tile // groups
        else:
            group = tile // tiles_per_group
            position = tile % tiles_per_group
        ho = position // column_tiles
        wo0 = (position % column_tiles) * ROWS
        acc = numba.carray(stack_floats(TILE), (ROWS, BLOCK))
        for r in range(ROWS):
            for c in range(BLOCK):
                acc[r, c] = bias[group * BLOCK + c]
        for kh in range(kernel):
            hi = ho * stride + kh
            for kw in range(kernel):
                for ci in range(in_channels):
                    for r in range(ROWS):
                        xv = x[hi, (wo0 + r) * stride + kw, ci]
                        for c in range(BLOCK):
                            acc[r, c] += xv * weight[group, kh, kw, ci, c]
        # The flags are tested outside the tile loops: a branch inside them would stop the vectorizer.
        if add_residual:
            for r in range(ROWS):
                for c in range(BLOCK):
                    acc[r, c] += residual[ho, wo0 + r, group * BLOCK + c]
        if relu:
            for r in range(ROWS):
                for c in range(BLOCK):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range(ROWS):
            for c in range(BLOCK):
                out[out_pad + ho, out_pad + wo0 + r, group * BLOCK + c] = acc[r, c]


@njit(fastmath=True, parallel=True, boundscheck=False)
def winograd_input(x, v):
    """Winograd F(2x2, 3x3), step 1: every 4x4 input patch d (patches 2 apart, overlapping by 2) of x,
    HWC with a zero border of 1, becomes B^T d B, stored as v[k, tile, channel] for its 16 points k.
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: additions only. The innermost
    loops run over channels, contiguous in x and in v, so the loop vectorizer makes them 16 lanes wide."""
    wide_vectors()
    side = (x.shape[0] - 2) // WINOGRAD_OUT
    channels = x.shape[2]
    for tile in prange(side * side):
        wide_vectors()
        h0 = (tile // side) * WINOGRAD_OUT
        w0 = (tile % side) * WINOGRAD_OUT
        for j in range(WINOGRAD_IN):  # B^T d, one column j of the patch at a time, into v[4i + j]
            for c in range(channels):
                d0, d1 = x[h0, w0 + j, c], x[h0 + 1, w0 + j, c]
                d2, d3 = x[h0 + 2, w0 + j, c], x[h0 + 3, w0 + j, c]
                v[j, tile, c] = d0 - d2
                v[4 + j, tile, c] = d1 + d2
                v[8 + j, tile, c] = d2 - d1
                v[12 + j, tile, c] = d1 - d3
        for i in range(WINOGRAD_IN):  # (B^T d) B, one row i at a time, in place
            k = WINOGRAD_IN * i
            for c in range(channels):
                e0, e1, e2, e3 = v[k, tile, c], v[k + 1, tile, c], v[k + 2, tile, c], v[k + 3, tile, c]
                v[k, tile, c] = e0 - e2
                v[k + 1, tile, c] = e1 + e2
                v[k + 2, tile, c] = e2 - e1
                v[k + 3, tile, c] = e1 - e3


@njit(fastmath=True, parallel=True, boundscheck=False)
def winograd_products(v, u, m):
    """Step 2: for each of the 16 points k, m[k] = v[k] @ u[k] over the input channels: 16 matrix
    products (tiles x in) @ (in x out), with conv_tiles' register tile (ROWS tiles x BLOCK channels).
    v: (16, tiles, in), u: (16, group, in, BLOCK), m: (16, tiles, out)."""
    wide_vectors()
    points, groups, in_channels, _ = u.shape
    tile_blocks = v.shape[1] // ROWS
    per_point = groups * tile_blocks
    for job in prange(points * per_point):
        wide_vectors()
        k = job // per_point
        group = (job % per_point) // tile_blocks
        t0 = (job % tile_blocks) * ROWS
        acc = numba.carray(stack_floats(TILE), (ROWS, BLOCK))
        for r in range(ROWS):
            for c in range(BLOCK):
                acc[r, c] = 0.0
        for ci in range(in_channels):
            for r in range(ROWS):
                xv = v[k, t0 + r, ci]
                for c in range(BLOCK):
                    acc[r, c] += xv * u[k, group, ci, c]
        for r in range(ROWS):
            for c in range(BLOCK):
                m[k, t0 + r, group * BLOCK + c] = acc[r, c]


@njit(fastmath=True, parallel=True, boundscheck=False)
def winograd_output(m, bias, out):
    """Step 3: each tile's 4x4 products become its 2x2 outputs A^T m A, + bias, ReLU, into out (HWC).
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. Channels innermost, as in step 1."""
    wide_vectors()
    side = out.shape[0] // WINOGRAD_OUT
    channels = out.shape[2]
    for tile in prange(side * side):
        wide_vectors()
        h0 = (tile // side) * WINOGRAD_OUT
        w0 = (tile % side) * WINOGRAD_OUT
        for j in range(WINOGRAD_IN):  # A^T m, one column j at a time, in place into rows 0 and 1 of m
            for c in range(channels):
                m0, m1, m2, m3 = m[j, tile, c], m[4 + j, tile, c], m[8 + j, tile, c], m[12 + j, tile, c]
                m[j, tile, c] = m0 + m1 + m2
                m[4 + j, tile, c] = m1 - m2 - m3
        for i in range(WINOGRAD_OUT):  # (A^T m) A, one output row at a time
            k = WINOGRAD_IN * i
            for c in range(channels):
                e0, e1, e2, e3 = m[k, tile, c], m[k + 1, tile, c], m[k + 2, tile, c], m[k + 3, tile, c]
                out[h0 + i, w0, c] = max(e0 + e1 + e2 + bias[c], np.float32(0.0))
                out[h0 + i, w0 + 1, c] = max(e1 - e2 - e3 + bias[c], np.float32(0.0))


@njit
def conv_winograd(x, v, u, m, bias, out):
    """A 3x3 stride-1 convolution with batch norm folded in, then ReLU, by Winograd F(2x2, 3x3): 16
    multiply-adds per input channel for 4 outputs instead of 36. x: HWC with a zero border of 1."""
    winograd_input(x, v)
    winograd_products(v, u, m)
    winograd_output(m, bias, out)


@njit(fastmath=True, parallel=True, boundscheck=False)
def max_pool(x, kernel, stride, out):
    """Max over kernel x kernel windows of x, HWC with a zero border. The input is a ReLU output
    (>= 0) and every window holds at least one real value, so the zero border never wins: it acts
    as the minus-infinity padding of the definition without a branch."""
    wide_vectors()
    out_size, _, channels = out.shape
    for ho in prange(out_size):
        wide_vectors()
        for wo in range(out_size):
            for c in range(channels):
                out[ho, wo, c] = x[ho * stride, wo * stride, c]
            for kh in range(kernel):
                for kw in range(kernel):
                    for c in range(channels):
                        out[ho, wo, c] = max(out[ho, wo, c], x[ho * stride + kh, wo * stride + kw, c])


@njit(fastmath=True, parallel=True, boundscheck=False)
def average_pool_fully_connected(x, weight, bias, features, logits):
    """Global average pool of HWC x into features, then logits = weight @ features + bias."""
    wide_vectors()
    height, width, channels = x.shape
    features[:] = 0.0
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                features[c] += x[h, w, c]
    features *= np.float32(1.0 / (height * width))
    for o in prange(weight.shape[0]):
        wide_vectors()
        acc = np.float32(0.0)
        for i in range(channels):
            acc += weight[o, i] * features[i]
        logits[o] = acc + bias[o]


def uses_winograd(conv: Conv) -> bool:
    """3x3 stride-1 convs whose output splits into 2x2 tiles, ROWS tiles at a time: layers 1-3, not the
    7x7 of layer4. Every 3x3 conv of ResNet-50 is a bottleneck's conv2: ReLU after it, no residual add,
    no border on its output, which is what conv_winograd does."""
    tiles = (conv.out_size // WINOGRAD_OUT) ** 2
    return (conv.kernel == 3 and conv.stride == 1 and conv.out_size % WINOGRAD_OUT == 0
            and tiles % ROWS == 0)


def fold_and_pack(conv: Conv, tensors, eps):
    """OIHW conv weight and its batch norm -> (packed weight, bias (out,)). The weight is packed as
    [group][kh][kw][ci][BLOCK] for conv_tiles, or in Winograd form as [k][group][ci][BLOCK].
    bn(conv(x)) = scale * (conv(x) - mean) + beta with scale = gamma / sqrt(var + eps)
               = conv_with(weight * scale)(x) + (beta - mean * scale)."""
    weight = tensors(f"{conv.name}.weight").astype(np.float64)
    gamma, beta, mean, var = (tensors(f"{conv.bn}.{part}").astype(np.float64)
                              for part in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + eps)
    folded = weight * scale[:, None, None, None]  # OIHW
    bias = (beta - mean * scale).astype(np.float32)
    groups = conv.out_channels // BLOCK
    if uses_winograd(conv):
        transformed = np.einsum("ai,ocij,bj->ocab", WINOGRAD_G, folded, WINOGRAD_G)  # (out, in, 4, 4)
        packed = transformed.reshape(groups, BLOCK, conv.in_channels, WINOGRAD_POINTS).transpose(3, 0, 2, 1)
    else:
        packed = folded.reshape(groups, BLOCK, conv.in_channels, conv.kernel, conv.kernel).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(packed, np.float32), bias


def padded_hwc(size, channels, pad):
    """A zero HWC buffer with a border of `pad`: kernels write only the inside, the border stays 0."""
    return np.zeros((size + 2 * pad, size + 2 * pad, channels), np.float32)


class Model:
    """ResNet-50 built from common.architecture with register-tiled, multi-threaded kernels; weights
    folded and packed, buffers allocated, kernels compiled when it is built."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = arch = resnet50(self.manifest["variant"])
        for conv in arch.convs:
            if conv.out_channels % BLOCK or conv.out_size % ROWS:
                raise ValueError(f"{conv.name}: {conv.out_channels} channels, width {conv.out_size}: "
                                 f"the tiles need multiples of {BLOCK} channels and {ROWS} pixels")
        start = time.perf_counter()
        self.pool = self.load_pool(weights_dir)
        self.timings = {"load weights": time.perf_counter() - start}  # set-up costs in seconds
        self.plan()
        start = time.perf_counter()
        # The tile kernels compile with the SLP vectorizer, the rest (on the first forward) with numba's
        # defaults; conv_winograd then links the winograd_products compiled here.
        tiled = set()
        for kernel, args in self.steps:
            if kernel is conv_tiles:
                tiled.add((conv_tiles, tuple(numba.typeof(arg) for arg in args)))
            elif kernel is conv_winograd:
                _, v, u, m, _, _ = args
                tiled.add((winograd_products, tuple(numba.typeof(arg) for arg in (v, u, m))))
        with tile_vectorizer():
            for kernel, signature in tiled:
                kernel.compile(signature)
        self.forward(np.zeros((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32))
        self.timings["compile"] = time.perf_counter() - start

    def load_pool(self, weights_dir):
        """Every conv as (packed weight, bias) with its batch norm folded in, by conv name; fc as exported."""
        manifest = self.manifest

        def tensors(name):
            return load_tensor(name, manifest, weights_dir)

        pool = {conv.name: fold_and_pack(conv, tensors, manifest["bn_eps"]) for conv in self.arch.convs}
        pool["fc"] = (tensors("fc.weight"), tensors("fc.bias"))
        return pool

    def plan(self):
        """Allocate every activation buffer once; self.steps lists the kernel calls, (kernel, args), in order."""
        arch = self.arch
        stem, pool = arch.stem, arch.pool
        self.input = padded_hwc(stem.in_size, stem.in_channels, stem.padding)
        # The stem's output is only read by the max pool, whose padding the zero border provides.
        stem_out = padded_hwc(stem.out_size, stem.out_channels, pool.padding)
        pooled = padded_hwc(pool.out_size, pool.channels, 0)
        self.steps = [self.conv_step(stem, self.input, stem_out, pool.padding, None, True),
                      (max_pool, (stem_out, pool.kernel, pool.stride, pooled))]
        x = pooled
        for block in arch.blocks:
            x = self.plan_bottleneck(x, block)
        self.logits = np.empty(arch.fc.out_features, np.float32)
        features = np.empty(arch.fc.in_features, np.float32)
        self.steps.append((average_pool_fully_connected, (x, *self.pool["fc"], features, self.logits)))

    def plan_bottleneck(self, x, block: Bottleneck):
        c1, c2, c3 = block.conv1, block.conv2, block.conv3
        mid1 = padded_hwc(c1.out_size, c1.out_channels, c2.padding)  # conv2 (3x3) reads it padded
        mid2 = padded_hwc(c2.out_size, c2.out_channels, 0)
        out = padded_hwc(c3.out_size, c3.out_channels, 0)
        shortcut = x
        if block.downsample:
            shortcut = padded_hwc(block.downsample.out_size, block.downsample.out_channels, 0)
            self.steps.append(self.conv_step(block.downsample, x, shortcut, 0, None, False))
        self.steps.append(self.conv_step(c1, x, mid1, c2.padding, None, True))
        self.steps.append(self.conv_step(c2, mid1, mid2, 0, None, True))
        self.steps.append(self.conv_step(c3, mid2, out, 0, shortcut, True))
        return out

    def conv_step(self, conv: Conv, x, out, out_pad, residual, relu):
        """(kernel, args) for one conv; without a residual, `out` stands in for the unused array."""
        weight, bias = self.pool[conv.name]
        if uses_winograd(conv):
            tiles = (conv.out_size // WINOGRAD_OUT) ** 2
            v = np.empty((WINOGRAD_POINTS, tiles, conv.in_channels), np.float32)  # [k][tile][ci]
            m = np.empty((WINOGRAD_POINTS, tiles, conv.out_channels), np.float32)  # [k][tile][co]
            return conv_winograd, (x, v, weight, m, bias, out)
        add_residual = residual is not None
        pixels_first = x.nbytes > weight.nbytes  # keep the bigger of the two in each core's cache
        return conv_tiles, (x, weight, bias, conv.stride, out, out_pad, residual if add_residual else out,
                            add_residual, relu, pixels_first)

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        stem = self.arch.stem
        p = stem.padding
        self.input[p:p + stem.in_size, p:p + stem.in_size] = image
        for kernel, args in self.steps:
            kernel(*args)
        return self.logits
