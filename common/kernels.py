"""The float32 kernels that several stages share, taught where they are introduced and imported from here after.

- Stage 5 (codegen) writes out the templates of every op but the conv: batch norm, ReLU, the residual add, max
  pool, global average pool and the fully connected layer; stage 6 plans the network as stage 5 does
  (`unfused_pool`, `unfused_plan` with its own conv), and stages 7-12 keep stage 5's pools and fc (`max_pool`, `head`).
- Stage 9 (tile threads) writes out the register-tiled conv kernel whose tiles are shared out over the threads;
  stages 10-12 run it for every conv that is not Winograd's (`TILED_CONV`).
"""

import numpy as np

from common.architecture import Bottleneck, Conv, ResNet50
from common.planner import Plan, Planner, rotate
from common.weights import load_tensors

NUM_BUFFERS = 4  # a bottleneck needs its input, two intermediates and its output (or shortcut) at once
BN_EPS = "bn_eps"  # stage 5's pool entry for the batch norms' epsilon, from the weights' manifest


def unfused_pool(manifest, weights_dir):
    """Stage 5's pool: stage 3's, and the batch norms' epsilon, which their kernels take as a constant."""
    return load_tensors(manifest, weights_dir) | {BN_EPS: np.array(manifest["bn_eps"])}

BATCH_NORM = '''

@njit(f"void({{HWC}}, {{VECTOR}}, {{VECTOR}}, {{VECTOR}}, {{VECTOR}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, gamma, beta, mean, var, out):
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[h, w, c] = gamma[c] * (x[h, w, c] - mean[c]) / math.sqrt(var[c] + np.float32({eps!r})) + beta[c]
'''

RELU = '''

@njit(f"void({{HWC}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, out):
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[h, w, c] = max(x[h, w, c], np.float32(0.0))
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

ADD = '''

@njit(f"void({{HWC}}, {{HWC}}, {{HWC}})", fastmath=True, cache=True)
def {name}(a, b, out):
    for h in range({size}):
        for w in range({size}):
            for c in range({channels}):
                out[h, w, c] = a[h, w, c] + b[h, w, c]
'''


TILED_CONV = '''

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



def unfused_plan(arch: ResNet50, pool: dict, conv_template: str) -> Plan:
    """Stage 5's plan, with the conv kernel rendered from conv_template: stage 4's plan, one kernel call per step,
    each kernel rendered for its layer shape."""
    p = Planner()
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
    image = np.empty((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32)  # HWC

    def conv_bn(x, conv: Conv, out_buffer, with_relu: bool):
        out = p.view(out_buffer, conv.out_size, conv.out_channels)
        shape = dict(size=conv.out_size, channels=conv.out_channels)
        p.emit(conv_template, f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
                              f"_k{conv.kernel}s{conv.stride}", (x, pool[f"{conv.name}.weight"], out), conv,
               in_size=conv.in_size, in_channels=conv.in_channels, out_size=conv.out_size,
               out_channels=conv.out_channels, kernel=conv.kernel, stride=conv.stride, padding=conv.padding)
        p.emit(BATCH_NORM, f"batch_norm_{conv.out_size}x{conv.out_channels}",
               (out, pool[f"{conv.bn}.weight"], pool[f"{conv.bn}.bias"], pool[f"{conv.bn}.running_mean"],
                pool[f"{conv.bn}.running_var"], out), conv, eps=float(pool[BN_EPS]), **shape)
        if with_relu:
            p.emit(RELU, f"relu_{conv.out_size}x{conv.out_channels}", (out, out), conv, **shape)
        return out

    def bottleneck(x, block: Bottleneck, free):
        """Plan one block reading x; `free` are the three buffers x is not in. Returns the output view."""
        b1, b2, b3 = free
        p.comment(block.name)
        out = conv_bn(x, block.conv1, b1, with_relu=True)
        out = conv_bn(out, block.conv2, b2, with_relu=True)
        out = conv_bn(out, block.conv3, b3, with_relu=False)
        shortcut = conv_bn(x, block.downsample, b1, with_relu=False) if block.downsample else x
        shape = dict(size=block.conv3.out_size, channels=block.conv3.out_channels)
        p.emit(ADD, "add_{size}x{channels}".format(**shape), (out, shortcut, out), **shape)
        p.emit(RELU, "relu_{size}x{channels}".format(**shape), (out, out), **shape)
        return out

    x = conv_bn(image, arch.stem, buffers[0], with_relu=True)
    x = rotate(arch, max_pool(p, arch, x, buffers[1]), buffers, bottleneck)
    return p.plan(image, head(p, arch, x, (pool["fc.weight"], pool["fc.bias"])))


def max_pool(p: Planner, arch: ResNet50, x: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """Stage 5's max pool of the stem's output x, into an HWC view of buffer."""
    mp = arch.pool
    pooled = p.view(buffer, mp.out_size, mp.channels)
    p.emit(MAX_POOL, f"max_pool_{mp.in_size}x{mp.channels}", (x, pooled), in_size=mp.in_size,
           out_size=mp.out_size, channels=mp.channels, kernel=mp.kernel, stride=mp.stride, padding=mp.padding)
    return pooled


def head(p: Planner, arch: ResNet50, x: np.ndarray, fc: tuple) -> np.ndarray:
    """Stage 5's global average pool of the last block's output x and its fully connected layer (fc: weight,
    bias): the logits."""
    features = np.empty(arch.fc.in_features, np.float32)
    logits = np.empty(arch.fc.out_features, np.float32)
    last = arch.blocks[-1].conv3
    p.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, features),
           size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
    p.emit(FULLY_CONNECTED, f"fully_connected_{arch.fc.in_features}_{arch.fc.out_features}",
           (features, *fc, logits), in_features=arch.fc.in_features, out_features=arch.fc.out_features)
    return logits
