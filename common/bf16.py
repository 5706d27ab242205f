"""Stage 14's bfloat16 kernels, packing and plan, for stage 15: stages/stage14_bf16/model.py writes them out and
explains them. Stage 15 keeps them for the fc layer and, on a CPU without AMX, for every conv; its AMX conv kernel
shares TILE_POSITION and OUTPUT_LOOP with CONV, which are stage 14's conv kernel in three parts.
"""

import numpy as np

from common.architecture import Conv, ResNet50
from common.intrinsics import LANES, PAIR, bf16_bits
from common.kernels import NUM_BUFFERS
from common.planner import Plan, Planner, bottleneck, rotate
from common.tiles import TILES, Choice, label, shape_name
from common.weights import fold_batch_norm

INT16_MIN = -(2**15)  # the max pool's start: the smallest bfloat16 bits, as int16
NON_NEGATIVE = 0x7FFFFFFF  # a mask that keeps every tile number as it is and clears the sign bit

# Where a tile of output is, from its number: the same in both conv templates.
TILE_POSITION = '''\
        # A negative index counts from the end in numba (a[-1]), tested at every access unless LLVM can prove the
        # index is not negative; only then does it see a row's bytes as neighbours and load and store them as
        # vectors. A tile number is never negative, and clearing its sign bit proves it (NON_NEGATIVE).
        number = tile & {non_negative}
        if {pixels_first}:
            group, position = number % {groups}, number // {groups}
        else:
            group, position = number // {positions}, number % {positions}
        ho = position // {column_tiles}
        wo0 = (position % {column_tiles}) * {rows}
'''

# From the sums to the stored bfloat16s: the same in both conv templates.
OUTPUT_LOOP = '''\
        acc = numba.carray(sums, ({rows}, {block}))
        for r in range({rows}):
            for c in range({block}):
                acc[r, c] += bias[group * {block} + c]
        # The tests are outside the tile loops: a branch inside them would stop the vectorizer.
        if {add_residual}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] += from_bf16(residual[ho, wo0 + r, group * {block} + c])
        if {relu}:
            for r in range({rows}):
                for c in range({block}):
                    acc[r, c] = max(acc[r, c], np.float32(0.0))
        for r in range({rows}):
            for c in range({block}):
                out[{out_pad} + ho, {out_pad} + wo0 + r, group * {block} + c] = to_bf16(acc[r, c])
'''

# Stage 14's conv kernel up to its sums: the tile's position and its dot products. CONV adds the output loop.
CONV_SUMS = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, residual, out):
    """x: HWC bfloat16 bits, border {padding} of zeros; weight: bfloat16 int32 pairs, [group][kh][kw][ci / 2][block]
    flattened; bias: float32; out: HWC bfloat16 bits, border {out_pad} left alone."""
    wide_vectors()
    pairs = x.view(np.int32)  # [h][w][ci / 2]: the bfloat16s of 2 neighbouring channels in one int32
    # prange gives each thread one contiguous range of tile numbers. Numbered group-major, a thread's
    # tiles share one group's weights; numbered pixel-major, a thread keeps to its part of the image,
    # the part it wrote in the layer before, still in its own core's L2 cache.
    for tile in prange({groups} * {positions}):
        wide_vectors()
''' + TILE_POSITION + '''        sums = stack_floats({sums})  # [rows][block]
        for i in range({sums}):
            sums[i] = 0.0
        for kh in range({kernel}):
            for kw in range({kernel}):
                for p in range({pairs}):
                    at = (((group * {kernel} + kh) * {kernel} + kw) * {pairs} + p) * {block}
                    for r in range({rows}):
                        pair = pairs[ho * {stride} + kh, (wo0 + r) * {stride} + kw, p]
                        for v in range(0, {block}, {lanes}):
                            dot_pairs(sums, r * {block} + v, pair, weight, at + v)
'''
CONV = CONV_SUMS + OUTPUT_LOOP

MAX_POOL = '''

@njit(f"void({{BF16}}, {{BF16}})", fastmath=True, cache=True)
def {name}(x, out):
    """On the bits as int16: a bfloat16 that is not negative orders as its bits do, and a ReLU's -0.0 (0x8000) is
    the smallest int16, where it would be the largest uint16."""
    bits, maxima = x.view(np.int16), out.view(np.int16)
    maxima[:] = {int16_min}
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
                        maxima[ho, wo, c] = max(maxima[ho, wo, c], bits[hi, wi, c])
'''

GLOBAL_AVG_POOL = '''

@njit(f"void({{BF16}}, {{VALUES}})", fastmath=True, cache=True)
def {name}(x, out):
    """The mean of x per channel, summed in float32, rounded to bfloat16: the features."""
    for c in range({channels}):
        total = np.float32(0.0)
        for h in range({size}):
            for w in range({size}):
                total += from_bf16(x[h, w, c])
        out[c] = to_bf16(total * np.float32(1 / {positions}))
'''

INPUT_BF16 = '''

@njit(f"void({{HWC}}, {{BF16}})", fastmath=True, cache=True)
def {name}(image, out):
    """image: HWC float32 -> its bfloat16 bits inside out's border of {padding} zeros: HWC uint16."""
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[{padding} + h, {padding} + w, c] = to_bf16(image[h, w, c])
'''

FULLY_CONNECTED = '''

@njit(fastmath=True, cache=True, parallel=True, boundscheck=False)
def {name}(x, weight, bias, out):
    """x: the features' bfloat16 bits; weight: bfloat16 int32 pairs, [group][in / 2][LANES] flattened, LANES outputs
    a group; out: float32 logits, sums + bias. The fc layer is a 1x1 conv of one pixel."""
    wide_vectors()
    pairs = x.view(np.int32)
    for group in prange({groups}):
        wide_vectors()
        sums = stack_floats({lanes})
        for i in range({lanes}):
            sums[i] = 0.0
        for p in range({pairs}):
            dot_pairs(sums, 0, pairs[p], weight, (group * {pairs} + p) * {lanes})
        for i in range({lanes}):
            out[group * {lanes} + i] = sums[i] + bias[group * {lanes} + i]
'''


def candidates(conv: Conv, tiles=TILES) -> list[Choice]:
    """The tiles (of this CPU's register_tiles, by default) the tuning times for a conv's shape, stage 11's first:
    those whose rows split a row of output pixels. The tile order stays stage 11's: tuned too, it never beat its
    choice (stage 12's README)."""
    return [Choice(rows, block) for rows, block in tiles
            if conv.out_size % rows == 0 and conv.out_channels % block == 0]


def pairs(channels: int) -> int:
    """int32 pairs that hold `channels` bfloat16s: the stem's 3 input channels take two, the 4th a zero weight."""
    return -(-channels // PAIR)


def pack(folded: np.ndarray, choice: Choice) -> np.ndarray:
    """An OIHW weight, rounded to bfloat16, packed as the choice's conv kernel reads it: [group][kh][kw][ci / 2]
    [block][2] bfloat16s, as one flat int32 array."""
    out, channels, kh, kw = folded.shape
    padded = np.zeros((out, pairs(channels) * PAIR, kh, kw), np.uint16)
    padded[:, :channels] = bf16_bits(folded)
    groups, block = out // choice.block, choice.block
    packed = padded.reshape(groups, block, pairs(channels), PAIR, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    return np.ascontiguousarray(packed).view(np.int32).reshape(-1)


def fold(conv: Conv, tensors, eps, choice: Choice):
    """A conv's weight pairs (its batch norm folded in, in float64, then each weight rounded to bfloat16, packed for
    the choice) and its bias."""
    folded, bias = fold_batch_norm(conv, tensors, eps)
    return pack(folded, choice), bias.astype(np.float32)


def fold_fc(weight, bias):
    """fc's (out, in) weight and bias -> (pairs, bias) as conv's fold makes them, the outputs in groups of LANES
    ([group][in / 2][LANES][2] bfloat16s), padded with zero rows to a whole group (1000 -> 1008 with 16 lanes)."""
    out_features = -(-weight.shape[0] // LANES) * LANES
    values = np.zeros((out_features, weight.shape[1]), np.uint16)
    values[: weight.shape[0]] = bf16_bits(weight)
    packed = values.reshape(out_features // LANES, LANES, -1, PAIR).transpose(0, 2, 1, 3)
    padded_bias = np.zeros(out_features, np.float32)
    padded_bias[: bias.size] = bias
    return np.ascontiguousarray(packed).view(np.int32).reshape(-1), padded_bias


def bf16_conv(p: Planner, pool: dict, x, conv: Conv, out, residual, relu: bool, out_border=0, *, choices):
    """Stage 14's conv step: one conv with its batch norm folded in, then + residual (if not None), then ReLU (if
    relu), with the register tile chosen for its shape. x has a border of the conv's padding, out gets one of
    out_border. Without a residual, `out` stands in for the argument the kernel does not read."""
    weight, bias = pool[conv.name]
    choice = choices[shape_name(conv)]
    add_residual = residual is not None
    epilogue = ("_add" if add_residual else "") + ("_relu" if relu else "")
    name = f"conv_{shape_name(conv)}{epilogue}_{label(choice)}"
    p.emit(CONV, name, (x, weight, bias, residual if add_residual else out, out), conv, tiled=True,
           pairs=x.shape[2] // PAIR, lanes=LANES, non_negative=NON_NEGATIVE,
           groups=conv.out_channels // choice.block, positions=conv.out_size * (conv.out_size // choice.rows),
           column_tiles=conv.out_size // choice.rows, kernel=conv.kernel, stride=conv.stride,
           padding=conv.padding, add_residual=add_residual, relu=relu, out_pad=out_border, rows=choice.rows,
           block=choice.block, sums=choice.rows * choice.block,
           pixels_first=x.nbytes > weight.nbytes)  # keep the bigger of the two in each core's cache
    return out


def bf16_plan(arch: ResNet50, pool: dict, conv_step, place=lambda array: array) -> Plan:
    """Stage 14's plan, `conv_step(p, pool, x, conv, out, residual, relu, out_border)` its conv step: the photo
    rounded first, every activation stored as bfloat16 bits, in buffers that place(array) puts where the stage
    wants them."""
    p = Planner(zeros=lambda shape: place(np.zeros(shape, np.uint16)))
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [place(np.empty(largest, np.uint16)) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC bfloat16s
    stem = arch.stem
    image = np.empty((stem.in_size, stem.in_size, stem.in_channels), np.float32)  # HWC
    bf16s = p.zeros((stem.in_size + 2 * stem.padding, stem.in_size + 2 * stem.padding,
                     pairs(stem.in_channels) * PAIR))  # HWC bfloat16s, a border of zeros
    features = np.empty(arch.fc.in_features, np.uint16)
    logits = np.empty(-(-arch.fc.out_features // LANES) * LANES, np.float32)  # whole groups of LANES

    def conv(x, c: Conv, out, residual, relu: bool, out_border=0):
        return conv_step(p, pool, x, c, out, residual, relu, out_border)

    p.emit(INPUT_BF16, f"input_bf16_{stem.in_size}x{stem.in_channels}", (image, bf16s), size=stem.in_size,
           channels=stem.in_channels, padding=stem.padding)
    x = conv(bf16s, stem, p.view(buffers[0], stem.out_size, stem.out_channels), None, relu=True)
    mp = arch.pool
    pooled = p.view(buffers[1], mp.out_size, mp.channels)
    p.emit(MAX_POOL, f"max_pool_{mp.in_size}x{mp.channels}", (x, pooled), in_size=mp.in_size,
           out_size=mp.out_size, channels=mp.channels, kernel=mp.kernel, stride=mp.stride, padding=mp.padding,
           int16_min=INT16_MIN)
    x = rotate(arch, pooled, buffers, lambda x, block, free: bottleneck(p, conv, x, block, free))
    last = arch.blocks[-1].conv3
    p.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, features),
           size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
    weight, bias = pool["fc"]
    p.emit(FULLY_CONNECTED, f"fully_connected_{arch.fc.in_features}_{arch.fc.out_features}",
           (features, weight, bias, logits), groups=logits.size // LANES, pairs=arch.fc.in_features // PAIR,
           lanes=LANES)
    return p.plan(image, logits[: arch.fc.out_features])


def stand_in(conv: Conv, choice: Choice):
    """(weight pairs, bias) as fold packs them for `choice`, written (pages never written all read one page of
    zeros): every weight 1 / the sums' length, so that the values keep their size through the network."""
    size = conv.kernel * conv.kernel * pairs(conv.in_channels) * conv.out_channels
    weight = bf16_bits(np.full(PAIR, 1 / (size // conv.out_channels * PAIR))).view(np.int32)
    return np.full(size, weight[0], np.int32), np.zeros(conv.out_channels, np.float32)


def stand_in_fc(arch: ResNet50):
    return fold_fc(np.ones((arch.fc.out_features, arch.fc.in_features)), np.ones(arch.fc.out_features))
