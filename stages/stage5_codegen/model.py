'''Stage 5, codegen: Python source for the whole forward pass, generated from the architecture
description, with every shape, stride, padding and epsilon a literal constant.

Stage 4's kernels took their shapes as run-time values; the compiler could not know that a loop runs
exactly 64 times, or that a padding is 0. Here the kernels below are templates: `plan` walks stage 4's
plan and, for each distinct layer shape, renders one kernel with those numbers filled in, and the forward
pass becomes one line per step, calling them in order. The bookkeeping is common/planner.py's Planner: it
keeps each kernel's source, rendered once per name (a template's fields and the constants given must
match, or rendering fails), and the steps; the Plan it returns is what the model, the tests and the
pictures read. `Model` writes the source as readable files to a cache folder outside the repository, a
module per kernel and one for the forward pass that imports them (`model.source_path`; `make stage5
source` prints it), imports them, and numba compiles each kernel as it is imported (each has an explicit
signature); numba's on-disk cache (cache=True) lets a second run skip compilation. A file is generated
again when its source or this generator changes, since its name holds a hash of both (common/codegen.py);
the weights, transposed once, are kept beside it (common/prepared.py). layer1_0_conv2.py, beside this
file, is one kernel as the generator writes it.

The buffers, the weight pool and the loops inside the kernels are stage 4's.
'''

import time
from pathlib import Path

import numpy as np

from common.architecture import Bottleneck, Conv, ResNet50, resnet50
from common.model import Parts
from common.paths import WEIGHTS_DIR
from common.planner import Plan, Planner, compiled, rotate, write
from common.prepared import prepared_pool
from common.weights import load_manifest, load_tensors

NUM_BUFFERS = 4  # a bottleneck needs its input, two intermediates and its output (or shortcut) at once

# What every generated kernel module starts with, after the docstring common.codegen.write_modules gives it.
PRELUDE = '''import math

import numpy as np
from numba import njit

HWC = "float32[:, :, ::1]"
OHWI = "float32[:, :, :, ::1]"
VECTOR = "float32[::1]"
MATRIX = "float32[:, ::1]"
'''

CONV = '''

@njit(f"void({{HWC}}, {{OHWI}}, {{HWC}})", fastmath=True, cache=True)
def {name}(x, weight, out):
    for co in range({out_channels}):
        for ho in range({out_size}):
            for wo in range({out_size}):
                acc = np.float32(0.0)
                for kh in range({kernel}):
                    hi = ho * {stride} - {padding} + kh
                    if hi < 0 or hi >= {in_size}:
                        continue
                    for kw in range({kernel}):
                        wi = wo * {stride} - {padding} + kw
                        if wi < 0 or wi >= {in_size}:
                            continue
                        for ci in range({in_channels}):
                            acc += x[hi, wi, ci] * weight[co, kh, kw, ci]
                out[ho, wo, co] = acc
'''

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


BN_EPS = "bn_eps"  # the pool's entry for the batch norms' epsilon, from the weights' manifest


def load_pool(manifest, weights_dir):
    """Stage 3's pool, and the batch norms' epsilon, which their kernels take as a constant."""
    return load_tensors(manifest, weights_dir) | {BN_EPS: np.array(manifest["bn_eps"])}


def plan(arch: ResNet50, pool: dict) -> Plan:
    """Stage 4's plan, one kernel call per step, each kernel rendered for its layer shape."""
    p = Planner()
    largest = max(c.out_size**2 * c.out_channels for c in arch.convs)
    buffers = [np.empty(largest, np.float32) for _ in range(NUM_BUFFERS)]  # flat, viewed as HWC
    image = np.empty((arch.stem.in_size, arch.stem.in_size, arch.stem.in_channels), np.float32)  # HWC
    features = np.empty(arch.fc.in_features, np.float32)
    logits = np.empty(arch.fc.out_features, np.float32)

    def conv_bn(x, conv: Conv, out_buffer, with_relu: bool):
        out = p.view(out_buffer, conv.out_size, conv.out_channels)
        shape = dict(size=conv.out_size, channels=conv.out_channels)
        p.emit(CONV, f"conv_{conv.in_size}x{conv.in_channels}_{conv.out_size}x{conv.out_channels}"
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
    mp = arch.pool
    pooled = p.view(buffers[1], mp.out_size, mp.channels)
    p.emit(MAX_POOL, f"max_pool_{mp.in_size}x{mp.channels}", (x, pooled), in_size=mp.in_size,
           out_size=mp.out_size, channels=mp.channels, kernel=mp.kernel, stride=mp.stride, padding=mp.padding)
    x = rotate(arch, pooled, buffers, bottleneck)
    last = arch.blocks[-1].conv3
    p.emit(GLOBAL_AVG_POOL, f"global_avg_pool_{last.out_size}x{last.out_channels}", (x, features),
           size=last.out_size, channels=last.out_channels, positions=last.out_size**2)
    fc = arch.fc
    p.emit(FULLY_CONNECTED, f"fully_connected_{fc.in_features}_{fc.out_features}",
           (features, pool["fc.weight"], pool["fc.bias"], logits), in_features=fc.in_features,
           out_features=fc.out_features)
    return p.plan(image, logits)


PARTS = Parts(Path(__file__), PRELUDE, load_pool, plan)  # what Model below is built from (common/model.py)


class Model:
    """ResNet-50 built from common.architecture; weights pooled and the forward pass planned when it is built, its
    source generated and compiled, one specialized kernel per distinct layer shape."""

    def __init__(self, weights_dir=WEIGHTS_DIR):
        self.manifest = load_manifest(weights_dir)
        self.arch = resnet50(self.manifest["variant"])
        start = time.perf_counter()
        # Computed once, then mapped from the cache (common/prepared.py).
        pool = prepared_pool(lambda: load_pool(self.manifest, weights_dir), self.manifest, weights_dir, Path(__file__))
        self.timings = {"load weights": time.perf_counter() - start}  # set-up costs in seconds
        start = time.perf_counter()
        self.plan = plan(self.arch, pool)
        self.source_path = write(self.plan, Path(__file__), PRELUDE, self.manifest["variant"])
        self.timings["codegen"] = time.perf_counter() - start
        self.kernels, how, seconds = compiled(self.plan, self.source_path)  # compiled, or loaded from the disk cache
        self.timings[how] = seconds
        self.arrays = self.plan.arrays  # a[i] of the generated forward(a)

    def forward(self, image):
        """image: HWC float32 (224, 224, 3) -> logits (1000,). The returned array is the model's own
        logits buffer: the next forward() overwrites it."""
        self.plan.image[...] = image
        self.kernels.forward(self.arrays)
        return self.plan.logits
